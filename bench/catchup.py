"""Catch-up: a device N updates behind reaching the head, through our server against raw
asyncpg reading the same rows; then the same device after compaction (a snapshot up to the
head), when catching up from 0 is one snapshot and nothing else.

To fill the log quickly the benchmark writes the N rows straight into ``doc_updates`` with
asyncpg's COPY and sets the document's counters (``head_seq``, ``bytes_total``, ...) as the
server would have: what is measured is reading, not writing. The document is created, and
the snapshot written, through the API.

Paths timed (each --repeat times, the median is reported), all reaching the head from 0:
- REST JSON:     GET /v1/docs/{id}/updates?after=..&limit=5000 pages, ciphertext in base64
- REST msgpack:  the same with ``Accept: application/msgpack``
- REST compact:  the same in the compact form (arrays, 16-byte device ids; docs/spec/api.md)
- ..., prefetching: the next page (the answer's ``Link: rel="next"``) is asked for as soon as
                 this one's headers are in, and this one decoded meanwhile
- websocket:     a socket opened, signed in and subscribed from 0 over the msgpack
                 subprotocol (the server's backlog pages), until ``subscribed``
- raw asyncpg:   the same keyset pages of 5000 rows (seq, device_id, key_version, ciphertext)
The client decodes every page into typed objects (msgspec), as a real client must.

    .venv/bin/python bench/catchup.py                      # 50,000 updates, ~1 min
    .venv/bin/python bench/catchup.py --updates 259778     # the issue's document
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
from common import (
    ServerFrame,
    Stack,
    SyncClient,
    auth,
    command_line,
    install_guards,
    machine,
    new_doc,
    ratio,
    sign_in,
    table,
    use_uvloop,
    write_result,
)

from client_sdk.client import COMPACT, Page

PAGE = 5000  # the server's largest page (MAX_PAGE)
PATHS = [  # how a device catches up; the REST ones name their form (FORMS) second
    "REST JSON",
    "REST msgpack",
    "REST compact",
    "REST msgpack, prefetching",
    "REST compact, prefetching",
    "websocket",
]


class UpdateOut(msgspec.Struct):
    seq: int
    device_id: uuid.UUID
    key_version: int
    ciphertext: bytes


class SnapshotOut(msgspec.Struct):
    upto_seq: int
    key_version: int
    ciphertext: bytes


class UpdatePage(msgspec.Struct):
    snapshot: SnapshotOut | None
    updates: list[UpdateOut]
    head: int
    has_more: bool


FORMS: dict[str, tuple[dict[str, str], Callable[[bytes], Any]]] = {
    "JSON": ({}, msgspec.json.Decoder(UpdatePage).decode),
    "msgpack": ({"accept": "application/msgpack"}, msgspec.msgpack.Decoder(UpdatePage).decode),
    "compact": ({"accept": COMPACT}, msgspec.msgpack.Decoder(Page).decode),
}


async def fill(db_url: str, doc: str, device: str, n: int, size: int) -> int:
    """N rows of random ciphertext, straight into the log; the bytes written."""
    doc_id, device_id, now = uuid.UUID(doc), uuid.UUID(device), datetime.now(UTC)
    conn = await asyncpg.connect(db_url)
    try:
        step = 50_000
        for first in range(1, n + 1, step):
            records = [
                (
                    doc_id,
                    seq,
                    f"fill-{seq}",
                    device_id,
                    1,
                    os.urandom(size),
                    now,
                )
                for seq in range(first, min(n, first + step - 1) + 1)
            ]
            await conn.copy_records_to_table(
                "doc_updates",
                records=records,
                columns=[
                    "doc_id",
                    "seq",
                    "client_update_id",
                    "device_id",
                    "key_version",
                    "ciphertext",
                    "created_at",
                ],
            )
        total = await conn.fetchval(
            "SELECT sum(length(ciphertext)) FROM doc_updates WHERE doc_id = $1", doc_id
        )
        await conn.execute(
            "UPDATE documents SET head_seq = $2, bytes_total = $3, bytes_since_snapshot = $3, "
            "updates_since_snapshot = $2 WHERE id = $1",
            doc_id,
            n,
            total,
        )
        await conn.execute("VACUUM ANALYZE doc_updates")
        return int(total)
    finally:
        await conn.close()


async def rest(
    http: httpx.AsyncClient, doc: str, token: str, form: str, prefetch: bool
) -> dict[str, Any]:
    """Pages of 5,000 in one of the FORMS. With ``prefetch`` the next page (the answer's
    `Link: rel="next"`) is asked for as soon as this one's headers are in, and this one is
    read and decoded meanwhile: two requests in flight."""
    accept, decode = FORMS[form]
    headers = auth(token) | accept

    def get(url: str) -> asyncio.Task[httpx.Response]:
        request = http.build_request("GET", url, headers=headers)
        return asyncio.create_task(http.send(request, stream=True))

    after, rows, requests, wire, decoding = 0, 0, 0, 0, 0.0
    pending: asyncio.Task[httpx.Response] | None = get(
        f"/v1/docs/{doc}/updates?after=0&limit={PAGE}"
    )
    while pending is not None:
        r = await pending
        r.raise_for_status()
        requests += 1
        pending = get(r.links["next"]["url"]) if prefetch and "next" in r.links else None
        body = await r.aread()
        wire += len(body)
        t = time.perf_counter()
        page = decode(body)
        decoding += time.perf_counter() - t
        if page.snapshot is not None:
            after = page.snapshot.upto_seq
        if page.updates:
            rows += len(page.updates)
            after = page.updates[-1].seq
        if not page.has_more:
            assert after == page.head, (after, page.head)
            break
        if pending is None:
            pending = get(f"/v1/docs/{doc}/updates?after={after}&limit={PAGE}")
    return {
        "rows": rows,
        "requests": requests,
        "bytes": wire,
        "client_decode_ms": round(decoding * 1000, 1),
    }


async def websocket(ws_url: str, doc: str, token: str) -> dict[str, Any]:
    """Open a socket, sign in and subscribe from 0: at head once ``subscribed`` arrives.
    Closing the socket afterwards is not timed (a device at head stays connected, and the
    REST paths keep their connection too)."""
    start = time.perf_counter()
    sock = await SyncClient.open(ws_url, token)
    got: dict[str, Any] = {"rows": 0, "frames": 0}

    def on_updates(frame: ServerFrame) -> None:
        got["rows"] += len(frame.updates or ())
        got["frames"] += 1

    sock.on_updates = on_updates
    try:
        await sock.subscribe(doc, 0)
        got["seconds"] = time.perf_counter() - start
    finally:
        await sock.close()
    return got


async def raw(pool: asyncpg.Pool, doc: str) -> dict[str, int]:
    doc_id = uuid.UUID(doc)
    after, rows, requests = 0, 0, 0
    async with pool.acquire() as conn:
        while True:
            page = await conn.fetch(
                "SELECT seq, device_id, key_version, ciphertext FROM doc_updates "
                "WHERE doc_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                doc_id,
                after,
                PAGE,
            )
            requests += 1
            if not page:
                return {"rows": rows, "requests": requests}
            rows += len(page)
            after = page[-1]["seq"]


async def timed(
    name: str, repeat: int, run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run ``run`` ``repeat`` times; its time is its own ``seconds`` when it gives one."""
    times, detail = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        detail = await run()
        times.append(detail.pop("seconds", time.perf_counter() - start))
    best = statistics.median(times)
    out = {"name": name, "seconds": best, "all_seconds": times} | detail
    out["rows_per_s"] = detail["rows"] / best if detail.get("rows") else None
    print(
        f"  {name:<40} {best * 1000:>9.1f} ms  {detail.get('rows', 0):>8} rows"
        + (f"  {out['rows_per_s']:>9.0f} rows/s" if out["rows_per_s"] else "")
        + (f"  (client decoding {detail['client_decode_ms']} ms)" if "bytes" in detail else ""),
        flush=True,
    )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with Stack("catchup") as stack:
        server = stack.server("catchup")
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            (device,) = await sign_in(http, stack.mail, "reader@bench.test", 1)
            doc = await new_doc(http, device.token)
            t = time.perf_counter()
            nbytes = await fill(stack.db_url, doc, device.device_id, args.updates, args.size)
            print(
                f"filled {args.updates:,} updates ({nbytes / 1e6:.1f} MB) by COPY in "
                f"{time.perf_counter() - t:.1f} s"
            )
            pool = await asyncpg.create_pool(stack.db_url, min_size=1, max_size=2)
            tok, n = device.token, args.repeat

            def path(label: str) -> Callable[[], Awaitable[dict[str, Any]]]:
                if label == "websocket":
                    return lambda: websocket(server.ws_url, doc, tok)
                form = label.split()[1].rstrip(",")
                return lambda: rest(http, doc, tok, form, "prefetch" in label)

            before = [await timed("raw asyncpg", n, lambda: raw(pool, doc))]
            before += [await timed(label, n, path(label)) for label in PATHS]
            for timing in before:
                assert timing["rows"] == args.updates, timing
            snapshot = os.urandom(args.snapshot_bytes)
            r = await http.put(
                f"/v1/docs/{doc}/snapshot",
                content=msgspec.msgpack.encode(
                    {"upto_seq": args.updates, "key_version": 1, "ciphertext": snapshot}
                ),
                headers=auth(tok) | {"content-type": "application/msgpack"},
            )
            r.raise_for_status()
            print(f"snapshot of {args.snapshot_bytes:,} bytes up to {args.updates:,} stored")
            after = [await timed(f"after compaction: {label}", n, path(label)) for label in PATHS]
            for timing in after:
                assert timing["rows"] == 0, timing
            await pool.close()
    return {"before": before, "after": after, "log_bytes": nbytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--updates", type=int, default=50_000, help="updates behind (issue: 259778)")
    ap.add_argument("--size", type=int, default=120, help="bytes of ciphertext per update")
    ap.add_argument("--snapshot-bytes", type=int, default=256 * 1024)
    ap.add_argument("--repeat", type=int, default=3, help="runs per path; the median is kept")
    ap.add_argument("--budget", type=float, default=170, help="seconds before it stops itself")
    args = ap.parse_args()
    install_guards(args.budget if args.updates <= 50_000 else max(args.budget, 600))
    info = machine()
    use_uvloop()
    result = asyncio.run(run(args))
    before = {r["name"]: r for r in result["before"]}
    after = {r["name"]: r for r in result["after"]}
    raw_rate = before["raw asyncpg"]["rows_per_s"]
    rows = []
    for r in result["before"]:
        rows.append(
            [
                r["name"],
                round(r["seconds"] * 1000, 1),
                round(r["rows_per_s"]),
                ratio(r["rows_per_s"], raw_rate),
                r.get("client_decode_ms", "-"),
                round(r["bytes"] / 1e6, 1) if "bytes" in r else "-",
            ]
        )
    print()
    print(
        table(
            [
                "path (N behind, pages of 5000)",
                "ms to head",
                "rows/s",
                "x raw asyncpg",
                "of which client decoding ms",
                "MB on the wire",
            ],
            rows,
        )
    )
    speedups = [
        [
            label,
            round(before[label]["seconds"] * 1000, 1),
            round(after[f"after compaction: {label}"]["seconds"] * 1000, 2),
            ratio(before[label]["seconds"], after[f"after compaction: {label}"]["seconds"]),
        ]
        for label in PATHS
    ]
    print()
    print(table(["path", "before compaction ms", "after compaction ms", "speed-up"], speedups))
    summary: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": info}
    summary |= result
    summary["vs_raw"] = {r[0]: r[3] for r in rows}
    summary["speedup"] = {s[0]: s[3] for s in speedups}
    best = max(ratio(before[p]["rows_per_s"], raw_rate) for p in PATHS if p.startswith("REST"))
    worst_speedup = min(s[3] for s in speedups)
    print(
        f"\nbest REST path / raw asyncpg = {best}x (target >= 0.4x: "
        f"{'MET' if best >= 0.4 else 'NOT MET'}); smallest speed-up after compaction = "
        f"{worst_speedup}x (target >= 100x: {'MET' if worst_speedup >= 100 else 'NOT MET'})"
    )
    print("results:", write_result("catchup", summary))


if __name__ == "__main__":
    main()
