"""The SDK against a real server process on Postgres and Redis: the sync client, and edits
queued offline by a process that is killed, sent once after restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from client_sdk import AsyncClient, Client, Session
from tests import services
from tests.conftest import SECRET
from tests.helpers import new_email
from tests.processes import Replica
from tests.sdk.conftest import FAST_KDF, sign_in_device


@pytest.fixture
def server(pg_admin_url, redis_url, smtp, tmp_path) -> Iterator[Replica]:
    name = f"ssync_sdk_{os.getpid()}"
    asyncio.run(services.recreate_database(pg_admin_url, name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SYNC_")} | {
        "SESSION_SYNC_DATABASE_URL": services.with_database(pg_admin_url, name),
        "SESSION_SYNC_REDIS_URL": redis_url,
        "SESSION_SYNC_SMTP_URL": smtp.url,
        "SESSION_SYNC_SECRET_KEY": SECRET,
        "SESSION_SYNC_DATA_DIR": str(tmp_path),
        "SESSION_SYNC_MIGRATE_ON_START": "true",
    }
    replica = Replica(env, tmp_path)
    replica.start()
    yield replica
    replica.kill()
    asyncio.run(services.drop_database(pg_admin_url, name))


CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys, uuid
    from client_sdk import AsyncClient, Session

    async def main():
        client = AsyncClient(sys.argv[1], state_dir=sys.argv[2])
        session, _ = await Session.open(client)
        board = session.canvas(uuid.UUID(sys.argv[3]))
        for n in range(5):
            board.canvas.add_agent(f"offline-{n}", n, n)
        board.seal()                      # one batch sealed into the outbox ...
        board.canvas.add_agent("unsealed")  # ... and one change not yet sealed
        os.kill(os.getpid(), signal.SIGKILL)  # killed before anything is sent

    asyncio.run(main())
    """
)


async def test_edits_queued_offline_survive_a_killed_process(server, smtp, tmp_path):
    email, state = new_email(), tmp_path / "laptop"
    client = AsyncClient(server.url, state_dir=str(state))
    await sign_in_device(client, smtp, email, "laptop")
    session, code = await Session.open(client, kdf_cost=FAST_KDF)
    board = await session.new_canvas()
    session.close()

    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        server.url,
        str(state),
        str(board.doc_id),
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(crashed.communicate(), 60)
    assert crashed.returncode == -9, stderr.decode()

    session, _ = await Session.open(client)
    restarted = session.canvas(board.doc_id)
    names = {a["name"] for a in restarted.canvas.to_json()["agents"].values()}
    assert names == {f"offline-{n}" for n in range(5)} | {"unsealed"}
    assert await restarted.push() == 2  # the sealed batch and the rest, sent once each
    assert await restarted.push() == 0
    assert (await client.get_doc(board.doc_id))["head"] == 2

    other = AsyncClient(server.url, state_dir=str(tmp_path / "desktop"))
    await sign_in_device(other, smtp, email, "desktop")
    desktop, _ = await Session.open(other, code)
    mirror = desktop.canvas(board.doc_id)
    await mirror.pull()
    assert mirror.canvas.to_json() == restarted.canvas.to_json()
    for s in (session, desktop):
        s.close()
    await client.aclose()
    await other.aclose()


def test_the_sync_client_drives_a_real_server(server, smtp, tmp_path):
    email = new_email()
    with Client(server.url, state_dir=str(tmp_path / "cli")) as client:
        client.start_email_login(email)
        code = asyncio.run(_code(smtp, email))
        tokens = client.verify_email(email, code, "script")
        assert client.me()["user_id"] == tokens.user_id
        doc = client.create_doc("canvas", uuid.uuid4())
        assert [d["doc_id"] for d in client.list_docs()] == [doc["doc_id"]]
        assert [d["name"] for d in client.devices()] == ["script"]


async def _code(smtp, email):
    from tests.helpers import code_in

    return code_in(await smtp.wait_for(email))
