"""Cross-replica delivery: a writer on replica 1, a reader on replica 2 (two server
processes sharing one Postgres database and one private redis-server), against a raw Redis
publish-to-subscriber round trip measured in the same run; then Redis killed (SIGKILL) and
restarted mid-stream, counting lost updates.

Phase 1, steady (--rate updates/s for --seconds):
- raw Redis: redis-py publishes a message of the update's size on one connection, a
  subscriber on another receives it (same process, same event loop as our clients);
- session-sync, same replica: writer and reader both on replica 1 (commit, then local fan-out);
- session-sync, cross replica: the reader on replica 2 (commit, bell through Redis, fan-out).
- raw Postgres commit: asyncpg inserts a row of the update's size and commits (autocommit),
  at the same rate: the floor of any delivery that is committed before it is announced.
Latency is from the writer's send to the reader's receipt. Two differences are reported:
- the replica hop: cross replica minus same replica, what going through Redis to another
  replica adds; the target compares it with the raw Redis round trip (2x p50, 3x p99);
- end to end: ours minus the raw Redis round trip, which includes the commit (see the floor).

Phase 2, Redis restart: the writer keeps pushing at --rate for --outage-run seconds; Redis is
SIGKILLed at --kill-at and started again on the same port --down seconds later. Pushes keep
being acknowledged (Postgres is the truth). Afterwards the reader on replica 2 must hold every
acknowledged seq, in order and once: bells lost with Redis are made up by the replicas'
sweep (SESSION_SYNC_SWEEP_INTERVAL, --sweep seconds) and by gap detection.

    .venv/bin/python bench/cross_replica.py               # ~45 s
    .venv/bin/python bench/cross_replica.py --rate 1000 --seconds 30 --sweep 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import asyncpg
import httpx
from common import (
    ServerFrame,
    Stack,
    SyncClient,
    command_line,
    install_guards,
    machine,
    new_doc,
    push_frame,
    sign_in,
    summary_ms,
    table,
    use_uvloop,
    write_result,
)
from redis.asyncio import Redis


class Reader:
    """A subscribed socket recording, per seq, when it arrived; and order violations."""

    def __init__(self, sock: SyncClient, sent: dict[int, float]) -> None:
        self.sock, self.sent = sock, sent
        self.arrived: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.last = 0
        self.out_of_order = 0
        self.duplicates = 0
        sock.on_updates = self._on_updates

    def _on_updates(self, frame: ServerFrame) -> None:
        now = time.perf_counter()
        for u in frame.updates or ():
            if u.seq in self.arrived:
                self.duplicates += 1
                continue
            if u.seq != self.last + 1:
                self.out_of_order += 1
            self.last = u.seq
            self.arrived[u.seq] = now
            counter = int.from_bytes(u.ciphertext[:8], "big")
            t = self.sent.get(counter)
            if t is not None:
                self.latency[counter] = now - t


class Writer:
    def __init__(self, sock: SyncClient, doc: str, size: int) -> None:
        self.sock, self.doc = sock, doc
        self.filler = os.urandom(max(0, size - 8))
        self.counter = 0
        self.sent: dict[int, float] = {}  # counter -> send time
        self.acked_seqs: list[int] = []
        self.ack_latency: list[tuple[float, float]] = []  # (sent at, latency)
        self._ref_sent: dict[int, float] = {}
        self.errors = 0
        sock.on_ack = self._on_ack

    def _on_ack(self, frame: ServerFrame) -> None:
        self.acked_seqs += frame.seqs or []
        t = self._ref_sent.pop(frame.ref or 0, None)
        if t is not None:
            self.ack_latency.append((t, time.perf_counter() - t))

    async def run(self, rate: float, seconds: float) -> None:
        interval, start = 1 / rate, time.perf_counter()
        due = start
        while due < start + seconds:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            self.counter += 1
            body = self.counter.to_bytes(8, "big") + self.filler
            t = time.perf_counter()
            self.sent[self.counter] = self._ref_sent[self.counter] = t
            await self.sock.ws.send(push_frame(self.doc, self.counter, f"x{self.counter}", body))
            due += interval


async def raw_redis(url: str, rate: float, seconds: float, size: int) -> dict[str, float]:
    pub, sub_conn = Redis.from_url(url), Redis.from_url(url)
    pubsub = sub_conn.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("bench:raw")
    sent: dict[int, float] = {}
    lat: list[float] = []
    filler = os.urandom(max(0, size - 8))
    done = asyncio.Event()
    total = int(rate * seconds)

    async def receive() -> None:
        while len(lat) < total:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            n = int.from_bytes(msg["data"][:8], "big")
            lat.append(time.perf_counter() - sent[n])
        done.set()

    receiver = asyncio.create_task(receive())
    start = due = time.perf_counter()
    for n in range(total):
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        sent[n] = time.perf_counter()
        await pub.publish("bench:raw", n.to_bytes(8, "big") + filler)
        due = start + (n + 1) / rate
    try:
        await asyncio.wait_for(done.wait(), 10)
    except TimeoutError:
        receiver.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await pub.aclose()
    await sub_conn.aclose()
    return summary_ms(lat) | {"lost": total - len(lat)}


async def raw_commit(db_url: str, rate: float, seconds: float, size: int) -> dict[str, float]:
    """One-row autocommitted inserts at ``rate``: a durable commit's round trip."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TABLE bench_commit (n bigint PRIMARY KEY, x bytea)")
        filler, lat = os.urandom(size), []
        start = due = time.perf_counter()
        for n in range(int(rate * seconds)):
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            t = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit VALUES ($1, $2)", n, filler)
            lat.append(time.perf_counter() - t)
            due = start + (n + 1) / rate
        await conn.execute("DROP TABLE bench_commit")
    finally:
        await conn.close()
    return summary_ms(lat)


