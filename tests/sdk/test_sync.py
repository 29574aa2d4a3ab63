"""The SDK end to end against the real app: offline edits converge, a third device reads
with the recovery code, tampering is refused, and the database holds no plaintext."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from client_sdk import DecryptError
from client_sdk.crypto import Kind
from client_sdk.errors import InvalidCode, NotFound
from server.db.engine import create_engine
from server.db.models import Base
from tests.helpers import code_in, new_email


async def test_two_devices_edit_offline_converge_and_a_third_reads(device):
    email = new_email()
    _, laptop, code = await device(email, "laptop")
    assert code is not None  # the first device made the account secret
    board = await laptop.new_canvas()
    planner = board.canvas.add_agent("planner", 0, 0, {"model": "gpt"})
    await board.sync()

    _, desktop, again = await device(email, "desktop", recovery_code=code)
    assert again is None
    mirror = desktop.canvas(board.doc_id)
    await mirror.pull()
    assert mirror.canvas.to_json() == board.canvas.to_json()

    # Both offline: edits accumulate locally.
    critic = board.canvas.add_agent("critic", 10, 0)
    board.canvas.connect(planner, critic)
    board.canvas.move_agent(planner, 5, 5)
    writer = mirror.canvas.add_agent("writer", 0, 10)
    mirror.canvas.configure(planner, temperature=0.2)

    await board.sync()
    await mirror.sync()
    await board.pull()
    assert board.canvas.to_json() == mirror.canvas.to_json()
    agents = board.canvas.to_json()["agents"]
    assert set(agents) == {planner, critic, writer}
    assert agents[planner]["x"] == 5.0 and agents[planner]["config"]["temperature"] == 0.2

    _, tablet, _ = await device(email, "tablet", recovery_code=code)
    late = tablet.canvas(board.doc_id)
    await late.pull()
    assert late.canvas.to_json() == board.canvas.to_json()


async def test_a_new_device_without_the_recovery_code_cannot_open(
    device, served_app, smtp, tmp_path
):
    email = new_email()
    await device(email, "laptop")
    import httpx

    from client_sdk import AsyncClient, NotSignedIn, Session
    from tests.conftest import BASE
    from tests.sdk.conftest import sign_in_device

    client = AsyncClient(
        BASE, state_dir=str(tmp_path / "x"), transport=httpx.ASGITransport(app=served_app)
    )
    await sign_in_device(client, smtp, email, "stranger")
    with pytest.raises(NotSignedIn, match="recovery code"):
        await Session.open(client)
    await client.aclose()


async def test_moved_or_altered_ciphertexts_are_refused(device):
    client, session, _ = await device(new_email(), "laptop")
    first, second = await session.new_canvas(), await session.new_canvas()
    first.canvas.add_agent("secret plan")
    await first.push()
    stolen = (await client.pull(first.doc_id, 0))["updates"][0]
    before = second.canvas.to_json()

    cases = [
        (second, stolen["ciphertext"], 0),  # moved to another document
        (first, stolen["ciphertext"][:-1] + bytes([stolen["ciphertext"][-1] ^ 1]), 0),  # 1 byte
        (first, stolen["ciphertext"], 7),  # relabelled with another key version
    ]
    for n, (target, ciphertext, key_version) in enumerate(cases):
        state = target.canvas.to_json()
        await client.push(
            target.doc_id,
            [
                {
                    "client_update_id": f"evil-{n}",
                    "key_version": key_version,
                    "ciphertext": ciphertext,
                }
            ],
        )
        with pytest.raises(DecryptError, match="does not authenticate"):
            await target.pull()
        assert target.canvas.to_json() == state  # nothing applied
    assert second.canvas.to_json() == before
    with pytest.raises(DecryptError):
        first.open(stolen["ciphertext"], Kind.SNAPSHOT, 0)  # another kind


async def test_a_lost_ack_is_resent_and_stored_once(device):
    client, session, _ = await device(new_email(), "laptop")
    board = await session.new_canvas()
    board.canvas.add_agent("a")
    sealed = board.seal()
    assert sealed is not None
    # The server stores the batch, but the answer is lost before the outbox is cleared.
    await client.push(
        board.doc_id,
        [
            {
                "client_update_id": sealed.client_update_id,
                "key_version": 0,
                "ciphertext": sealed.ciphertext,
            }
        ],
    )
    assert session.store.pending_count() == 1
    await board.push()
    assert session.store.pending_count() == 0
    assert (await client.get_doc(board.doc_id))["head"] == 1


async def test_transcripts_and_settings_round_trip(device):
    email = new_email()
    _, laptop, code = await device(email, "laptop")
    _, phone, _ = await device(email, "phone", recovery_code=code)
    transcript = await laptop.new_transcript()
    assert await laptop.append_transcript(transcript, "planner: hello", "critic: no") == [1, 2]
    assert await phone.read_transcript(transcript) == ["planner: hello", "critic: no"]
    assert await laptop.set_setting("theme", {"mode": "dark"})
    assert await phone.set_setting("theme", {"mode": "light"})
    assert (await laptop.settings())["theme"] == {"mode": "light"}


async def test_the_database_holds_no_plaintext(device, settings, server_logs):
    """Marker strings go in through every kind of data; a dump of every table and the
    server's log contain none of them."""
    _, session, _ = await device(new_email(), "laptop")
    markers = [
        "MARKER-NODE-7f3a",
        "MARKER-TRANSCRIPT-91c2",
        "MARKER-SETTING-55d0",
        "MARKER-CONFIG-e1b9",
    ]
    board = await session.new_canvas()
    agent = board.canvas.add_agent(markers[0], 1, 2, {"prompt": markers[3]})
    board.canvas.rename_agent(agent, markers[0] + "-renamed")
    await board.sync()
    await board.snapshot()
    transcript = await session.new_transcript()
    await session.append_transcript(transcript, f"said {markers[1]}")
    await session.set_setting("note", markers[2])

    engine = create_engine(settings)
    dump = bytearray()
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():  # noqa: S608
                for value in row:
                    dump += value if isinstance(value, bytes) else str(value).encode()
    await engine.dispose()
    assert len(dump) > 1000
    for marker in markers:
        assert marker.encode() not in dump
        assert marker not in server_logs.text()


