"""Relay fan-out: N writers and M readers per room, ours against Hocuspocus, same run.

One Python load generator (one process, uvloop) drives both servers with byte-identical Yjs
updates (see yjs_wire.py): for our server they are opaque ciphertext in msgpack ``push``
frames, acknowledged after the commit to Postgres; for Hocuspocus they are Yjs sync
``update`` messages, applied to its in-memory document and acknowledged with SyncStatus,
persisted nowhere. Every socket of a room (writers too) is subscribed to it, as real
clients are; latency is measured from a writer's send to each reader's receipt.

The load is open-loop: writers send at a fixed total rate, spread evenly, for a few seconds
per step. A first step at --warmup-rate is not counted (both servers are measured warm).
The rate then doubles while it passes, then is bisected between the last pass and the
first failure. A step passes when every update reached every reader, the generator kept
its schedule, and the readers' p99 latency is at most --p99-ms. A rate is decided by the
majority of --tries steps (by default three: two that agree end it): on a shared machine
one disturbance, a disk flush stall or a process descheduled, fails a 4 s step of either
server at rates that it passes before and after. The best passing rate is the "sustained
updates/s at p99 <= 10 ms". Then a closed-loop step (each writer keeps --window
updates in flight) gives the peak rate at any latency.

With --replicas N, each room's sockets are spread over N of our servers (one Postgres, one
Redis) and over N Hocuspocus servers joined by their stock Redis extension.

    .venv/bin/python bench/relay_fanout.py            # ~4 min
    .venv/bin/python bench/relay_fanout.py --rooms 8 --readers 16 --step-seconds 10
    .venv/bin/python bench/relay_fanout.py --replicas 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from common import (
    WS_OPTIONS,
    BareRelay,
    Hocuspocus,
    RedisServer,
    ServerFrame,
    Stack,
    SyncClient,
    collector_paused,
    command_line,
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
from prometheus_client.parser import text_string_to_metric_families
from yjs_wire import (
    HP_AUTH,
    HP_AUTH_OK,
    HP_SYNC,
    HP_SYNC_STATUS,
    Y_STEP2,
    Y_UPDATE,
    MapWriter,
    hp_auth,
    hp_parse,
    hp_sync_step1,
    hp_update,
    update_id,
)

# -- what both servers look like to the driver ------------------------------------------


class Harness:
    """Shared by every socket of one server's run: send times and reader receipts."""

    def __init__(self) -> None:
        self.sent: dict[tuple[int, int], float] = {}
        self.latencies: list[float] = []
        self.delivered = 0
        self.window = (0.0, 0.0)
        self.in_window = 0
        self.unknown = 0

    def reset(self, window: tuple[float, float]) -> None:
        self.sent.clear()
        self.latencies = []
        self.delivered = self.in_window = self.unknown = 0
        self.window = window

    def received(self, update: bytes) -> None:
        now = time.perf_counter()
        t = self.sent.get(update_id(update))
        if t is None:
            self.unknown += 1
            return
        self.delivered += 1
        if self.window[0] <= t < self.window[1]:
            self.latencies.append(now - t)
        if self.window[0] <= now < self.window[1]:
            self.in_window += 1


