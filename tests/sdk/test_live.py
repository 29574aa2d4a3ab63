"""Live mode over a real websocket: remote edits arrive and apply, local edits go out, and
a dropped connection reconnects and catches up from the last applied seq."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from client_sdk import AsyncClient, Session
from client_sdk.live import LiveSync
from server.app import create_app
from tests.conftest import live_server
from tests.helpers import new_email
from tests.sdk.conftest import FAST_KDF, sign_in_device


@pytest.fixture
async def server_url(make_settings) -> AsyncIterator[str]:
    async with live_server(create_app(make_settings(ws_heartbeat=2))) as url:
        yield url


async def open_device(url, smtp, tmp_path, email, name, code=None):
    client = AsyncClient(url, state_dir=str(tmp_path / name))
    await sign_in_device(client, smtp, email, name)
    session, new_code = await Session.open(client, code, kdf_cost=FAST_KDF)
    return client, session, new_code


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def live(*canvases):
    sync, stop = LiveSync(list(canvases), max_backoff=0.5), asyncio.Event()
    task = asyncio.create_task(sync.run(stop))
    await asyncio.wait_for(sync.connected.wait(), 10)
    try:
        yield sync
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_live_edits_flow_both_ways_and_survive_a_reconnect(server_url, smtp, tmp_path):
    email = new_email()
    a_client, a, code = await open_device(server_url, smtp, tmp_path, email, "laptop")
    b_client, b, _ = await open_device(server_url, smtp, tmp_path, email, "desktop", code)
    board = await a.new_canvas()
    board.canvas.add_agent("before")
    await board.push()
    mirror = b.canvas(board.doc_id)

    async with live(mirror) as sync:
        await until(lambda: "before" in names(mirror))  # the backlog
        board.canvas.add_agent("live")
        await board.push()
        await until(lambda: "live" in names(mirror))  # a live update

        mirror.canvas.add_agent("from desktop")
        await sync.flush()
        await until(lambda: b.store.pending_count() == 0)  # acknowledged
        await board.pull()
        assert "from desktop" in names(board)

        sync.disconnect()
        board.canvas.add_agent("while away")
        await board.push()
        await until(lambda: "while away" in names(mirror))  # reconnected and caught up
        assert not sync.errors
    assert mirror.canvas.to_json() == board.canvas.to_json()
    for session, client in ((a, a_client), (b, b_client)):
        session.close()
        await client.aclose()


async def test_a_backlog_frame_over_a_mebibyte_arrives(server_url, smtp, tmp_path):
    """Backlog frames carry up to 5000 updates; the SDK's socket takes frames far larger
    than the 1 MiB a websockets client accepts by default."""
    email = new_email()
    a_client, a, code = await open_device(server_url, smtp, tmp_path, email, "laptop")
    b_client, b, _ = await open_device(server_url, smtp, tmp_path, email, "desktop", code)
    board = await a.new_canvas()
    for i in range(3):  # three pushes of ~600 KB: one backlog frame of ~1.8 MB
        board.canvas.add_agent(f"{i}:" + "x" * 600_000)
        await board.push()
    mirror = b.canvas(board.doc_id)
    async with live(mirror) as sync:
        await until(lambda: len(names(mirror)) == 3)
        assert not sync.errors
    for session, client in ((a, a_client), (b, b_client)):
        session.close()
        await client.aclose()


def names(sync) -> set[str]:
    return {agent["name"] for agent in sync.canvas.to_json()["agents"].values()}


async def test_live_mode_refuses_a_tampered_update(server_url, smtp, tmp_path):
    email = new_email()
    client, session, code = await open_device(server_url, smtp, tmp_path, email, "laptop")
    attacker, _, _ = await open_device(server_url, smtp, tmp_path, email, "desktop", code)
    board = await session.new_canvas()
    other = await session.new_canvas()
    board.canvas.add_agent("real")
    await board.push()
    stolen = (await client.pull(board.doc_id, 0))["updates"][0]
    async with live(other) as sync:
        before = other.canvas.to_json()
        # Another device (the server, in effect) moves a ciphertext into this document.
        moved = {"client_update_id": "moved", "key_version": 0, "ciphertext": stolen["ciphertext"]}
        await attacker.push(other.doc_id, [moved])
        await until(lambda: bool(sync.errors))
    assert "does not authenticate" in str(sync.errors[0])
    assert other.canvas.to_json() == before
    session.close()
    await client.aclose()
    await attacker.aclose()