async def test_another_users_document_is_not_found(device):
    _, alice, _ = await device(new_email(), "alice")
    bob_client, bob, _ = await device(new_email(), "bob")
    board = await alice.new_canvas()
    with pytest.raises(NotFound):
        await bob.canvas(board.doc_id).pull()
    with pytest.raises(NotFound):
        await bob_client.get_doc(uuid.uuid4())


async def test_wrong_codes_raise_the_mirrored_error(served_app, smtp, tmp_path):
    import httpx

    from client_sdk import AsyncClient
    from tests.conftest import BASE

    client = AsyncClient(
        BASE, state_dir=str(tmp_path), transport=httpx.ASGITransport(app=served_app)
    )
    email = new_email()
    await client.start_email_login(email)
    right = code_in(await smtp.wait_for(email))
    with pytest.raises(InvalidCode) as raised:
        await client.verify_email(email, f"{(int(right) + 1) % 1_000_000:06d}", "x")
    assert raised.value.status == 401
    await client.aclose()


async def test_the_sdk_writes_a_snapshot_when_the_server_asks(make_settings, smtp, tmp_path):
    import httpx

    from client_sdk import AsyncClient, Session
    from server.app import create_app
    from tests.conftest import BASE, running
    from tests.sdk.conftest import FAST_KDF, sign_in_device

    app = create_app(make_settings(snapshot_after_updates=3))
    async with running(app):
        client = AsyncClient(BASE, state_dir=str(tmp_path), transport=httpx.ASGITransport(app=app))
        await sign_in_device(client, smtp, new_email(), "laptop")
        session, _ = await Session.open(client, kdf_cost=FAST_KDF)
        board = await session.new_canvas()
        for n in range(4):
            board.canvas.add_agent(f"a{n}")
            await board.push()  # one batch each: the third crosses the threshold
        doc = await client.get_doc(board.doc_id)
        assert doc["snapshot_seq"] == 3
        page = await client.pull(board.doc_id, 0)
        assert page["snapshot"]["upto_seq"] == 3 and [u["seq"] for u in page["updates"]] == [4]
        session.close()
        await client.aclose()


async def test_a_device_catches_up_page_by_page_from_a_snapshot(device):
    """The pull reads compact pages and asks for the next one before it opens this one: a
    snapshot and updates spread over several pages reach the same canvas, in order."""
    email = new_email()
    client, laptop, code = await device(email, "laptop")
    board = await laptop.new_canvas()
    for n in range(4):
        board.canvas.add_agent(f"early{n}")
        await board.sync()
    assert await board.snapshot()
    covered = (await client.get_doc(board.doc_id))["snapshot_seq"]
    for n in range(7):
        board.canvas.add_agent(f"late{n}")
        await board.sync()
    head = (await client.get_doc(board.doc_id))["head"]

    _, desktop, _ = await device(email, "desktop", recovery_code=code)
    mirror = desktop.canvas(board.doc_id)
    seen: list[tuple[int, int]] = []
    assert await mirror.pull(lambda applied, at: seen.append((applied, at)), page_size=2) == head
    assert mirror.canvas.to_json() == board.canvas.to_json()
    applied = [a for a, _ in seen]
    assert len(seen) >= 4 and applied == sorted(set(applied))  # several pages, each further
    assert applied[0] >= covered + 1 and seen[-1] == (head, head)
