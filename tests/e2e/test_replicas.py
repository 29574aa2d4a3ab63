"""Two real server processes over one Postgres and one Redis: fan-out across replicas, a Redis
restart mid-stream, and a replica killed under its clients. Postgres is the truth, Redis is
the bell."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import SECRET
from tests.helpers import new_doc, sign_in
from tests.processes import RedisProcess, Replica
from tests.sockets import SyncSocket

BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(pg_admin_url, smtp, tmp_path) -> Iterator[tuple[Replica, Replica, RedisProcess]]:
    name = f"ssync_replicas_{os.getpid()}"
    asyncio.run(services.recreate_database(pg_admin_url, name))
    db_url = services.with_database(pg_admin_url, name)
    redis = RedisProcess(tmp_path)
    redis.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SYNC_")} | {
        "SESSION_SYNC_DATABASE_URL": db_url,
        "SESSION_SYNC_REDIS_URL": redis.url,
        "SESSION_SYNC_SMTP_URL": smtp.url,
        "SESSION_SYNC_SECRET_KEY": SECRET,
        "SESSION_SYNC_DATA_DIR": str(tmp_path),
        "SESSION_SYNC_SWEEP_INTERVAL": "1",
        "SESSION_SYNC_OTP_IP_LIMIT": "1000",
    }
    subprocess.run([str(BIN / "session-sync"), "migrate"], env=env, check=True, capture_output=True)
    one, two = Replica(env, tmp_path), Replica(env, tmp_path)
    one.start()
    two.start()
    yield one, two, redis
    for process in (one, two):
        process.kill()
    redis.kill()
    asyncio.run(services.drop_database(pg_admin_url, name))


async def setup_room(cluster, smtp):
    one = cluster[0]
    async with httpx.AsyncClient(base_url=one.url) as client:
        laptop = await sign_in(client, smtp, device="laptop")
        phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
        doc = await new_doc(client, laptop)
    return laptop, phone, doc


async def collect(reader: SyncSocket, into: list[int], until: int) -> None:
    while not into or into[-1] < until:
        frame = await reader.recv(timeout=20)
        if frame["type"] == "updates":
            into += [u["seq"] for u in frame["updates"]]


async def test_an_update_through_one_replica_reaches_a_socket_on_the_other(cluster, smtp):
    one, two, _ = cluster
    laptop, phone, doc = await setup_room(cluster, smtp)
    reader = await SyncSocket.open(two.url, phone["access_token"])
    await reader.subscribe(doc)
    writer = await SyncSocket.open(one.url, laptop["access_token"])
    assert (await writer.push(doc, 1, b"hello across"))["seqs"] == [1]
    frame = await reader.until("updates")
    assert [u["seq"] for u in frame["updates"]] == [1]


async def test_concurrent_writers_on_both_replicas_get_gapless_seqs(cluster, smtp):
    one, two, _ = cluster
    laptop, phone, doc = await setup_room(cluster, smtp)
    reader = await SyncSocket.open(two.url, phone["access_token"])
    await reader.subscribe(doc)
    writers = [
        await SyncSocket.open((one if n % 2 else two).url, laptop["access_token"])
        for n in range(20)
    ]

    async def write(n: int, socket: SyncSocket) -> list[int]:
        seqs = []
        for ref in range(5):
            ack = await socket.push(doc, ref, b"w", prefix=f"w{n}-")
            seqs += ack["seqs"]
        return seqs

    results = await asyncio.gather(*(write(n, s) for n, s in enumerate(writers)))
    assert sorted(s for seqs in results for s in seqs) == list(range(1, 101))
    seen: list[int] = []
    await collect(reader, seen, 100)
    assert seen == list(range(1, 101))


async def test_a_redis_restart_mid_stream_loses_nothing(cluster, smtp):
    one, two, redis = cluster
    laptop, phone, doc = await setup_room(cluster, smtp)
    reader = await SyncSocket.open(two.url, phone["access_token"])
    await reader.subscribe(doc)
    writer = await SyncSocket.open(one.url, laptop["access_token"])
    seen: list[int] = []
    collector = asyncio.create_task(collect(reader, seen, 150))
    for ref in range(150):
        if ref == 50:
            redis.kill()
        if ref == 100:
            redis.start()
        ack = await writer.push(doc, ref, b"x")
        assert ack["type"] == "ack", ack  # writes commit and ack with Redis down
        await asyncio.sleep(0.005)
    await asyncio.wait_for(collector, 30)
    assert seen == list(range(1, 151))


async def test_a_killed_replicas_clients_reconnect_elsewhere_and_catch_up(cluster, smtp):
    one, two, _ = cluster
    laptop, phone, doc = await setup_room(cluster, smtp)
    reader = await SyncSocket.open(two.url, phone["access_token"])
    await reader.subscribe(doc)
    writer = await SyncSocket.open(one.url, laptop["access_token"])
    seen: list[int] = []
    for ref in range(10):
        await writer.push(doc, ref, b"before")
    await collect(reader, seen, 10)
    two.kill()
    for ref in range(10, 30):
        await writer.push(doc, ref, b"during")
    again = await SyncSocket.open(one.url, phone["access_token"])
    backlog, head = await again.subscribe(doc, after=seen[-1])
    seen += [u["seq"] for u in backlog]
    assert head == 30 and seen == list(range(1, 31))
