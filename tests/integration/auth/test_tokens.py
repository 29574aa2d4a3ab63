"""Access and refresh tokens, devices, and revocation across replicas."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import jwt as pyjwt
import pytest

from server.app import create_app
from server.kit.clock import utcnow
from server.kit.crypto import Keyring
from server.kit.jwt import JWTKeys
from tests.conftest import SECRET, app_client
from tests.helpers import assert_problem, bearer, sign_in


def refresh_body(tokens):
    return {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}


async def test_refresh_rotates_the_token(client, smtp):
    first = await sign_in(client, smtp)
    r = await client.post("/v1/auth/token", json=refresh_body(first))
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["device_id"] == first["device_id"]
    assert (await client.get("/v1/me", headers=bearer(second))).status_code == 200
    r = await client.post("/v1/auth/token", json=refresh_body(second))
    assert r.status_code == 200


async def test_refresh_accepts_an_oauth_form_body(client, smtp):
    tokens = await sign_in(client, smtp)
    r = await client.post("/v1/auth/token", data=refresh_body(tokens))
    assert r.status_code == 200, r.text


async def test_a_reused_refresh_token_kills_the_family(make_settings, smtp):
    """Replaying a spent refresh token after the grace period signs the device out: the
    thief's and the owner's newer tokens stop working alike."""
    async with app_client(create_app(make_settings(refresh_reuse_grace=1))) as client:
        first = await sign_in(client, smtp)
        second = (await client.post("/v1/auth/token", json=refresh_body(first))).json()
        await asyncio.sleep(1.1)
        r = await client.post("/v1/auth/token", json=refresh_body(first))
        assert_problem(r, 401, "refresh-token-reused")
        r = await client.post("/v1/auth/token", json=refresh_body(second))
        assert_problem(r, 401, "invalid-token")
        assert_problem(await client.get("/v1/me", headers=bearer(second)), 401, "invalid-token")


async def test_a_refresh_retried_within_the_grace_period_gets_a_pair_of_its_own(client, smtp):
    """The answer to a refresh was lost; the client retries with the same token at once."""
    first = await sign_in(client, smtp)
    lost = (await client.post("/v1/auth/token", json=refresh_body(first))).json()
    r = await client.post("/v1/auth/token", json=refresh_body(first))
    assert r.status_code == 200, r.text
    retried = r.json()
    assert retried["refresh_token"] != lost["refresh_token"]
    assert retried["device_id"] == first["device_id"]
    for pair in (retried, lost):
        assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 200
        assert (await client.post("/v1/auth/token", json=refresh_body(pair))).status_code == 200


@pytest.mark.parametrize("grace", [0, 10])
async def test_concurrent_refreshes_of_one_token(make_settings, smtp, grace):
    """With a grace period every racing refresh gets a pair; without, at most one does and
    the others are replays, which revoke the device."""
    async with app_client(create_app(make_settings(refresh_reuse_grace=grace))) as client:
        tokens = await sign_in(client, smtp)
        answers = await asyncio.gather(
            *(client.post("/v1/auth/token", json=refresh_body(tokens)) for _ in range(5))
        )
        winners = [a.json() for a in answers if a.status_code == 200]
        me = await client.get("/v1/me", headers=bearer(tokens))
    if grace:
        assert len(winners) == 5 and me.status_code == 200
    else:
        assert len(winners) <= 1
        assert_problem(me, 401, "invalid-token")


async def test_bad_refresh_requests(client):
    r = await client.post(
        "/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": "ssr_nope"}
    )
    assert_problem(r, 401, "invalid-token")
    r = await client.post("/v1/auth/token", json={"grant_type": "password", "username": "x"})
    assert_problem(r, 400, "bad-request")
    r = await client.post(
        "/v1/auth/token", content=b"grant_type", headers={"content-type": "text/plain"}
    )
    assert_problem(r, 415, "unsupported-media-type")
    r = await client.post(
        "/v1/auth/token", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, "validation-failed")


async def test_access_tokens_are_checked_for_type_audience_issuer_and_key(client, smtp, settings):
    tokens = await sign_in(client, smtp)
    user, device = uuid.UUID(tokens["user_id"]), uuid.UUID(tokens["device_id"])
    keys = JWTKeys(Keyring(SECRET), settings.jwt_key_generation, settings.public_url)
    good = keys.issue_access(user, device, utcnow(), 600)
    assert (
        await client.get("/v1/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200

    expired = keys.issue_access(user, device, utcnow() - timedelta(hours=1), 600)
    foreign = JWTKeys(Keyring("another-secret-that-is-long-enough-000000"), 1, settings.public_url)
    other_issuer = JWTKeys(Keyring(SECRET), settings.jwt_key_generation, "https://elsewhere")
    header = pyjwt.get_unverified_header(good)
    claims = pyjwt.decode(good, options={"verify_signature": False})
    private = keys._keys[header["kid"]]
    wrong_type = pyjwt.encode(claims, private, "EdDSA", headers={"kid": header["kid"]})
    wrong_aud = pyjwt.encode(
        claims | {"aud": "other"}, private, "EdDSA", headers={"kid": header["kid"], "typ": "at+jwt"}
    )
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad in (
        expired,
        foreign.issue_access(user, device, utcnow(), 600),
        other_issuer.issue_access(user, device, utcnow(), 600),
        wrong_type,
        wrong_aud,
        tampered,
        "not-a-jwt",
    ):
        r = await client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
        assert_problem(r, 401, "invalid-token")


async def test_missing_token_answers_401_with_a_challenge(client):
    r = await client.get("/v1/me")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_jwks_verifies_issued_tokens(client, smtp, settings):
    """An independent verifier needs nothing but the published JWKS."""
    tokens = await sign_in(client, smtp)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    kid = pyjwt.get_unverified_header(tokens["access_token"])["kid"]
    key = pyjwt.PyJWKSet.from_dict(jwks)[kid]
    claims = pyjwt.decode(
        tokens["access_token"],
        key,
        algorithms=["EdDSA"],
        audience="session-sync",
        issuer=settings.public_url,
    )
    assert claims["sub"] == tokens["user_id"] and claims["sid"] == tokens["device_id"]


async def test_key_rotation_keeps_the_previous_generation_valid(make_settings, smtp, settings):
    old_app = create_app(settings)
    async with app_client(old_app) as old:
        tokens = await sign_in(old, smtp)
    rotated = create_app(make_settings(jwt_key_generation=settings.jwt_key_generation + 1))
    async with app_client(rotated) as client:
        assert (await client.get("/v1/me", headers=bearer(tokens))).status_code == 200
        kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
        assert len(kids) == 2
    twice = create_app(make_settings(jwt_key_generation=settings.jwt_key_generation + 2))
    async with app_client(twice) as client:
        assert_problem(await client.get("/v1/me", headers=bearer(tokens)), 401, "invalid-token")


async def test_logout_ends_the_device(client, smtp):
    tokens = await sign_in(client, smtp)
    assert (await client.post("/v1/auth/logout", headers=bearer(tokens))).status_code == 204
    assert_problem(await client.get("/v1/me", headers=bearer(tokens)), 401, "invalid-token")
    r = await client.post("/v1/auth/token", json=refresh_body(tokens))
    assert_problem(r, 401, "invalid-token")


async def test_devices_lists_and_revokes(client, smtp):
    laptop = await sign_in(client, smtp, device="laptop")
    desktop = await sign_in(client, smtp, email=laptop["email"], device="desktop")
    listed = (await client.get("/v1/me/devices", headers=bearer(laptop))).json()["devices"]
    assert [(d["name"], d["current"]) for d in listed] == [("laptop", True), ("desktop", False)]

    r = await client.delete(f"/v1/me/devices/{desktop['device_id']}", headers=bearer(laptop))
    assert r.status_code == 204
    assert_problem(await client.get("/v1/me", headers=bearer(desktop)), 401, "invalid-token")
    listed = (await client.get("/v1/me/devices", headers=bearer(laptop))).json()["devices"]
    assert [d["name"] for d in listed] == ["laptop"]


async def test_another_users_device_id_answers_404(client, smtp):
    alice = await sign_in(client, smtp)
    bob = await sign_in(client, smtp)
    for device_id in (bob["device_id"], str(uuid.uuid4())):
        r = await client.delete(f"/v1/me/devices/{device_id}", headers=bearer(alice))
        assert_problem(r, 404, "not-found")
    assert (await client.get("/v1/me", headers=bearer(bob))).status_code == 200
    r = await client.delete("/v1/me/devices/not-a-uuid", headers=bearer(alice))
    assert_problem(r, 404, "not-found")


async def test_revocation_reaches_every_replica(make_settings, smtp):
    """Two app instances over one database: a device revoked through one is refused by the
    other on its very next request."""
    one, two = create_app(make_settings()), create_app(make_settings())
    async with app_client(one) as first, app_client(two) as second:
        laptop = await sign_in(first, smtp, device="laptop")
        phone = await sign_in(first, smtp, email=laptop["email"], device="phone")
        assert (await second.get("/v1/me", headers=bearer(phone))).status_code == 200
        await first.delete(f"/v1/me/devices/{phone['device_id']}", headers=bearer(laptop))
        assert_problem(await second.get("/v1/me", headers=bearer(phone)), 401, "invalid-token")
