"""Snapshots: catch-up starts from them, compaction is requested under a lease, and the
updates they cover are pruned only after the grace period."""

from __future__ import annotations

import base64
import uuid

import msgspec

from server.app import create_app
from server.kit.http import COMPACT
from tests.conftest import app_client
from tests.helpers import assert_problem, b64, bearer, new_doc, sign_in, updates


def snapshot(upto: int, data: bytes = b"snap") -> dict[str, object]:
    return {"upto_seq": upto, "key_version": 1, "ciphertext": b64(data)}


async def test_catch_up_after_a_snapshot_starts_from_it(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    url = f"/v1/docs/{doc}"
    await client.post(url + "/updates", json=updates(*[b"u"] * 5), headers=bearer(me))
    r = await client.put(url + "/snapshot", json=snapshot(3, b"state@3"), headers=bearer(me))
    assert r.status_code == 200 and r.json()["snapshot_seq"] == 3
    page = (await client.get(url + "/updates?after=1", headers=bearer(me))).json()
    assert page["snapshot"]["upto_seq"] == 3
    assert base64.b64decode(page["snapshot"]["ciphertext"]) == b"state@3"
    assert [u["seq"] for u in page["updates"]] == [4, 5]
    page = (await client.get(url + "/updates?after=3", headers=bearer(me))).json()
    assert page["snapshot"] is None and [u["seq"] for u in page["updates"]] == [4, 5]
    # A page that holds the snapshot and one update links on from that update.
    r = await client.get(url + "/updates?after=0&limit=1", headers=bearer(me))
    assert r.json()["snapshot"]["upto_seq"] == 3 and [u["seq"] for u in r.json()["updates"]] == [4]
    assert r.links["next"]["url"] == f"{url}/updates?after=4&limit=1"
    got = (await client.get(url + "/snapshot", headers=bearer(me))).json()
    assert got["upto_seq"] == 3 and got["device_id"] == me["device_id"]


async def test_the_compact_form_carries_the_same_page(client, smtp):
    """`Accept: application/vnd.session-sync.compact+msgpack`: the msgpack page as arrays,
    device ids as 16 bytes (docs/spec/api.md)."""
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    url = f"/v1/docs/{doc}"
    await client.post(
        url + "/updates", json=updates(*[b"u%d" % i for i in range(5)]), headers=bearer(me)
    )
    await client.put(url + "/snapshot", json=snapshot(3, b"state@3"), headers=bearer(me))
    compact = bearer(me) | {"accept": COMPACT}
    r = await client.get(url + "/updates?after=1&limit=1", headers=compact)
    assert r.headers["content-type"] == COMPACT
    assert r.links["next"]["url"] == f"{url}/updates?after=4&limit=1"
    head, has_more, snap, rows = msgspec.msgpack.decode(r.content)
    maps = msgspec.msgpack.decode(
        (
            await client.get(
                url + "/updates?after=1&limit=1",
                headers=bearer(me) | {"accept": "application/msgpack"},
            )
        ).content
    )
    assert (head, has_more) == (maps["head"], maps["has_more"]) == (5, True)
    device = uuid.UUID(me["device_id"]).bytes
    assert snap[:4] == [3, 1, b"state@3", device]
    assert rows == [[4, device, 1, b"u3"]]
    r = await client.get(url + "/updates?after=4", headers=compact)
    assert msgspec.msgpack.decode(r.content) == [5, False, None, [[5, device, 1, b"u4"]]]
    assert "link" not in r.headers


async def test_snapshot_bounds(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    url = f"/v1/docs/{doc}"
    assert_problem(await client.get(url + "/snapshot", headers=bearer(me)), 404, "not-found")
    await client.post(url + "/updates", json=updates(b"a", b"b"), headers=bearer(me))
    assert_problem(
        await client.put(url + "/snapshot", json=snapshot(3), headers=bearer(me)), 409, "conflict"
    )
    assert (
        await client.put(url + "/snapshot", json=snapshot(2), headers=bearer(me))
    ).status_code == 200
    assert_problem(
        await client.put(url + "/snapshot", json=snapshot(2), headers=bearer(me)), 409, "conflict"
    )
    r = await client.put(
        url + "/snapshot",
        json={"upto_seq": 0, "key_version": 1, "ciphertext": ""},
        headers=bearer(me),
    )
    assert_problem(r, 400, "validation-failed")


async def test_oversized_snapshot_is_refused(make_settings, smtp):
    async with app_client(create_app(make_settings(max_snapshot_size=2048))) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        await client.post(f"/v1/docs/{doc}/updates", json=updates(b"a"), headers=bearer(me))
        r = await client.put(
            f"/v1/docs/{doc}/snapshot", json=snapshot(1, b"x" * 3000), headers=bearer(me)
        )
        assert_problem(r, 413, "payload-too-large")
        assert (await client.get(f"/v1/docs/{doc}", headers=bearer(me))).json()["snapshot_seq"] == 0


async def test_past_the_threshold_one_device_is_asked_for_a_snapshot(make_settings, smtp):
    async with app_client(create_app(make_settings(snapshot_after_updates=3))) as client:
        laptop = await sign_in(client, smtp, device="laptop")
        phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
        doc = await new_doc(client, laptop)
        url = f"/v1/docs/{doc}/updates"
        first = await client.post(url, json=updates(b"a", b"b"), headers=bearer(laptop))
        assert first.json()["snapshot_requested"] is False
        asked = await client.post(url, json=updates(b"c", prefix="l"), headers=bearer(laptop))
        assert asked.json()["snapshot_requested"] is True
        # The lease is the laptop's: the phone is not asked as well.
        other = await client.post(url, json=updates(b"d", prefix="p"), headers=bearer(phone))
        assert other.json()["snapshot_requested"] is False
        r = await client.put(f"/v1/docs/{doc}/snapshot", json=snapshot(3), headers=bearer(laptop))
        assert r.status_code == 200
        doc_now = (await client.get(f"/v1/docs/{doc}", headers=bearer(laptop))).json()
        assert doc_now["snapshot_seq"] == 3


async def test_covered_updates_are_pruned_after_the_grace_period(make_settings, smtp):
    app = create_app(make_settings(snapshot_grace=0))
    async with app_client(app) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        url = f"/v1/docs/{doc}"
        await client.post(url + "/updates", json=updates(*[b"x" * 100] * 4), headers=bearer(me))
        before = (await client.get(url, headers=bearer(me))).json()["bytes"]
        await client.put(url + "/snapshot", json=snapshot(3, b"s" * 10), headers=bearer(me))
        freed = await app.state.sync.prune_due()
        assert freed == 300
        after = (await client.get(url, headers=bearer(me))).json()["bytes"]
        assert after == before + 10 - 300
        page = (await client.get(url + "/updates?after=0", headers=bearer(me))).json()
        assert page["snapshot"]["upto_seq"] == 3 and [u["seq"] for u in page["updates"]] == [4]
        assert await app.state.sync.prune_due() == 0


async def test_nothing_is_pruned_during_the_grace_period(make_settings, smtp):
    app = create_app(make_settings(snapshot_grace=600))
    async with app_client(app) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        await client.post(f"/v1/docs/{doc}/updates", json=updates(b"a", b"b"), headers=bearer(me))
        await client.put(f"/v1/docs/{doc}/snapshot", json=snapshot(2), headers=bearer(me))
        assert await app.state.sync.prune_due() == 0
        # A device that started catching up before the snapshot can still read seq 2 after 1.
        rows = await app.state.sync.read_log(uuid.UUID(doc), 1, 10)
        assert [r.seq for r in rows] == [2]


async def test_transcripts_take_no_snapshots(client, smtp):
    me = await sign_in(client, smtp)
    tid = await new_doc(client, me, kind="transcript")
    chunk = {"chunks": [{"client_chunk_id": "c", "key_version": 1, "ciphertext": b64(b"x")}]}
    await client.post(f"/v1/transcripts/{tid}/chunks", json=chunk, headers=bearer(me))
    r = await client.put(f"/v1/docs/{tid}/snapshot", json=snapshot(1), headers=bearer(me))
    assert_problem(r, 404, "not-found")


async def test_a_full_account_may_still_write_the_snapshot_that_frees_space(make_settings, smtp):
    async with app_client(create_app(make_settings(storage_quota=2048))) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        url = f"/v1/docs/{doc}"
        await client.post(url + "/updates", json=updates(b"x" * 1900), headers=bearer(me))
        r = await client.put(url + "/snapshot", json=snapshot(1, b"s" * 500), headers=bearer(me))
        assert r.status_code == 200
