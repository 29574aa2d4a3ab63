"""Durable appends: acknowledged updates/s through our server against raw asyncpg INSERTs of
the same rows into a same-shaped table, in the same database, in the same run.

Our server acknowledges a push only after the transaction holding it has committed. P
pushers (each its own signed-in device and socket) push one update at a time and wait for
the ack before the next: closed loop, P in flight. The peers are P asyncpg tasks over a pool
as large as the server's (20 connections), writing the same rows (same sizes, same columns)
into ``raw_updates``, a copy of ``doc_updates`` (``CREATE TABLE ... (LIKE doc_updates
INCLUDING ALL)``: same columns, primary key and unique constraint):

- raw INSERT: one autocommitted INSERT per row, the floor for "one durable row";
- raw append transaction: what an append must do at least: lock the document row, insert,
  raise its head, commit (BEGIN; SELECT ... FOR UPDATE; INSERT; UPDATE; COMMIT).

Scenarios: P pushers on P documents (no contention), and P pushers on one document (every
append contends for one row lock; our server's group commit shares transactions there).

    .venv/bin/python bench/durable_append.py                  # ~1 min
    .venv/bin/python bench/durable_append.py --pushers 64 --seconds 15 --size 400
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from common import (
    Stack,
    SyncClient,
    auth,
    command_line,
    cpu_delta,
    install_guards,
    machine,
    new_doc,
    pg_backends_cpu,
    push_frame,
    ratio,
    sign_in,
    summary_ms,
    table,
    use_uvloop,
    write_result,
)

POOL = 20  # the server's SQLAlchemy pool: pool_size 10 + max_overflow 10 (server/db/engine.py)


async def closed_loop(
    workers: list[Callable[[], Awaitable[None]]], seconds: float, warmup: float
) -> dict[str, Any]:
    """Run each worker's one-operation callable back to back; ops/s and latency measured
    after the warm-up."""
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    counted = total = 0

    async def loop(op: Callable[[], Awaitable[None]]) -> None:
        nonlocal counted, total
        while (t := time.perf_counter()) < end:
            await op()
            total += 1
            done = time.perf_counter()
            if t >= measure_from and done <= end:
                counted += 1
                latencies.append(done - t)

    await asyncio.gather(*(loop(w) for w in workers))
    return {"ops_per_s": counted / seconds, "latency": summary_ms(latencies), "total_ops": total}


class Ours:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack, self.args = stack, args
        self.sockets: list[SyncClient] = []
        self.tokens: list[str] = []
        self.payload = os.urandom(args.size)

    async def setup(self) -> None:
        self.server = self.stack.server("append")
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            devices = await sign_in(http, self.stack.mail, "pusher@bench.test", self.args.pushers)
            self.tokens = [d.token for d in devices]
            self.docs = [await new_doc(http, d.token) for d in devices]
        self.sockets = [await SyncClient.open(self.server.ws_url, t) for t in self.tokens]

    def ws_pushers(self, docs: list[str]) -> list[Callable[[], Awaitable[None]]]:
        payload = self.payload

        def make(sock: SyncClient, doc: str) -> Callable[[], Awaitable[None]]:
            state = {"ref": 0}
            waiter: list[asyncio.Future[None]] = []

            def acked(_frame: Any) -> None:
                if waiter and not waiter[0].done():
                    waiter[0].set_result(None)

            sock.on_ack = acked

            async def op() -> None:
                state["ref"] += 1
                fut = asyncio.get_running_loop().create_future()
                waiter[:] = [fut]
                cuid = f"{uuid.uuid4().hex}"
                await sock.ws.send(push_frame(doc, state["ref"], cuid, payload))
                try:
                    await asyncio.wait_for(fut, 30)
                except TimeoutError:
                    raise RuntimeError(f"no ack in 30 s: {sock.errors[-3:]}") from None

            return op

        return [make(s, docs[n % len(docs)]) for n, s in enumerate(self.sockets)]

    def rest_pushers(
        self, http: httpx.AsyncClient, docs: list[str]
    ) -> list[Callable[[], Awaitable[None]]]:
        b64 = base64.b64encode(self.payload).decode()

        def make(token: str, doc: str) -> Callable[[], Awaitable[None]]:
            headers = auth(token)

            async def op() -> None:
                body = {
                    "updates": [
                        {"client_update_id": uuid.uuid4().hex, "key_version": 1, "ciphertext": b64}
                    ]
                }
                r = await http.post(f"/v1/docs/{doc}/updates", json=body, headers=headers)
                r.raise_for_status()

            return op

        return [make(t, docs[n % len(docs)]) for n, t in enumerate(self.tokens)]

    async def close(self) -> None:
        for s in self.sockets:
            await s.close()


class Raw:
    """asyncpg straight to a same-shaped table in the same database."""

    def __init__(self, db_url: str, args: argparse.Namespace) -> None:
        self.db_url, self.args = db_url, args
        self.payload = os.urandom(args.size)
        self.device = uuid.uuid4()
        self.heads: dict[uuid.UUID, int] = {}

    async def setup(self) -> None:
        self.pool = await asyncpg.create_pool(self.db_url, min_size=POOL, max_size=POOL)
        async with self.pool.acquire() as conn:
            await conn.execute("CREATE TABLE raw_updates (LIKE doc_updates INCLUDING ALL)")
            await conn.execute("CREATE TABLE raw_documents (LIKE documents INCLUDING ALL)")
            self.owner = await conn.fetchval("SELECT owner_user_id FROM documents LIMIT 1")

    async def new_docs(self, n: int) -> list[uuid.UUID]:
        """Fresh documents for one scenario, so that scenarios do not share seqs."""
        docs = [uuid.uuid4() for _ in range(n)]
        await self.pool.executemany(
            "INSERT INTO raw_documents (id, owner_user_id, kind, created_at, head_seq, "
            "bytes_total, bytes_since_snapshot, updates_since_snapshot, snapshot_seq) "
            "VALUES ($1, $2, 'canvas', now(), 0, 0, 0, 0, 0)",
            [(d, self.owner) for d in docs],
        )
        self.heads.update(dict.fromkeys(docs, 0))
        return docs

    async def inserters(self, ndocs: int) -> list[Callable[[], Awaitable[None]]]:
        docs = await self.new_docs(ndocs)
        sql = (
            "INSERT INTO raw_updates (doc_id, seq, client_update_id, device_id, key_version, "
            "ciphertext, created_at) VALUES ($1, $2, $3, $4, 1, $5, now())"
        )

        def make(doc: uuid.UUID) -> Callable[[], Awaitable[None]]:
            async def op() -> None:
                self.heads[doc] += 1  # one process assigns seqs: no lock needed
                await self.pool.execute(
                    sql, doc, self.heads[doc], uuid.uuid4().hex, self.device, self.payload
                )

            return op

        return [make(docs[n % ndocs]) for n in range(self.args.pushers)]

    async def appenders(self, ndocs: int) -> list[Callable[[], Awaitable[None]]]:
        docs = await self.new_docs(ndocs)
        lock = "SELECT head_seq FROM raw_documents WHERE id = $1 FOR UPDATE"
        insert = (
            "INSERT INTO raw_updates (doc_id, seq, client_update_id, device_id, key_version, "
            "ciphertext, created_at) VALUES ($1, $2, $3, $4, 1, $5, now())"
        )
        raise_head = (
            "UPDATE raw_documents SET head_seq = $2, bytes_total = bytes_total + $3 WHERE id = $1"
        )

        def make(doc: uuid.UUID) -> Callable[[], Awaitable[None]]:
            async def op() -> None:
                async with self.pool.acquire() as conn, conn.transaction():
                    head = await conn.fetchval(lock, doc) + 1
                    await conn.execute(
                        insert, doc, head, uuid.uuid4().hex, self.device, self.payload
                    )
                    await conn.execute(raise_head, doc, head, len(self.payload))

            return op

        return [make(docs[n % ndocs]) for n in range(self.args.pushers)]

    async def close(self) -> None:
        await self.pool.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    async with Stack("append") as stack:
        ours = Ours(stack, args)
        await ours.setup()
        assert ours.server.proc is not None
        raw = Raw(stack.db_url, args)
        await raw.setup()

        async def measure(
            name: str, kind: str, docs: int, workers: list[Callable[[], Awaitable[None]]]
        ) -> dict[str, Any]:
            assert ours.server.proc is not None
            cpu0, srv0, pg0 = (
                os.times(),
                ours.server.proc.cpu_seconds(),
                pg_backends_cpu(stack.db_name),
            )
            t0 = time.perf_counter()
            got = await closed_loop(workers, args.seconds, args.warmup)
            wall = time.perf_counter() - t0
            cpu1, srv1 = os.times(), ours.server.proc.cpu_seconds()
            pg = cpu_delta(pg0, pg_backends_cpu(stack.db_name))
            ops = max(1, got["total_ops"])
            got |= {
                "name": name,
                "kind": kind,
                "docs": docs,
                "cpu_client": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
                "cpu_server": (srv1 - srv0) / wall,
                "cpu_postgres": pg / wall,
                "server_cpu_ms_per_row": (srv1 - srv0) / ops * 1000,
                "postgres_cpu_ms_per_row": pg / ops * 1000,
            }
            lat = got["latency"]
            print(
                f"  {name:<44} {docs:>3} docs  {got['ops_per_s']:>8.0f} rows/s"
                f"  p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms"
                f"  cpu client {got['cpu_client']:.0%} server {got['cpu_server']:.0%}"
                f" postgres {got['cpu_postgres']:.0%}"
                f"  cpu/row server {got['server_cpu_ms_per_row']:.2f} ms"
                f" postgres {got['postgres_cpu_ms_per_row']:.2f} ms",
                flush=True,
            )
            rows.append(got)
            return got

        p = args.pushers
        for ndocs in (p, 1):
            await measure(
                "session-sync, websocket msgpack push",
                "ours",
                ndocs,
                ours.ws_pushers(ours.docs[:ndocs]),
            )
            await measure(
                "raw asyncpg INSERT (autocommit)", "raw-insert", ndocs, await raw.inserters(ndocs)
            )
            await measure(
                "raw asyncpg append txn (lock, insert, head)",
                "raw-append",
                ndocs,
                await raw.appenders(ndocs),
            )
        if not args.no_rest:
            async with httpx.AsyncClient(
                base_url=ours.server.url,
                timeout=30,
                limits=httpx.Limits(max_connections=p, max_keepalive_connections=p),
            ) as http:
                await measure(
                    "session-sync, REST JSON POST /updates",
                    "ours-rest",
                    p,
                    ours.rest_pushers(http, ours.docs),
                )
        # Every acknowledged row is in the log: count them.
        async with raw.pool.acquire() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM doc_updates")
        await raw.close()
        await ours.close()
    return {"rows": rows, "stored_by_ours": stored}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pushers", type=int, default=32, help="concurrent pushers (devices)")
    ap.add_argument("--size", type=int, default=100, help="bytes of ciphertext per update")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--no-rest", action="store_true", help="skip the REST scenario")
    ap.add_argument("--budget", type=float, default=170, help="seconds before it stops itself")
    args = ap.parse_args()
    install_guards(args.budget)
    info = machine()
    use_uvloop()
    result = asyncio.run(run(args))
    rows = result["rows"]
    out = []
    for r in rows:
        lat = r["latency"]
        cpu = round(r["server_cpu_ms_per_row"], 2) if r["kind"].startswith("ours") else "-"
        out.append([r["name"], r["docs"], round(r["ops_per_s"]), lat["p50_ms"], lat["p99_ms"], cpu])
    print()
    print(
        table(["what", "documents", "durable rows/s", "p50 ms", "p99 ms", "server CPU ms/row"], out)
    )
    summary: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": info}
    summary |= result
    ratios = {}
    for docs in {r["docs"] for r in rows}:
        by = {r["kind"]: r["ops_per_s"] for r in rows if r["docs"] == docs}
        if "ours" in by:
            ratios[f"{docs}_docs"] = {
                "ours_vs_raw_insert": ratio(by["ours"], by["raw-insert"]),
                "ours_vs_raw_append_txn": ratio(by["ours"], by["raw-append"]),
            }
    summary["ratios"] = ratios
    for k, v in sorted(ratios.items()):
        met = v["ours_vs_raw_insert"] >= 0.5
        print(
            f"{k}: ours / raw INSERT = {v['ours_vs_raw_insert']}x (target >= 0.5x: "
            f"{'MET' if met else 'NOT MET'}); ours / raw append txn = "
            f"{v['ours_vs_raw_append_txn']}x"
        )
    print("results:", write_result("durable_append", summary))


if __name__ == "__main__":
    main()
