"""Idle connections: resident memory of the server process per idle websocket, ours against
Hocuspocus (and, as a floor, a bare uvicorn websocket app with the same uvicorn settings as
our server), same run, same client.

For our server every socket is authenticated (``hello`` with an access token, ``welcome``
back) and then, in a second step, subscribed to a document (``subscribe``); for Hocuspocus
every socket is authenticated (Auth message) and synced to a document (sync step 1/2), which
is how its connections join a document; the bare app only accepts. Sockets then sit idle,
answering heartbeats. RSS is read from /proc/<pid>/status before and after.

One asyncio process (uvloop) opens all the client sockets; the file-descriptor limit of the
client and of every server is raised to the hard limit.

    .venv/bin/python bench/idle_connections.py              # 10,000 sockets, ~2 min
    .venv/bin/python bench/idle_connections.py --sockets 2000 --no-bare
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from common import (
    BENCH,
    HOST,
    WS_OPTIONS,
    Hocuspocus,
    Proc,
    Stack,
    SyncClient,
    command_line,
    free_port,
    install_guards,
    machine,
    new_doc,
    raise_fd_limit,
    sign_in,
    spawn,
    table,
    use_uvloop,
    wait_port,
    write_result,
)
from yjs_wire import HP_AUTH, HP_AUTH_OK, HP_SYNC, Y_STEP2, hp_auth, hp_parse, hp_sync_step1

MB = 1024 * 1024


async def open_all(
    n: int, opener: Callable[[int], Awaitable[Any]], concurrency: int, label: str
) -> tuple[list[Any], float]:
    sem = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * n
    done = 0
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal done
        async with sem:
            for attempt in range(3):
                try:
                    out[i] = await opener(i)
                    break
                except (OSError, TimeoutError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)
            done += 1
            if done % 2000 == 0:
                print(f"  {label}: {done:,} open ({time.perf_counter() - start:.1f} s)", flush=True)

    await asyncio.gather(*(one(i) for i in range(n)))
    return out, time.perf_counter() - start


async def settle(proc: Proc, seconds: float) -> int:
    """RSS after the process has been quiet for a moment (the peak of a few readings)."""
    await asyncio.sleep(seconds)
    return max([proc.rss_bytes() for _ in range(3)])


async def measure_ours(args: argparse.Namespace) -> dict[str, Any]:
    async with Stack("idle") as stack:
        server = stack.server("idle")
        assert server.proc is not None
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            devices = await sign_in(http, stack.mail, "idle@bench.test", args.devices)
            docs = [await new_doc(http, devices[0].token) for _ in range(args.docs)]
        # A few sockets first, so that lazy imports and first-use caches are paid for.
        warm = [await SyncClient.open(server.ws_url, devices[0].token) for _ in range(10)]
        for i, s in enumerate(warm):
            await s.subscribe(docs[i % len(docs)])
        before = await settle(server.proc, 1.0)
        socks, took = await open_all(
            args.sockets,
            lambda i: SyncClient.open(server.ws_url, devices[i % len(devices)].token),
            args.concurrency,
            "session-sync",
        )
        authed = await settle(server.proc, 2.0)
        result: dict[str, Any] = {
            "server": "session-sync",
            "sockets": args.sockets,
            "rss_before": before,
            "rss_authenticated": authed,
            "open_seconds": took,
        }
        print(f"  authenticated: {authed / MB:.0f} MiB RSS (before {before / MB:.0f} MB)")
        if not args.no_subscribe:
            start = time.perf_counter()
            sem = asyncio.Semaphore(args.concurrency)

            async def sub(i: int) -> None:
                async with sem:
                    await socks[i].subscribe(docs[i % len(docs)])

            await asyncio.gather(*(sub(i) for i in range(len(socks))))
            result["subscribe_seconds"] = time.perf_counter() - start
            result["rss_subscribed"] = await settle(server.proc, 2.0)
            print(f"  subscribed:    {result['rss_subscribed'] / MB:.0f} MiB RSS")
        if args.hold:
            await asyncio.sleep(args.hold)
            result["rss_after_hold"] = server.proc.rss_bytes()
        result["alive"] = sum(1 for s in socks if s.ws.state.name == "OPEN")
        await close_all([s.close for s in socks + warm])
        return result


class HPIdle:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, doc: str) -> HPIdle:
        from websockets.asyncio.client import connect

        ws: Any = await connect(url, **WS_OPTIONS)
        await ws.send(hp_auth(doc, "bench"))
        while True:
            kind, sub, _ = hp_parse(await asyncio.wait_for(ws.recv(), 30))
            if kind == HP_AUTH:
                if sub != HP_AUTH_OK:
                    raise RuntimeError("hocuspocus refused the token")
                break
        await ws.send(hp_sync_step1(doc))
        while True:
            kind, sub, _ = hp_parse(await asyncio.wait_for(ws.recv(), 30))
            if kind == HP_SYNC and sub == Y_STEP2:
                break
        sock = cls(ws)
        # websockets answers the server's pings itself while someone reads; keep reading.
        sock.task = asyncio.create_task(sock._drain())
        return sock

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            async for _ in self.ws:
                pass

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()


async def measure_peer(args: argparse.Namespace) -> dict[str, Any]:
    hp = Hocuspocus("idle-hocuspocus").start()
    try:
        assert hp.proc is not None
        warm = [await HPIdle.open(hp.ws_url, f"doc-{i % args.docs}") for i in range(10)]
        before = await settle(hp.proc, 1.0)
        socks, took = await open_all(
            args.sockets,
            lambda i: HPIdle.open(hp.ws_url, f"doc-{i % args.docs}"),
            args.concurrency,
            "hocuspocus",
        )
        after = await settle(hp.proc, 2.0)
        print(f"  authenticated and synced: {after / MB:.0f} MiB RSS (before {before / MB:.0f} MB)")
        result = {
            "server": "Hocuspocus",
            "sockets": args.sockets,
            "rss_before": before,
            "rss_subscribed": after,
            "open_seconds": took,
            "alive": sum(1 for s in socks if s.ws.state.name == "OPEN"),
        }
        await close_all([s.close for s in socks + warm])
        return result
    finally:
        hp.stop()


async def measure_bare(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    argv = [
        str(BENCH.parent / ".venv" / "bin" / "python"),
        str(BENCH / "tools" / "bare_ws_app.py"),
        str(port),
    ]
    proc = spawn("idle-bare-uvicorn", argv)
    try:
        wait_port(port, 20, proc)
        from websockets.asyncio.client import connect

        url = f"ws://{HOST}:{port}/"
        warm = [await connect(url, **WS_OPTIONS) for _ in range(10)]
        before = await settle(proc, 1.0)
        socks, took = await open_all(
            args.sockets, lambda _i: connect(url, **WS_OPTIONS), args.concurrency, "bare"
        )
        after = await settle(proc, 2.0)
        print(f"  accepted: {after / MB:.0f} MiB RSS (before {before / MB:.0f} MB)")
        result = {
            "server": "bare uvicorn websocket app",
            "sockets": args.sockets,
            "rss_before": before,
            "rss_accepted": after,
            "open_seconds": took,
        }
        await close_all([s.close for s in socks + warm])
        return result
    finally:
        proc.stop()


async def close_all(closers: list[Callable[[], Awaitable[Any]]]) -> None:
    sem = asyncio.Semaphore(500)

    async def one(c: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c(), 5)

    await asyncio.gather(*(one(c) for c in closers))
    gc.collect()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    print(f"session-sync: {args.sockets:,} sockets", flush=True)
    out.append(await measure_ours(args))
    print(f"Hocuspocus: {args.sockets:,} sockets", flush=True)
    out.append(await measure_peer(args))
    if not args.no_bare:
        print(f"bare uvicorn websocket app: {args.sockets:,} sockets", flush=True)
        out.append(await measure_bare(args))
    return out


def per_socket_kb(after: int, before: int, n: int) -> float:
    return round((after - before) / n / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=20, help="signed-in devices sharing them")
    ap.add_argument("--docs", type=int, default=100, help="documents the sockets subscribe to")
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    ap.add_argument("--no-subscribe", action="store_true", help="ours: authenticate only")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare uvicorn floor")
    ap.add_argument("--hold", type=float, default=0, help="seconds to keep them open at the end")
    ap.add_argument("--budget", type=float, default=170, help="seconds before it stops itself")
    args = ap.parse_args()
    install_guards(args.budget + args.hold)
    limit = raise_fd_limit()
    if limit < args.sockets + 500:
        raise SystemExit(f"the file-descriptor limit ({limit}) is too low for {args.sockets}")
    info = machine()
    use_uvloop()
    results = asyncio.run(run(args))
    rows = []
    phases = {
        "rss_accepted": "accepted only",
        "rss_authenticated": "authenticated (hello)",
        "rss_subscribed": "authenticated, in a document",
    }
    for r in results:
        n = r["sockets"]
        for key, phase in phases.items():
            if key in r:
                rows.append(
                    [
                        r["server"],
                        phase,
                        n,
                        round(r["rss_before"] / MB, 1),
                        round(r[key] / MB, 1),
                        per_socket_kb(r[key], r["rss_before"], n),
                    ]
                )
    print()
    print(
        table(
            ["server", "sockets", "count", "RSS before MiB", "RSS with them MiB", "KiB per socket"],
            rows,
        )
    )
    ours = results[0]
    worst = max(ours.get("rss_subscribed", 0), ours["rss_authenticated"])
    # For another --sockets, project linearly to 10,000.
    per = (worst - ours["rss_before"]) / ours["sockets"]
    at_10k = (ours["rss_before"] + per * 10_000) / MB
    print(
        f"\nsession-sync with {ours['sockets']:,} idle sockets: {worst / MB:.0f} MiB RSS; "
        f"at 10,000: {at_10k:.0f} MiB (target < 300 MiB: {'MET' if at_10k < 300 else 'NOT MET'})"
    )
    summary: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": info}
    summary["results"] = results
    print("results:", write_result("idle_connections", summary))


if __name__ == "__main__":
    main()
