"""Domain-free helpers: client addresses, secrets, tokens, rate limits."""

from __future__ import annotations

import uuid
from ipaddress import ip_network

import pytest

from server.kit.clock import utcnow
from server.kit.crypto import Keyring, numeric_code, opaque_token
from server.kit.jwt import JWTKeys, TokenError
from server.kit.net import client_address
from server.kit.ratelimit import MemoryLimiter

PROXIES = [ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # no proxy trusted: header ignored
        ("10.0.0.2", "198.51.100.1", PROXIES, "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", PROXIES, "198.51.100.1"),  # leftmost is forgeable
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", PROXIES, "198.51.100.1"),  # proxy chain
        ("203.0.113.9", "198.51.100.1", PROXIES, "203.0.113.9"),  # peer is not our proxy
        ("10.0.0.2", None, PROXIES, "10.0.0.2"),
        ("10.0.0.2", "garbage", PROXIES, "garbage"),
    ],
)
def test_client_address(peer, xff, trusted, expected):
    assert client_address(peer, xff, trusted) == expected


def test_keyring_separates_purposes_and_parts():
    keyring = Keyring("k" * 40)
    assert keyring.hmac("otp", "a", "bc") != keyring.hmac("otp", "ab", "c")
    assert keyring.hmac("otp", "a") != keyring.hmac("refresh", "a")
    assert keyring.hmac("otp", "a") == Keyring("k" * 40).hmac("otp", "a")


def test_tokens_and_codes_look_right():
    token = opaque_token("ssr")
    assert token.startswith("ssr_") and len(token) > 40
    codes = {numeric_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 150


def test_jwt_round_trip_and_refusals():
    keys = JWTKeys(Keyring("k" * 40), 1, "https://sync.example")
    user, device = uuid.uuid4(), uuid.uuid4()
    claims = keys.verify_access(keys.issue_access(user, device, utcnow(), 600))
    assert (claims.user_id, claims.device_id) == (user, device)
    with pytest.raises(TokenError):
        JWTKeys(Keyring("k" * 40), 1, "https://other").verify_access(
            keys.issue_access(user, device, utcnow(), 600)
        )
    with pytest.raises(TokenError):
        keys.verify_access("a.b.c")


async def test_memory_limiter_windows():
    limiter = MemoryLimiter()
    hits = [await limiter.hit("k", 2, 60) for _ in range(3)]
    assert [h.allowed for h in hits] == [True, True, False]
    assert hits[-1].retry_after > 0
    assert await limiter.count("k") == 3
    await limiter.reset("k")
    assert await limiter.count("k") == 0
    assert (await limiter.hit("k", 1, 60)).allowed