class Writer:
    """A writing socket: a Yjs client with its own id, sending one update at a time."""

    def __init__(self, harness: Harness, value_bytes: int) -> None:
        self.harness = harness
        self.yjs = MapWriter(random.getrandbits(31) + 1, f"node-{random.getrandbits(24)}")
        self.filler = os.urandom(max(0, value_bytes - 8))
        self.acked = 0
        self.sent = 0
        self.on_ack: Callable[[int], None] | None = None

    def next_update(self) -> bytes:
        update = self.yjs.next(self.sent.to_bytes(8, "big") + self.filler)
        self.harness.sent[(self.yjs.client, self.yjs.clock - 1)] = time.perf_counter()
        self.sent += 1
        return update

    def acknowledged(self, n: int) -> None:
        self.acked += n
        if self.on_ack is not None:
            self.on_ack(n)

    async def send_next(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class OurWriter(Writer):
    def __init__(self, harness: Harness, value_bytes: int, sock: SyncClient, doc: str) -> None:
        super().__init__(harness, value_bytes)
        self.sock, self.doc, self.ref = sock, doc, 0
        sock.on_ack = lambda frame: self.acknowledged(len(frame.seqs or ()))

    async def send_next(self) -> None:
        self.ref += 1
        update = self.next_update()
        await self.sock.ws.send(
            push_frame(self.doc, self.ref, f"{self.yjs.client}-{self.ref}", update)
        )

    async def close(self) -> None:
        await self.sock.close()


class HPSocket:
    """A Hocuspocus connection to one document: auth, sync step 1, then updates."""

    def __init__(self, ws: Any, doc: str) -> None:
        self.ws, self.doc = ws, doc
        self.on_update: Callable[[bytes], None] | None = None
        self.on_status: Callable[[], None] | None = None
        self.authed = asyncio.get_running_loop().create_future()
        self.synced = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read_forever())

    @classmethod
    async def open(cls, url: str, doc: str) -> HPSocket:
        from websockets.asyncio.client import connect

        sock = cls(await connect(url, **WS_OPTIONS), doc)
        await sock.ws.send(hp_auth(doc, "bench"))
        await asyncio.wait_for(sock.authed, 30)
        await sock.ws.send(hp_sync_step1(doc))
        await asyncio.wait_for(sock.synced, 30)
        return sock

    async def _read_forever(self) -> None:
        try:
            async for message in self.ws:
                kind, sub, payload = hp_parse(message)
                if kind == HP_SYNC and sub == Y_UPDATE:
                    if self.on_update is not None:
                        self.on_update(payload)
                elif kind == HP_SYNC_STATUS:
                    if self.on_status is not None:
                        self.on_status()
                elif kind == HP_SYNC and sub == Y_STEP2 and not self.synced.done():
                    self.synced.set_result(True)
                elif kind == HP_AUTH and not self.authed.done():
                    if sub == HP_AUTH_OK:
                        self.authed.set_result(True)
                    else:
                        self.authed.set_exception(RuntimeError(f"hocuspocus auth: {payload!r}"))
        except Exception as exc:
            for fut in (self.authed, self.synced):
                if not fut.done():
                    fut.set_exception(exc)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.task.cancel()


class HPWriter(Writer):
    def __init__(self, harness: Harness, value_bytes: int, sock: HPSocket) -> None:
        super().__init__(harness, value_bytes)
        self.sock = sock
        sock.on_status = lambda: self.acknowledged(1)

    async def send_next(self) -> None:
        await self.sock.ws.send(hp_update(self.sock.doc, self.next_update()))

    async def close(self) -> None:
        await self.sock.close()


@dataclass
class Target:
    name: str
    harness: Harness
    writers: list[Writer]
    readers_per_room: int
    pids: list[int]  # server processes whose CPU is reported
    db_name: str | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)
    pg_seen: dict[int, float] = field(default_factory=dict)
    pg_total: float = 0.0
    metrics_urls: list[str] = field(default_factory=list)  # our servers' /metrics

    def server_cpu(self) -> float:
        from common import cpu_delta, cpu_seconds

        total = sum(cpu_seconds(pid) for pid in self.pids)
        if self.db_name:
            now = pg_backends_cpu(self.db_name)
            self.pg_total += cpu_delta(self.pg_seen, now)
            self.pg_seen = now
            total += self.pg_total
        return total

    async def commits(self) -> dict[str, float] | None:
        """Our servers' group commits so far, summed: pushes, and commits by duration
        bucket (cumulative, by upper bound in seconds), from their /metrics."""
        if not self.metrics_urls:
            return None
        total: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=10) as http:
            for url in self.metrics_urls:
                text = (await http.get(url)).text
                for family in text_string_to_metric_families(text):
                    for s in family.samples:
                        if s.name == "session_sync_group_commit_seconds_bucket":
                            key = s.labels["le"]
                        elif s.name == "session_sync_pushes_total":
                            key = "pushes"
                        else:
                            continue
                        total[key] = total.get(key, 0) + s.value
        return total


