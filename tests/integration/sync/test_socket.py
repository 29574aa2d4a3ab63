"""The websocket over a real loopback socket: hello, backlog then live updates without gap or
duplicate, acks, presence, limits and close codes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from server.app import create_app
from server.sync.connection import MAX_IN_FLIGHT
from tests.conftest import live_server
from tests.helpers import bearer, new_doc, sign_in, updates
from tests.sockets import SyncSocket


def seqs(frames):
    return [u["seq"] for u in frames]


async def scrape(client):
    """/metrics as {(sample name, labels...): value}."""
    r = await client.get("/metrics")
    assert r.status_code == 200
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


@pytest.fixture
async def served(make_settings, smtp):
    """A served app, a signed-in user with two devices, and a document."""
    app = create_app(make_settings())
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        laptop = await sign_in(client, smtp, device="laptop")
        phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
        doc = await new_doc(client, laptop)
        yield {
            "url": url,
            "client": client,
            "laptop": laptop,
            "phone": phone,
            "doc": doc,
            "app": app,
        }


async def test_backlog_then_live_updates_without_gap_or_duplicate(served):
    s = served
    await s["client"].post(
        f"/v1/docs/{s['doc']}/updates", json=updates(b"1", b"2"), headers=bearer(s["laptop"])
    )
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    backlog, head = await phone.subscribe(s["doc"])
    assert seqs(backlog) == [1, 2] and head == 2
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    ack = await laptop.push(s["doc"], 7, b"3", b"4")
    assert ack == {"type": "ack", "doc": s["doc"], "ref": 7, "seqs": [3, 4], "head": 4}
    live = await phone.until("updates")
    assert seqs(live["updates"]) == [3, 4]
    assert [base64.b64decode(u["ciphertext"]) for u in live["updates"]] == [b"3", b"4"]
    assert live["updates"][0]["device_id"] == s["laptop"]["device_id"]
    await laptop.close()
    await phone.close()


async def test_subscribe_with_a_cursor_gets_only_what_follows(served):
    s = served
    await s["client"].post(
        f"/v1/docs/{s['doc']}/updates", json=updates(*[b"x"] * 5), headers=bearer(s["laptop"])
    )
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    backlog, head = await phone.subscribe(s["doc"], after=3)
    assert seqs(backlog) == [4, 5] and head == 5
    await phone.close()


async def test_writes_during_subscribe_arrive_once_and_in_order(served):
    """Writers race a subscriber: it must see 1..N exactly once, in order."""
    s = served
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    writer = await SyncSocket.open(s["url"], s["laptop"]["access_token"])

    async def write() -> None:
        for ref in range(40):
            ack = await writer.push(s["doc"], ref, b"w")
            assert ack["type"] == "ack"

    task = asyncio.create_task(write())
    await asyncio.sleep(0.01)
    got, _ = await phone.subscribe(s["doc"])
    await task
    while len(got) < 40:
        got += (await phone.until("updates"))["updates"]
    assert seqs(got) == list(range(1, 41))
    await writer.close()
    await phone.close()


async def test_own_updates_are_acknowledged_not_echoed(served):
    s = served
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    await laptop.subscribe(s["doc"])
    ack = await laptop.push(s["doc"], 1, b"mine")
    assert ack["seqs"] == [1]
    await laptop.send({"type": "ping", "ref": 99})
    assert await laptop.recv() == {"type": "pong", "ref": 99}  # nothing came in between
    await laptop.close()


async def test_presence_is_relayed_to_others_and_never_stored(served):
    s = served
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    await laptop.subscribe(s["doc"])
    await phone.subscribe(s["doc"])
    cursor = base64.b64encode(b"encrypted cursor").decode()
    await laptop.send({"type": "presence", "doc": s["doc"], "data": cursor})
    frame = await phone.until("presence")
    assert frame["device"] == s["laptop"]["device_id"] and frame["data"] == cursor
    page = (
        await s["client"].get(f"/v1/docs/{s['doc']}/updates", headers=bearer(s["laptop"]))
    ).json()
    assert page["head"] == 0


async def test_presence_is_coalesced(served):
    s = served
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    await laptop.subscribe(s["doc"])
    await phone.subscribe(s["doc"])
    for n in range(30):
        data = base64.b64encode(f"pos {n}".encode()).decode()
        await laptop.send({"type": "presence", "doc": s["doc"], "data": data})
    received = []
    try:
        while True:
            received.append(await phone.until("presence", timeout=0.5))
    except TimeoutError:
        pass
    assert 1 <= len(received) < 30
    assert base64.b64decode(received[-1]["data"]) == b"pos 29"  # the newest one wins


async def test_a_ticket_works_once(served):
    s = served
    r = await s["client"].post("/v1/sync/ticket", headers=bearer(s["phone"]))
    ticket = r.json()["ticket"]
    assert ticket.startswith("sst_")
    socket = await SyncSocket.open(s["url"], ticket)
    await socket.close()
    with pytest.raises(ConnectionClosed) as closed:
        await SyncSocket.open(s["url"], ticket)
    assert closed.value.rcvd.code == 4001


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("not json", 4000),
        (json.dumps({"type": "subscribe", "doc": "x"}), 4000),
        (json.dumps({"type": "hello", "token": "forged"}), 4001),
        (json.dumps({"type": "hello", "token": "x", "protocol": 9}), 4003),
    ],
)
async def test_bad_hellos_close_with_their_code(served, first, code):
    socket = await SyncSocket.open(served["url"])
    await socket.ws.send(first)
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd.code == code


async def test_malformed_frames_get_errors_and_change_nothing(served):
    s = served
    socket = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    for bad in (
        "{",
        json.dumps(
            {"type": "push", "doc": s["doc"], "ref": 1, "updates": [{"client_update_id": "a"}]}
        ),
        json.dumps({"type": "warp", "doc": s["doc"]}),
        json.dumps(
            {
                "type": "push",
                "doc": s["doc"],
                "ref": 1,
                "updates": [{"client_update_id": "a", "key_version": 1, "ciphertext": "!!"}],
            }
        ),
    ):
        await socket.ws.send(bad)
        frame = await socket.recv()
        assert frame["type"] == "error" and frame["problem"] == "validation-failed"
    page = (
        await s["client"].get(f"/v1/docs/{s['doc']}/updates", headers=bearer(s["laptop"]))
    ).json()
    assert page["head"] == 0
    assert (await socket.push(s["doc"], 1, b"fine"))["seqs"] == [1]


async def test_too_many_malformed_frames_close_the_socket(served):
    socket = await SyncSocket.open(served["url"], served["laptop"]["access_token"])
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(50):
            await socket.ws.send("{")
            await socket.recv()
    assert closed.value.rcvd.code == 4029


async def test_another_users_document_cannot_be_subscribed_or_pushed(served, smtp):
    s = served
    mallory = await sign_in(s["client"], smtp)
    socket = await SyncSocket.open(s["url"], mallory["access_token"])
    await socket.send({"type": "subscribe", "doc": s["doc"], "after": 0})
    frame = await socket.recv()
    assert frame["type"] == "error" and frame["problem"] == "not-found"
    ack = await socket.push(s["doc"], 1, b"evil")
    assert ack["type"] == "error" and ack["problem"] == "not-found" and ack["ref"] == 1


async def test_an_oversized_frame_closes_with_1009(make_settings, smtp):
    app = create_app(make_settings(ws_max_frame=4096))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        socket = await SyncSocket.open(url, me["access_token"])
        with pytest.raises(ConnectionClosed) as closed:
            await socket.push(doc, 1, b"x" * 8000)
        assert closed.value.rcvd.code == 1009
        page = (await client.get(f"/v1/docs/{doc}/updates", headers=bearer(me))).json()
        assert page["head"] == 0


async def test_a_revoked_device_is_disconnected(make_settings, smtp):
    app = create_app(make_settings(ws_heartbeat=1))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        laptop = await sign_in(client, smtp, device="laptop")
        phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
        socket = await SyncSocket.open(url, phone["access_token"])
        await client.delete(f"/v1/me/devices/{phone['device_id']}", headers=bearer(laptop))
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv(timeout=5)
        assert closed.value.rcvd.code == 4001


async def test_a_silent_client_is_dropped_after_two_heartbeats(make_settings, smtp):
    app = create_app(make_settings(ws_heartbeat=1))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        me = await sign_in(client, smtp)
        socket = await SyncSocket.open(url, me["access_token"])
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(6):
                while True:  # read, but never answer: pings are not liveness from the client
                    await socket.ws.recv()
        assert closed.value.rcvd.code == 4008


async def test_a_slow_reader_is_disconnected_not_buffered(make_settings, smtp):
    app = create_app(make_settings(ws_send_queue=8))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        laptop = await sign_in(client, smtp, device="laptop")
        phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
        doc = await new_doc(client, laptop)
        reader = await SyncSocket.open(url, phone["access_token"])
        await reader.subscribe(doc)
        reader.ws.transport.pause_reading()  # the client stops reading from its socket
        # Large frames fill the kernel's buffers, then the server's bounded queue.
        for n in range(200):
            r = await client.post(
                f"/v1/docs/{doc}/updates",
                json=updates(os.urandom(500_000), prefix=f"b{n}-"),  # incompressible
                headers=bearer(laptop),
            )
            assert r.status_code == 200
            if any(c.state.value != "open" for c in app.state.sockets._live):
                break
        async with asyncio.timeout(10):
            while len(app.state.sockets):  # gone from the server, its queue with it
                await asyncio.sleep(0.05)
        reader.ws.transport.resume_reading()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await reader.recv(timeout=10)
        # The close frame waits behind the full buffers; the server gives up on it in time.
        assert closed.value.rcvd is None or closed.value.rcvd.code == 4009
        # Operators see why: the close is counted by its code.
        closes = ("session_sync_websocket_closes_total", ("code", "4009"), ("name", "too_slow"))
        assert (await scrape(client))[closes] == 1


async def test_a_refused_push_frame_names_its_ref(served):
    s = served
    socket = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    await socket.send({"type": "push", "doc": s["doc"], "ref": 41, "updates": []})
    frame = await socket.recv()
    assert frame["type"] == "error" and frame["ref"] == 41


async def test_subscribed_tells_the_real_head(served):
    s = served
    socket = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    _, head = await socket.subscribe(s["doc"], after=10)
    assert head == 0  # the client's cursor is past the head: it must start over


async def test_plain_http_to_the_socket_path_is_told_to_upgrade(served):
    r = await served["client"].get("/v1/sync")
    assert r.status_code == 426 and r.headers["upgrade"] == "websocket"


async def test_pipelined_pushes_commit_in_the_order_sent(served):
    """Pushes sent without waiting for acks get seqs in the order they were sent, even when
    several group commits are in flight."""
    s = served
    socket = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    for ref in range(40):
        frame = {"client_update_id": f"p{ref}", "key_version": 1, "ciphertext": "eA=="}
        await socket.send({"type": "push", "doc": s["doc"], "ref": ref, "updates": [frame]})
    acks = {}
    while len(acks) < 40:
        frame = await socket.recv()
        assert frame["type"] == "ack", frame
        acks[frame["ref"]] = frame["seqs"][0]
    assert [acks[ref] for ref in range(40)] == list(range(1, 41))


async def test_more_pushes_in_flight_than_the_bound_all_get_answers(served):
    """The reader stops reading at MAX_IN_FLIGHT uncommitted pushes and goes on as they
    commit: every push is answered, the refused one with its ref, the rest in order."""
    s = served
    socket = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    total, foreign = 3 * MAX_IN_FLIGHT, MAX_IN_FLIGHT + 5
    for ref in range(total):
        doc = str(uuid.uuid4()) if ref == foreign else s["doc"]
        frame = {"client_update_id": f"p{ref}", "key_version": 1, "ciphertext": "eA=="}
        await socket.send({"type": "push", "doc": doc, "ref": ref, "updates": [frame]})
    acks, errors = [], []
    while len(acks) + len(errors) < total:
        frame = await socket.recv()
        (acks if frame["type"] == "ack" else errors).append(frame)
    assert [(e["type"], e["ref"], e["problem"]) for e in errors] == [
        ("error", foreign, "not-found")
    ]
    assert [a["seqs"][0] for a in acks] == list(range(1, total))
    assert [a["ref"] for a in acks] == [r for r in range(total) if r != foreign]


async def test_a_resent_push_in_a_group_with_new_ones(served):
    """A device resends a push that committed (its ack was lost) while another device's new
    pushes commit in the same groups: the resent one answers its original seqs, the new ones
    get the next seqs, and readers see each update once."""
    s = served
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    first = await laptop.push(s["doc"], 1, b"a", b"b", prefix="l")
    assert first["seqs"] == [1, 2]
    frame = {"client_update_id": "l1-0", "key_version": 1, "ciphertext": "YQ=="}
    for ref in range(2, 12):  # the laptop resends; the phone pushes new updates meanwhile
        await laptop.send({"type": "push", "doc": s["doc"], "ref": ref, "updates": [frame]})
        new = {"client_update_id": f"p{ref}", "key_version": 1, "ciphertext": "cA=="}
        await phone.send({"type": "push", "doc": s["doc"], "ref": ref, "updates": [new]})
    laptop_acks = [(await laptop.until("ack"))["seqs"] for _ in range(10)]
    phone_acks = [(await phone.until("ack"))["seqs"][0] for _ in range(10)]
    assert laptop_acks == [[1]] * 10
    assert phone_acks == list(range(3, 13))
    reader = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    backlog, head = await reader.subscribe(s["doc"])
    assert [u["seq"] for u in backlog] == list(range(1, 13)) and head == 12


async def test_metrics_count_the_sync_path(served):
    """/metrics tells an operator what the sync path does: sockets, documents, group commits
    and their duration, appended updates, bells and closes."""
    s = served
    before = await scrape(s["client"])
    assert before[("session_sync_websockets",)] == 0
    assert before[("session_sync_group_commit_seconds_count",)] == 0
    phone = await SyncSocket.open(s["url"], s["phone"]["access_token"])
    await phone.subscribe(s["doc"])
    laptop = await SyncSocket.open(s["url"], s["laptop"]["access_token"])
    await laptop.push(s["doc"], 1, b"a", b"b")
    await laptop.push(s["doc"], 2, b"c")
    await phone.until("updates")
    m = await scrape(s["client"])
    assert m[("session_sync_websockets",)] == 2
    assert m[("session_sync_documents_subscribed",)] == 1
    assert m[("session_sync_pushes_total",)] == 2
    assert m[("session_sync_updates_appended_total",)] == 3
    groups = m[("session_sync_group_commit_seconds_count",)]
    assert groups == 2  # each push was acknowledged before the next was sent
    assert m[("session_sync_group_commit_seconds_bucket", ("le", "+Inf"))] == groups
    assert 0 < m[("session_sync_group_commit_seconds_sum",)] < 5
    assert m[("session_sync_group_commit_failures_total",)] == 0
    await laptop.close()
    async with asyncio.timeout(5):  # bells are rung after the ack, by the replica's ringer
        while (m := await scrape(s["client"]))[
            ("session_sync_bells_total", ("outcome", "rung"))
        ] < groups or m[("session_sync_websockets",)] != 1:
            await asyncio.sleep(0.02)
    assert m[("session_sync_websocket_closes_total", ("code", "1000"), ("name", "normal"))] == 1
    assert m[("session_sync_bells_total", ("outcome", "failed"))] == 0
    await phone.close()