async def wait_for(pred: Any, within: float) -> bool:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return bool(pred())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with Stack("xrep", sweep_interval=str(args.sweep)) as stack:
        one, two = stack.server("replica1"), stack.server("replica2")
        async with httpx.AsyncClient(base_url=one.url, timeout=30) as http:
            devices = await sign_in(http, stack.mail, "team@bench.test", 3)
            doc = await new_doc(http, devices[0].token)
        wsock = await SyncClient.open(one.ws_url, devices[0].token)
        writer = Writer(wsock, doc, args.size)
        local = Reader(await SyncClient.open(one.ws_url, devices[1].token), writer.sent)
        remote = Reader(await SyncClient.open(two.ws_url, devices[2].token), writer.sent)
        await local.sock.subscribe(doc)
        await remote.sock.subscribe(doc)

        # -- phase 1: steady ---------------------------------------------------------------
        print(f"raw Redis pub/sub, {args.rate:g}/s for {args.seconds:g} s ...", flush=True)
        raw = await raw_redis(stack.redis.url, args.rate, args.seconds, args.size)
        print(f"raw Postgres commit, {args.rate:g}/s for {args.seconds:g} s ...", flush=True)
        commit = await raw_commit(stack.db_url, args.rate, args.seconds, args.size)
        print(f"session-sync, {args.rate:g}/s for {args.seconds:g} s ...", flush=True)
        await writer.run(args.rate, args.seconds)
        n = writer.counter
        await wait_for(lambda: len(remote.latency) >= n and len(local.latency) >= n, 10)
        steady: dict[str, Any] = {
            "raw_redis": raw,
            "raw_commit": commit,
            "same_replica": summary_ms(list(local.latency.values())),
            "cross_replica": summary_ms(list(remote.latency.values())),
            "ack": summary_ms([lat for _, lat in writer.ack_latency]),
            "sent": n,
        }
        for k in ("same_replica", "cross_replica", "ack"):
            print(f"  {k:<14} p50 {steady[k]['p50_ms']:.2f} ms  p99 {steady[k]['p99_ms']:.2f} ms")
        for k in ("raw_redis", "raw_commit"):
            print(f"  {k:<14} p50 {steady[k]['p50_ms']:.2f} ms  p99 {steady[k]['p99_ms']:.2f} ms")

        # -- phase 2: Redis killed and restarted ------------------------------------------
        print(
            f"Redis restart: pushing {args.rate:g}/s for {args.outage_run:g} s, SIGKILL at "
            f"{args.kill_at:g} s, back {args.down:g} s later (sweep every {args.sweep:g} s)",
            flush=True,
        )
        first_counter = writer.counter + 1
        acked_before = len(writer.acked_seqs)
        pushing = asyncio.create_task(writer.run(args.rate, args.outage_run))
        await asyncio.sleep(args.kill_at)
        killed_at = time.perf_counter()
        stack.redis.kill()
        await asyncio.sleep(args.down)
        stack.redis.start()
        restarted_at = time.perf_counter()
        await pushing
        stopped_at = time.perf_counter()
        last = writer.counter
        await wait_for(
            lambda: len(writer.acked_seqs) - acked_before >= last - first_counter + 1, 30
        )
        acked = set(writer.acked_seqs)
        head = max(acked)
        caught_up = await wait_for(lambda: remote.last >= head, 3 * args.sweep + 10)
        caught_up_at = time.perf_counter()
        missing_remote = sorted(acked - set(remote.arrived))
        missing_local = sorted(acked - set(local.arrived))
        during = [remote.latency[c] for c in range(first_counter, last + 1) if c in remote.latency]
        outage = {
            "pushed": last - first_counter + 1,
            "acked": len(writer.acked_seqs) - acked_before,
            "push_errors": len(wsock.errors),
            "lost_cross_replica": len(missing_remote),
            "lost_same_replica": len(missing_local),
            "out_of_order": remote.out_of_order,
            "duplicates": remote.duplicates,
            "reader_caught_up": caught_up,
            # Updates sent while Redis was down reached replica 2 this long after it was back:
            "recovered_after_restart_s": round(
                max(
                    (
                        writer.sent[c] + remote.latency[c]
                        for c in range(first_counter, last + 1)
                        if c in remote.latency and writer.sent[c] < restarted_at
                    ),
                    default=restarted_at,
                )
                - restarted_at,
                3,
            ),
            "caught_up_after_last_push_s": round(caught_up_at - stopped_at, 2),
            "outage_s": round(restarted_at - killed_at, 2),
            "latency_during_run": summary_ms(during),
            "ack_latency_during_run": summary_ms(
                [lat for t, lat in writer.ack_latency if t >= killed_at - args.kill_at]
            ),
        }
        # The worst ack and delivery latency per half second, from the start of this run.
        run_start = killed_at - args.kill_at
        timeline: dict[float, list[float]] = {}
        for t, lat in writer.ack_latency:
            if t >= run_start:
                timeline.setdefault(round((t - run_start) * 2) / 2, [0.0, 0.0])[0] = max(
                    timeline.get(round((t - run_start) * 2) / 2, [0.0, 0.0])[0], lat * 1000
                )
        for c in range(first_counter, last + 1):
            if c in remote.latency:
                key = round((writer.sent[c] - run_start) * 2) / 2
                slot = timeline.setdefault(key, [0.0, 0.0])
                slot[1] = max(slot[1], remote.latency[c] * 1000)
        outage["timeline_worst_ms"] = {
            f"{k:.1f}s": {"ack": round(v[0], 1), "replica2": round(v[1], 1)}
            for k, v in sorted(timeline.items())
        }
        for k, v in outage.items():
            print(f"  {k:<28} {v}")
        for s in (wsock, local.sock, remote.sock):
            await s.close()
    return {"steady": steady, "redis_restart": outage}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=200, help="updates/s from the writer")
    ap.add_argument("--seconds", type=float, default=8, help="steady phase, each of the two")
    ap.add_argument("--size", type=int, default=100, help="bytes of ciphertext per update")
    ap.add_argument("--sweep", type=float, default=5.0, help="SESSION_SYNC_SWEEP_INTERVAL")
    ap.add_argument("--outage-run", type=float, default=12.0)
    ap.add_argument("--kill-at", type=float, default=3.0)
    ap.add_argument("--down", type=float, default=2.0)
    ap.add_argument("--budget", type=float, default=170, help="seconds before it stops itself")
    args = ap.parse_args()
    install_guards(args.budget)
    info = machine()
    use_uvloop()
    result = asyncio.run(run(args))
    s = result["steady"]
    raw, same, cross = s["raw_redis"], s["same_replica"], s["cross_replica"]

    def added(row: dict[str, float]) -> list[float]:
        return [round(row["p50_ms"] - raw["p50_ms"], 3), round(row["p99_ms"] - raw["p99_ms"], 3)]

    commit = s["raw_commit"]
    rows = [
        ["raw Redis publish -> subscriber", raw["p50_ms"], raw["p99_ms"], "-", "-"],
        ["raw Postgres commit (asyncpg)", commit["p50_ms"], commit["p99_ms"], *added(commit)],
        ["session-sync, same replica", same["p50_ms"], same["p99_ms"], *added(same)],
        ["session-sync, cross replica", cross["p50_ms"], cross["p99_ms"], *added(cross)],
    ]
    print()
    print(table(["path", "p50 ms", "p99 ms", "over raw Redis p50", "over raw Redis p99"], rows))
    hop = {
        "p50_ms": round(cross["p50_ms"] - same["p50_ms"], 3),
        "p99_ms": round(cross["p99_ms"] - same["p99_ms"], 3),
    }
    hop["p50_x"] = round(hop["p50_ms"] / raw["p50_ms"], 2)
    hop["p99_x"] = round(hop["p99_ms"] / raw["p99_ms"], 2)
    result["replica_hop"] = hop
    met = hop["p50_x"] <= 2 and hop["p99_x"] <= 3
    print(
        f"\nreplica hop (cross minus same replica): +{hop['p50_ms']} ms p50 / +{hop['p99_ms']} ms"
        f" p99 = {hop['p50_x']}x / {hop['p99_x']}x the raw Redis round trip"
        f" (target <= 2x / 3x: {'MET' if met else 'NOT MET'})"
    )
    print(
        f"end to end over raw Redis: +{added(cross)[0]} / +{added(cross)[1]} ms, of which a raw"
        f" durable commit alone takes {commit['p50_ms']} / {commit['p99_ms']} ms"
    )
    o = result["redis_restart"]
    print(
        f"\nRedis restart: {o['acked']} acknowledged, lost on replica 2: "
        f"{o['lost_cross_replica']} (target 0: {'NOT MET' if o['lost_cross_replica'] else 'MET'})"
        f", out of order {o['out_of_order']}, duplicates {o['duplicates']}"
    )
    summary: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": info}
    print("results:", write_result("cross_replica", summary | result))


if __name__ == "__main__":
    main()