def commit_summary(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, Any] | None:
    """A step's group commits: how many, pushes per commit, how many took over 10 ms,
    and the upper bound of the slowest one's bucket."""
    if before is None or after is None:
        return None
    delta = {k: after[k] - before.get(k, 0) for k in after}
    groups = delta["+Inf"]
    bounds = sorted((float(k), v) for k, v in delta.items() if k not in ("+Inf", "pushes"))
    slowest = next((b for b, v in bounds if v == groups), float("inf")) if groups else 0.0
    return {
        "commits": int(groups),
        "pushes_per_commit": round(delta["pushes"] / groups, 1) if groups else 0.0,
        "over_10ms": int(groups - dict(bounds).get(0.01, 0)),
        "slowest_le_ms": slowest * 1000,
    }


# -- setting up each server --------------------------------------------------------------


async def setup_ours(args: argparse.Namespace, stack: Stack) -> Target:
    """One server, or with --replicas N, N of them sharing Postgres and Redis, each socket of
    a room on the next one in turn (so a room's writers and readers are spread over them)."""
    servers = [stack.server(f"relay{n}") for n in range(args.replicas)]
    harness = Harness()
    writers: list[Writer] = []
    readers: list[SyncClient] = []
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as http:

        async def room(r: int) -> None:
            devices = await sign_in(
                http, stack.mail, f"room{r}@bench.test", args.writers + args.readers
            )
            doc = await new_doc(http, devices[0].token)
            urls = [servers[(r + n) % len(servers)].ws_url for n in range(len(devices))]
            for d, url in zip(devices[: args.writers], urls[: args.writers], strict=True):
                sock = await SyncClient.open(url, d.token)
                await sock.subscribe(doc)
                writers.append(OurWriter(harness, args.value_bytes, sock, doc))
            for d, url in zip(devices[args.writers :], urls[args.writers :], strict=True):
                sock = await SyncClient.open(url, d.token)

                def deliver(frame: ServerFrame) -> None:
                    for u in frame.updates or ():
                        harness.received(u.ciphertext)

                sock.on_updates = deliver
                await sock.subscribe(doc)
                readers.append(sock)

        await asyncio.gather(*(room(r) for r in range(args.rooms)))
    pids = [server.proc.pid for server in servers if server.proc is not None]
    assert stack.redis.proc is not None
    name = "session-sync" if len(servers) == 1 else f"session-sync x{len(servers)}"
    target = Target(name, harness, writers, args.readers, pids)
    target.db_name = stack.db_name
    target.pids.append(stack.redis.proc.pid)
    target.metrics_urls = [server.url + "/metrics" for server in servers]
    target.closers = [w.close for w in writers] + [r.close for r in readers]
    return target


async def setup_peer(
    args: argparse.Namespace,
    peers: list[Hocuspocus] | list[BareRelay],
    redis: RedisServer | None,
    name: str,
) -> Target:
    """The same rooms on Hocuspocus (or the bare relay), spread over its replicas as ours
    are over ours."""
    harness = Harness()
    writers: list[Writer] = []
    readers: list[HPSocket] = []

    async def room(r: int) -> None:
        doc = f"room-{r}"
        urls = [peers[(r + n) % len(peers)].ws_url for n in range(args.writers + args.readers)]
        for url in urls[: args.writers]:
            writers.append(HPWriter(harness, args.value_bytes, await HPSocket.open(url, doc)))
        for url in urls[args.writers :]:
            sock = await HPSocket.open(url, doc)
            sock.on_update = harness.received
            readers.append(sock)

    await asyncio.gather(*(room(r) for r in range(args.rooms)))
    pids = [hp.proc.pid for hp in peers if hp.proc is not None]
    if redis is not None and redis.proc is not None:
        pids.append(redis.proc.pid)
    target = Target(name, harness, writers, args.readers, pids)
    target.closers = [w.close for w in writers] + [r.close for r in readers]
    return target


