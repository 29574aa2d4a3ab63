"""Transcripts (append-only chunks) and settings (last-write-wins registers)."""

from __future__ import annotations

import base64

import msgspec

from server.kit.http import COMPACT
from tests.helpers import assert_problem, b64, bearer, new_doc, sign_in


def chunks(*payloads: bytes, prefix: str = "c") -> dict[str, object]:
    return {
        "chunks": [
            {"client_chunk_id": f"{prefix}{n}", "key_version": 1, "ciphertext": b64(p)}
            for n, p in enumerate(payloads)
        ]
    }


async def test_transcript_chunks_append_in_order(client, smtp):
    me = await sign_in(client, smtp)
    tid = await new_doc(client, me, kind="transcript")
    url = f"/v1/transcripts/{tid}/chunks"
    r = await client.post(url, json=chunks(b"one", b"two"), headers=bearer(me))
    assert r.json()["seqs"] == [1, 2]
    r = await client.post(url, json=chunks(b"one", b"two", b"three"), headers=bearer(me))
    assert r.json()["seqs"] == [1, 2, 3]  # resent chunks are not stored twice
    page = (await client.get(url + "?after=1", headers=bearer(me))).json()
    assert [base64.b64decode(c["ciphertext"]) for c in page["chunks"]] == [b"two", b"three"]
    assert page["head"] == 3
    r = await client.get(url + "?after=1&limit=1", headers=bearer(me) | {"accept": COMPACT})
    head, has_more, snap, rows = msgspec.msgpack.decode(r.content)
    assert (head, has_more, snap) == (3, True, None)
    assert [(seq, ct) for seq, _, _, ct in rows] == [(2, b"two")]
    assert r.links["next"]["url"] == f"{url}?after=2&limit=1"


async def test_transcripts_and_canvases_do_not_mix(client, smtp):
    me = await sign_in(client, smtp)
    canvas = await new_doc(client, me)
    tid = await new_doc(client, me, kind="transcript")
    assert_problem(
        await client.post(
            f"/v1/transcripts/{canvas}/chunks", json=chunks(b"x"), headers=bearer(me)
        ),
        404,
        "not-found",
    )
    r = await client.post(
        f"/v1/docs/{tid}/updates",
        json={"updates": [{"client_update_id": "x", "key_version": 1, "ciphertext": ""}]},
        headers=bearer(me),
    )
    assert_problem(r, 404, "not-found")


async def test_only_the_owner_reads_or_deletes_a_transcript(client, smtp):
    alice, bob = await sign_in(client, smtp), await sign_in(client, smtp)
    tid = await new_doc(client, alice, kind="transcript")
    await client.post(
        f"/v1/transcripts/{tid}/chunks", json=chunks(b"secret"), headers=bearer(alice)
    )
    assert_problem(
        await client.get(f"/v1/transcripts/{tid}/chunks", headers=bearer(bob)), 404, "not-found"
    )
    assert_problem(await client.delete(f"/v1/docs/{tid}", headers=bearer(bob)), 404, "not-found")
    assert (await client.delete(f"/v1/docs/{tid}", headers=bearer(alice))).status_code == 204


def hlc(ms: int, counter: int = 0) -> str:
    return f"{ms:015d}.{counter:05d}"


async def test_settings_last_write_wins(client, smtp):
    laptop = await sign_in(client, smtp, device="laptop")
    phone = await sign_in(client, smtp, email=laptop["email"], device="phone")
    put = lambda who, clock, data: client.put(  # noqa: E731
        "/v1/settings/theme",
        json={"hlc": clock, "key_version": 1, "ciphertext": b64(data)},
        headers=bearer(who),
    )
    r = await put(laptop, hlc(1000), b"dark")
    assert r.json()["applied"] is True
    r = await put(phone, hlc(999, 7), b"light")  # older clock: stale
    assert r.status_code == 200 and r.json()["applied"] is False
    assert base64.b64decode(r.json()["setting"]["ciphertext"]) == b"dark"
    r = await put(phone, hlc(1000, 1), b"light")
    assert r.json()["applied"] is True
    listed = (await client.get("/v1/settings", headers=bearer(laptop))).json()["settings"]
    assert [(s["key"], base64.b64decode(s["ciphertext"])) for s in listed] == [("theme", b"light")]


async def test_equal_clocks_are_broken_by_device_id(client, smtp):
    a = await sign_in(client, smtp, device="a")
    b = await sign_in(client, smtp, email=a["email"], device="b")
    low, high = sorted((a, b), key=lambda t: t["device_id"])
    body = {"hlc": hlc(5), "key_version": 1, "ciphertext": b64(b"x")}
    assert (await client.put("/v1/settings/k", json=body, headers=bearer(high))).json()["applied"]
    r = await client.put("/v1/settings/k", json=body, headers=bearer(low))
    assert r.json()["applied"] is False and r.json()["setting"]["device_id"] == high["device_id"]


async def test_settings_are_per_user_and_validated(client, smtp):
    alice, bob = await sign_in(client, smtp), await sign_in(client, smtp)
    body = {"hlc": hlc(1), "key_version": 1, "ciphertext": b64(b"x")}
    await client.put("/v1/settings/theme", json=body, headers=bearer(alice))
    assert (await client.get("/v1/settings", headers=bearer(bob))).json()["settings"] == []
    for bad in ({**body, "hlc": "yesterday"}, {**body, "ciphertext": "%%"}, {"hlc": hlc(1)}):
        r = await client.put("/v1/settings/theme", json=bad, headers=bearer(alice))
        assert_problem(r, 400, "validation-failed")
    r = await client.put("/v1/settings/" + "k" * 129, json=body, headers=bearer(alice))
    assert_problem(r, 400, "validation-failed")


async def test_settings_are_bounded_in_size_and_number(make_settings, smtp):
    from server.app import create_app
    from tests.conftest import app_client

    async with app_client(create_app(make_settings(max_settings=2, max_setting_size=100))) as c:
        me = await sign_in(c, smtp)
        body = {"hlc": hlc(1), "key_version": 1, "ciphertext": b64(b"x")}
        for key in ("a", "b"):
            assert (
                await c.put(f"/v1/settings/{key}", json=body, headers=bearer(me))
            ).status_code == 200
        assert_problem(
            await c.put("/v1/settings/c", json=body, headers=bearer(me)), 413, "quota-exceeded"
        )
        newer = body | {"hlc": hlc(2)}
        assert (await c.put("/v1/settings/a", json=newer, headers=bearer(me))).status_code == 200
        big = body | {"hlc": hlc(3), "ciphertext": b64(b"x" * 101)}
        assert_problem(
            await c.put("/v1/settings/a", json=big, headers=bearer(me)), 413, "payload-too-large"
        )
