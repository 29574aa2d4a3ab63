"""The client's key material the server keeps: KDF parameters (set once) and a public key."""

from __future__ import annotations

import base64
import os

from tests.helpers import assert_problem, b64, bearer, sign_in

KDF = {"alg": "scrypt", "salt": b64(os.urandom(16)), "n": 2**15, "r": 8, "p": 1}


async def test_kdf_parameters_are_set_once(client, smtp):
    me = await sign_in(client, smtp)
    assert (await client.get("/v1/me", headers=bearer(me))).json()["kdf"] is None
    r = await client.put("/v1/me/kdf", json=KDF, headers=bearer(me))
    assert r.status_code == 200
    assert (await client.put("/v1/me/kdf", json=KDF, headers=bearer(me))).status_code == 200
    other = KDF | {"salt": b64(os.urandom(16))}
    assert_problem(await client.put("/v1/me/kdf", json=other, headers=bearer(me)), 409, "conflict")
    assert (await client.get("/v1/me", headers=bearer(me))).json()["kdf"] == KDF


async def test_bad_kdf_parameters_are_refused(client, smtp):
    me = await sign_in(client, smtp)
    for bad in (
        KDF | {"n": 3 * 2**14},
        KDF | {"n": 2**10},
        KDF | {"alg": "md5"},
        KDF | {"salt": b64(b"short")},
    ):
        r = await client.put("/v1/me/kdf", json=bad, headers=bearer(me))
        assert_problem(r, 400, "validation-failed")
    assert (await client.get("/v1/me", headers=bearer(me))).json()["kdf"] is None


async def test_public_key_is_published(client, smtp):
    me = await sign_in(client, smtp)
    key = os.urandom(32)
    r = await client.put("/v1/me/public-key", json={"public_key": b64(key)}, headers=bearer(me))
    assert r.status_code == 200
    got = (await client.get("/v1/me", headers=bearer(me))).json()["public_key"]
    assert base64.b64decode(got) == key
    r = await client.put(
        "/v1/me/public-key", json={"public_key": b64(key[:31])}, headers=bearer(me)
    )
    assert_problem(r, 400, "validation-failed")