def hp_version() -> str:
    from common import hocuspocus_version

    return hocuspocus_version()


# -- one step ------------------------------------------------------------------------------


@dataclass
class Step:
    mode: str
    rate: float  # offered (open loop) or achieved (closed loop) updates/s
    sent: int
    delivered_rate: float
    latency: dict[str, float]
    drained: bool
    on_schedule: bool
    ok: bool
    client_cpu: float
    server_cpu: float
    missing: int
    server_us: float  # the server's CPU per update sent, microseconds (ours: with PG, Redis)
    commits: dict[str, Any] | None = None  # ours: from its /metrics (commit_summary)

    def row(self) -> list[Any]:
        return [
            self.mode,
            round(self.rate),
            round(self.delivered_rate),
            self.latency["p50_ms"],
            self.latency["p99_ms"],
            "pass" if self.ok else "fail",
            f"{self.client_cpu:.0%}",
            f"{self.server_cpu:.0%}",
        ]


@dataclass
class Run:
    """What one step's writers did, measured the same way in both modes."""

    sent: int
    drained: bool
    latency: dict[str, float]
    delivered_rate: float
    client_cpu: float
    server_cpu: float
    missing: int
    server_us: float
    commits: dict[str, Any] | None


async def run_writers(
    target: Target, args: argparse.Namespace, write: Callable[[Writer], Any]
) -> Run:
    """Run ``write`` for every writer, wait for acks and deliveries, and measure."""
    h, writers = target.harness, target.writers
    acked0 = sum(w.acked for w in writers)
    sent0 = sum(w.sent for w in writers)
    commits0 = await target.commits()
    cpu0, srv0, t0 = os.times(), target.server_cpu(), time.perf_counter()
    await asyncio.gather(*(write(w) for w in writers))
    sent = sum(w.sent for w in writers) - sent0
    expected = sent * target.readers_per_room
    drained = await drain(target, acked0 + sent, expected, args.drain_seconds)
    wall = time.perf_counter() - t0
    cpu1, srv1 = os.times(), target.server_cpu()
    commits = commit_summary(commits0, await target.commits())
    window = args.step_seconds - args.warmup
    return Run(
        sent,
        drained,
        summary_ms(h.latencies),
        h.in_window / target.readers_per_room / window,
        (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
        (srv1 - srv0) / wall,
        expected - h.delivered,
        (srv1 - srv0) / max(sent, 1) * 1e6,
        commits,
    )


async def open_loop(target: Target, args: argparse.Namespace, rate: float) -> Step:
    interval = len(target.writers) / rate
    start = time.perf_counter() + 0.05
    end = start + args.step_seconds
    target.harness.reset((start + args.warmup, end))
    late = 0.0

    async def write(w: Writer) -> None:
        nonlocal late
        due = start + random.random() * interval
        while due < end:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late = max(late, now - due)
            await w.send_next()
            due += interval

    r = await run_writers(target, args, write)
    on_schedule = r.sent >= 0.97 * rate * args.step_seconds and late < 0.05
    ok = r.drained and on_schedule and r.latency["p99_ms"] <= args.p99_ms
    return Step(
        "open",
        rate,
        r.sent,
        r.delivered_rate,
        r.latency,
        r.drained,
        on_schedule,
        ok,
        r.client_cpu,
        r.server_cpu,
        r.missing,
        r.server_us,
        r.commits,
    )


async def closed_loop(target: Target, args: argparse.Namespace) -> Step:
    """Each writer keeps ``window`` updates in flight: the peak rate at any latency."""
    start = time.perf_counter()
    end = start + args.step_seconds
    target.harness.reset((start + args.warmup, end))

    async def write(w: Writer) -> None:
        credit = asyncio.Semaphore(args.window)

        def release(n: int) -> None:
            for _ in range(n):
                credit.release()

        w.on_ack = release
        while time.perf_counter() < end:
            await credit.acquire()
            await w.send_next()
        w.on_ack = None

    r = await run_writers(target, args, write)
    return Step(
        f"closed, {args.window} in flight per writer",
        r.sent / args.step_seconds,  # all sent within [start, end]
        r.sent,
        r.delivered_rate,
        r.latency,
        r.drained,
        True,
        r.drained,
        r.client_cpu,
        r.server_cpu,
        r.missing,
        r.server_us,
        r.commits,
    )


async def drain(target: Target, acked: int, delivered: int, within: float) -> bool:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if sum(w.acked for w in target.writers) >= acked and target.harness.delivered >= delivered:
            return True
        await asyncio.sleep(0.005)
    return False


async def measured(step: Awaitable[Step]) -> Step:
    """A step with the generator's collector paused (collected before the step starts)."""
    with collector_paused():
        return await step


async def warm_up(target: Target, args: argparse.Namespace) -> None:
    """One step that is not counted, so that both servers are measured warm: ours, just
    started (an empty connection pool, Postgres backends that have prepared nothing), often
    failed its first step at a rate that it passed in the steps after."""
    step = await measured(open_loop(target, args, args.warmup_rate))
    step.mode = "warm-up, not counted"
    report(target.name, step)
    if not step.drained:
        await drain_more(target, args)


async def search(target: Target, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Double the rate while rates pass, then bisect; the best passing step, and the peak."""
    await warm_up(target, args)
    steps: list[Step] = []
    passed: Step | None = None
    failed: Step | None = None
    rate = float(args.start_rate)
    # Bracket: double while rates pass, halve while they fail.
    while args.min_rate <= rate <= args.max_rate and time.monotonic() < deadline:
        if steps and not steps[-1].drained and not await drain_more(target, args):
            break
        step = await decide(target, args, rate, steps)
        if step.ok:
            passed, rate = step, rate * 2
            if failed is not None:
                break
        else:
            failed, rate = step, rate / 2
            if passed is not None:
                break
    # Bisect between the best pass and the lowest failure.
    for _ in range(args.refine):
        if passed is None or failed is None or time.monotonic() > deadline:
            break
        if not steps[-1].drained and not await drain_more(target, args):
            break
        step = await decide(target, args, round((passed.rate + failed.rate) / 2), steps)
        if step.ok:
            passed = step
        else:
            failed = step
    peak = None
    if time.monotonic() < deadline and (steps[-1].drained or await drain_more(target, args)):
        peak = await measured(closed_loop(target, args))
        steps.append(peak)
        report(target.name, peak)
    return {
        "server": target.name,
        "sustained_rate": passed.rate if passed else 0.0,
        "sustained_latency": passed.latency if passed else None,
        "lowest_failure": failed.__dict__ if failed else None,
        "peak_rate": peak.rate if peak else None,
        "peak_latency": peak.latency if peak else None,
        "steps": [s.__dict__ for s in steps],
    }


async def fixed_rates(target: Target, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """--rates: each rate --tries times, no search; what each server spends per update
    at the same load (the median of the tries)."""
    await warm_up(target, args)
    steps: list[Step] = []
    by_rate: list[dict[str, Any]] = []
    for rate in args.rates:
        mine: list[Step] = []
        for _ in range(args.tries):
            if time.monotonic() > deadline:
                break
            if steps and not steps[-1].drained and not await drain_more(target, args):
                break
            step = await measured(open_loop(target, args, rate))
            report(target.name, step)
            steps.append(step)
            mine.append(step)
        if mine:
            by_rate.append(
                {
                    "rate": rate,
                    "passed": sum(s.ok for s in mine),
                    "tries": len(mine),
                    "p50_ms": statistics.median(s.latency["p50_ms"] for s in mine),
                    "p99_ms": statistics.median(s.latency["p99_ms"] for s in mine),
                    "server_us": statistics.median(s.server_us for s in mine),
                    "client_cpu": statistics.median(s.client_cpu for s in mine),
                }
            )
    return {"server": target.name, "rates": by_rate, "steps": [s.__dict__ for s in steps]}


async def decide(target: Target, args: argparse.Namespace, rate: float, steps: list[Step]) -> Step:
    """One rate, by the majority of up to ``args.tries`` steps; each is added to ``steps``.
    A step that did not drain (the server fell behind) decides at once. The step returned
    stands for the rate: the worst passing one if it passed, the last one if not."""
    mine: list[Step] = []
    need = args.tries // 2 + 1
    while True:
        step = await measured(open_loop(target, args, rate))
        steps.append(step)
        mine.append(step)
        report(target.name, step)
        passes = [s for s in mine if s.ok]
        if len(passes) >= need:
            return max(passes, key=lambda s: s.latency["p99_ms"])
        if len(mine) - len(passes) >= need or not step.drained:
            return step


async def drain_more(target: Target, args: argparse.Namespace) -> bool:
    writers = target.writers
    sent = sum(w.sent for w in writers)
    await asyncio.sleep(0)
    ok = await drain(target, sent, 0, 3 * args.drain_seconds)
    return ok


def report(name: str, step: Step) -> None:
    lat = step.latency
    print(
        f"  {name:>22} {step.mode:<32} {step.rate:>8.0f}/s  delivered {step.delivered_rate:>8.0f}/s"
        f"  p50 {lat['p50_ms']:>7.2f} ms  p99 {lat['p99_ms']:>8.2f} ms"
        f"  {'PASS' if step.ok else 'fail'}{'' if step.drained else ' (not drained)'}"
        f"{'' if step.on_schedule else ' (generator behind)'}"
        f"  cpu client {step.client_cpu:.0%} server {step.server_cpu:.0%}"
        f" ({step.server_us:.0f} us/update)"
        + (
            f"  commits {c['commits']} ({c['pushes_per_commit']} pushes each),"
            f" {c['over_10ms']} over 10 ms, slowest <= {c['slowest_le_ms']:g} ms"
            if (c := step.commits)
            else ""
        ),
        flush=True,
    )


# -- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    end = time.monotonic() + args.budget - 20
    share = (end - time.monotonic()) / (3 if args.ceiling else 2)  # each server's time
    measure = fixed_rates if args.rates else search
    results: dict[str, Any] = {}
    if args.only in (None, "ours"):
        async with Stack("relay") as stack:
            target = await setup_ours(args, stack)
            print(
                f"session-sync: {len(target.writers)} writers, {args.rooms * args.readers} readers"
            )
            results["ours"] = await measure(target, args, time.monotonic() + share)
            for close in target.closers:
                await close()
    if args.only in (None, "peer"):
        # Several Hocuspocus replicas share a private Redis through their Redis extension.
        redis = RedisServer("relay-peer").start() if args.replicas > 1 else None
        port = redis.port if redis is not None else None
        peers = [Hocuspocus(f"hocuspocus{n}", port) for n in range(args.replicas)]
        try:
            for hp in peers:
                hp.start()
            name = f"Hocuspocus {hp_version()}"
            if len(peers) > 1:
                name += f" x{len(peers)} + Redis extension"
            target = await setup_peer(args, peers, redis, name)
            print(
                f"{target.name}: {len(target.writers)} writers, {args.rooms * args.readers} readers"
            )
            results["peer"] = await measure(target, args, end - share if args.ceiling else end)
            for close in target.closers:
                await close()
        finally:
            for hp in peers:
                hp.stop()
            if redis is not None:
                redis.stop()
    if args.ceiling:
        bare = BareRelay().start()
        try:
            target = await setup_peer(args, [bare], None, "bare Python relay")
            print(f"{target.name} (stores nothing): the ceiling of our stack")
            results["ceiling"] = await measure(target, args, end)
            for close in target.closers:
                await close()
        finally:
            bare.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rooms", type=int, default=4)
    ap.add_argument("--writers", type=int, default=2, help="writers per room")
    ap.add_argument("--readers", type=int, default=4, help="readers per room")
    ap.add_argument("--value-bytes", type=int, default=64, help="bytes of each Yjs map value")
    ap.add_argument("--step-seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of each step not measured")
    ap.add_argument(
        "--warmup-rate", type=float, default=800, help="updates/s of the step before the search"
    )
    ap.add_argument("--drain-seconds", type=float, default=2.0)
    ap.add_argument("--start-rate", type=float, default=200)
    ap.add_argument("--min-rate", type=float, default=25)
    ap.add_argument("--max-rate", type=float, default=100_000)
    ap.add_argument("--refine", type=int, default=2, help="bisection steps after the first fail")
    ap.add_argument("--p99-ms", type=float, default=10.0)
    ap.add_argument("--tries", type=int, default=3, help="steps per rate; the majority decides")
    ap.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        help="no search: these open-loop rates (comma separated), --tries steps each",
    )
    ap.add_argument("--window", type=int, default=4, help="in flight per writer, closed loop")
    ap.add_argument(
        "--replicas", type=int, default=1, help="our servers, each room spread over them"
    )
    ap.add_argument("--only", choices=["ours", "peer"])
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure bench/tools/bare_relay.py: a Python relay on our stack storing nothing",
    )
    ap.add_argument("--budget", type=float, help="seconds before it stops itself (420, 630)")
    args = ap.parse_args()
    if args.budget is None:
        args.budget = 630 if args.ceiling else 420
    install_guards(args.budget)
    info = machine()
    use_uvloop()
    results = asyncio.run(run(args, info))
    print("results:", write_result("relay_fanout", summarize(args, info, results)))
    sys.stdout.flush()


def summarize(
    args: argparse.Namespace, info: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """Print the table (and ratios) of a run; what goes into its JSON."""
    summary: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": info}
    summary |= results
    if args.rates:
        rows = [
            [
                r["server"],
                round(x["rate"]),
                f"{x['passed']}/{x['tries']}",
                x["p50_ms"],
                x["p99_ms"],
                round(x["server_us"]),
                f"{x['client_cpu']:.0%}",
            ]
            for r in results.values()
            for x in r["rates"]
        ]
        heads = ["server", "updates/s", "passed", "p50 ms", "p99 ms", "server CPU us/update"]
        print()
        print(table([*heads, "generator CPU"], rows))
        return summary
    ours, peer, ceiling = results.get("ours"), results.get("peer"), results.get("ceiling")
    rows = []
    for r in (ours, peer, ceiling):
        if r:
            sl = r["sustained_latency"] or {"p50_ms": "-", "p99_ms": "-"}
            pl = r["peak_latency"] or {"p50_ms": "-", "p99_ms": "-"}
            rows.append(
                [
                    r["server"],
                    round(r["sustained_rate"]),
                    sl["p50_ms"],
                    sl["p99_ms"],
                    round(r["peak_rate"] or 0),
                    pl["p50_ms"],
                    pl["p99_ms"],
                ]
            )
    print()
    print(
        table(
            [
                "server",
                f"sustained updates/s at p99 <= {args.p99_ms:g} ms",
                "p50 ms",
                "p99 ms",
                "peak updates/s (closed loop)",
                "p50 ms",
                "p99 ms",
            ],
            rows,
        )
    )
    if ours and peer:
        summary["ratio_sustained"] = ratio(ours["sustained_rate"], peer["sustained_rate"])
        summary["ratio_peak"] = ratio(ours["peak_rate"] or 0, peer["peak_rate"] or 0)
        met = summary["ratio_sustained"] >= 1.5
        print(
            f"\nours / Hocuspocus, sustained: {summary['ratio_sustained']}x "
            f"(target >= 1.5x: {'MET' if met else 'NOT MET'}); peak: {summary['ratio_peak']}x"
        )
    if ceiling and peer:
        summary["ceiling_ratio_sustained"] = ratio(
            ceiling["sustained_rate"], peer["sustained_rate"]
        )
        summary["ceiling_ratio_peak"] = ratio(ceiling["peak_rate"] or 0, peer["peak_rate"] or 0)
        print(
            f"bare Python relay / Hocuspocus, sustained: {summary['ceiling_ratio_sustained']}x;"
            f" peak: {summary['ceiling_ratio_peak']}x (what any server on our stack could reach)"
        )
    return summary


if __name__ == "__main__":
    main()
