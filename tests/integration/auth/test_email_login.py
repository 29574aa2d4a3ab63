"""E-mail one-time-code login: the mail path, the limits, and atomic consumption."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from server.app import create_app
from server.db.engine import create_engine
from server.db.models import Device, EmailCode, User
from server.kit.clock import utcnow
from tests.conftest import app_client
from tests.helpers import assert_problem, bearer, count_rows, new_email, request_code, sign_in


async def test_new_address_signs_in_with_the_mailed_code(client, smtp, settings):
    """The code arrives over real SMTP; verifying it creates the account and a device."""
    tokens = await sign_in(client, smtp, device="work laptop")
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 600
    assert tokens["refresh_token"].startswith("ssr_")
    me = await client.get("/v1/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json()["email"] == tokens["email"]
    assert me.json()["user_id"] == tokens["user_id"]
    assert await count_rows(settings, User) == 1


async def test_known_and_unknown_addresses_get_the_same_answer(client, smtp):
    """Nothing in the answer tells whether an account exists."""
    known = (await sign_in(client, smtp))["email"]
    unknown = new_email()
    answers = [
        await client.post("/v1/auth/email/start", json={"email": address})
        for address in (known, unknown)
    ]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].content == answers[1].content
    assert set(answers[0].headers) == set(answers[1].headers)
    await smtp.wait_for(unknown)


async def test_address_is_case_insensitive(client, smtp):
    email = new_email()
    code = await request_code(client, smtp, email)
    r = await client.post(
        "/v1/auth/email/verify",
        json={"email": email.upper(), "code": code, "device_name": "phone"},
    )
    assert r.status_code == 200


async def test_five_wrong_codes_burn_the_code(client, smtp):
    email = new_email()
    code = await request_code(client, smtp, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = await client.post(
            "/v1/auth/email/verify", json={"email": email, "code": wrong, "device_name": "x"}
        )
        assert_problem(r, 401, "invalid-code")
    r = await client.post(
        "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": "x"}
    )
    assert_problem(r, 401, "invalid-code")


async def test_a_code_works_once(client, smtp):
    email = new_email()
    code = await request_code(client, smtp, email)
    body = {"email": email, "code": code, "device_name": "x"}
    assert (await client.post("/v1/auth/email/verify", json=body)).status_code == 200
    assert_problem(await client.post("/v1/auth/email/verify", json=body), 401, "invalid-code")


async def test_an_expired_code_fails(client, smtp, settings):
    email = new_email()
    code = await request_code(client, smtp, email)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.execute(update(EmailCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    await engine.dispose()
    r = await client.post(
        "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": "x"}
    )
    assert_problem(r, 401, "invalid-code")


async def test_a_new_code_supersedes_the_old_one(make_settings, smtp):
    app = create_app(make_settings(otp_resend_interval=1))
    async with app_client(app) as client:
        email = new_email()
        first = await request_code(client, smtp, email)
        await asyncio.sleep(1.1)
        second = await request_code(client, smtp, email)
        if first != second:
            r = await client.post(
                "/v1/auth/email/verify", json={"email": email, "code": first, "device_name": "x"}
            )
            assert_problem(r, 401, "invalid-code")
        r = await client.post(
            "/v1/auth/email/verify", json={"email": email, "code": second, "device_name": "x"}
        )
        assert r.status_code == 200


async def test_one_mail_per_address_per_minute(client, smtp):
    """A second request within the interval answers 202 but sends nothing."""
    email, marker = new_email(), new_email()
    await request_code(client, smtp, email)
    r = await client.post("/v1/auth/email/start", json={"email": email})
    assert r.status_code == 202
    # The outbox delivers in order: once the marker's mail is in, a second mail would be too.
    await request_code(client, smtp, marker)
    assert len(smtp.to(email)) == 1


async def test_per_ip_limit_answers_429(make_settings, smtp):
    app = create_app(make_settings(otp_ip_limit=3))
    async with app_client(app, ("198.51.100.7", 1)) as client:
        for _ in range(3):
            r = await client.post("/v1/auth/email/start", json={"email": new_email()})
            assert r.status_code == 202
        r = await client.post("/v1/auth/email/start", json={"email": new_email()})
        assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) > 0
    async with app_client(app, ("198.51.100.8", 1)) as other:
        r = await other.post("/v1/auth/email/start", json={"email": new_email()})
        assert r.status_code == 202


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(make_settings):
    """Behind a trusted proxy each forwarded client has its own limit; otherwise the header
    is ignored, so a client cannot escape its limit by inventing addresses."""
    trusting = create_app(make_settings(otp_ip_limit=1, trusted_proxies=["10.0.0.0/8"]))
    async with app_client(trusting, ("10.1.2.3", 1)) as client:
        for n in range(3):
            r = await client.post(
                "/v1/auth/email/start",
                json={"email": new_email()},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            )
            assert r.status_code == 202
    naive = create_app(make_settings(otp_ip_limit=1))
    async with app_client(naive, ("192.0.2.50", 1)) as client:
        statuses = [
            (
                await client.post(
                    "/v1/auth/email/start",
                    json={"email": new_email()},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
            ).status_code
            for n in range(2)
        ]
    assert statuses == [202, 429]


async def test_daily_failure_cap_per_address(make_settings, smtp):
    app = create_app(make_settings(otp_daily_failures=3, otp_resend_interval=1))
    async with app_client(app, ("192.0.2.9", 1)) as client:
        email = new_email()
        code = await request_code(client, smtp, email)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(3):
            r = await client.post(
                "/v1/auth/email/verify", json={"email": email, "code": wrong, "device_name": "x"}
            )
            assert_problem(r, 401, "invalid-code")
        r = await client.post(
            "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": "x"}
        )
        body = assert_problem(r, 401, "invalid-code")
        assert "today" in body["detail"]


async def test_twenty_concurrent_correct_codes_mint_one_session(client, smtp, settings):
    email = new_email()
    code = await request_code(client, smtp, email)
    body = {"email": email, "code": code, "device_name": "racer"}
    answers = await asyncio.gather(
        *(client.post("/v1/auth/email/verify", json=body) for _ in range(20))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * 19
    assert await count_rows(settings, Device) == 1


async def test_logs_hold_no_codes_or_tokens(client, smtp, server_logs):
    email = new_email()
    code = await request_code(client, smtp, email)
    r = await client.post(
        "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": "x"}
    )
    tokens = r.json()
    await client.post(
        "/v1/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    logged = server_logs.text()
    assert "/v1/auth/token" in logged, "the requests were not logged at all"
    for secret in (code, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in logged


@pytest.mark.backend("embedded")
async def test_development_mode_logs_the_code(make_settings, server_logs):
    """Without SMTP the code goes to the log, marked as development mode."""
    app = create_app(make_settings(smtp_url=None))
    async with app_client(app, ("192.0.2.10", 1)) as client:
        email = new_email()
        assert (await client.post("/v1/auth/email/start", json={"email": email})).status_code == 202
        for _ in range(200):
            if "DEVELOPMENT MODE" in server_logs.text():
                break
            await asyncio.sleep(0.01)
    assert "DEVELOPMENT MODE" in server_logs.text()
    assert re.search(r"code is \d{6}", server_logs.text())
