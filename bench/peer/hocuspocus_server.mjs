// The peer of the benchmarks: a stock Hocuspocus server (in memory, so it persists nothing:
// an update is applied to the in-memory Y.Doc, acknowledged with a SyncStatus message and
// broadcast to every connection of the document). Given a Redis port, it runs with the
// stock Redis extension, as each of several Hocuspocus replicas does.
//
//   node bench/peer/hocuspocus_server.mjs [port] [redis-port]
//
// It prints one JSON line {"listening": port} once it accepts connections, and exits when
// its stdin closes (so it never outlives the benchmark that started it) or on SIGTERM.
import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const port = Number(process.argv[2] || 0)
const redisPort = Number(process.argv[3] || 0)
const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  stopOnSignals: true,
  extensions: redisPort ? [new Redis({ host: '127.0.0.1', port: redisPort })] : [],
})
await server.listen()
console.log(JSON.stringify({ listening: server.address.port, hocuspocus: '3.x', node: process.version, redis: redisPort || null }))

process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()
