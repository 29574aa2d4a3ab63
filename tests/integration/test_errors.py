"""Bad input gets problem+json and changes nothing."""

from __future__ import annotations

from server.app import create_app
from server.db.models import EmailCode
from tests.conftest import app_client
from tests.helpers import assert_problem, count_rows, new_email


async def test_oversized_body_answers_413_and_stores_nothing(make_settings):
    settings = make_settings(max_body_size=4096)
    async with app_client(create_app(settings)) as client:
        padding = "x" * 5000
        r = await client.post(
            "/v1/auth/email/start", json={"email": new_email(), "padding": padding}
        )
        assert_problem(r, 413, "payload-too-large")
    assert await count_rows(settings, EmailCode) == 0


async def test_malformed_and_invalid_bodies_answer_400(client, settings):
    cases = [
        (b"{not json", "validation-failed"),
        (b'{"email": 5}', "validation-failed"),
        (b'{"email": "no-at-sign"}', "validation-failed"),
        (b'{"email": "a@b.c", "extra": 1}', "validation-failed"),
        (b"[]", "validation-failed"),
    ]
    for body, slug in cases:
        r = await client.post(
            "/v1/auth/email/start", content=body, headers={"content-type": "application/json"}
        )
        problem = assert_problem(r, 400, slug)
        assert "detail" in problem
    r = await client.post(
        "/v1/auth/email/verify",
        json={"email": new_email(), "code": "12ab56", "device_name": "x"},
    )
    assert_problem(r, 400, "validation-failed")
    assert await count_rows(settings, EmailCode) == 0


async def test_validation_errors_do_not_echo_the_submitted_values(client):
    secret_looking = "123456-this-should-not-come-back"
    r = await client.post(
        "/v1/auth/email/verify",
        json={"email": "a@b.co", "code": secret_looking, "device_name": "x"},
    )
    assert_problem(r, 400, "validation-failed")
    assert secret_looking not in r.text


async def test_unknown_route_and_wrong_method(client):
    assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")
    r = await client.get("/v1/auth/email/start")
    assert_problem(r, 405, "method-not-allowed")


async def test_operations_endpoints(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    await client.post("/v1/auth/email/start", json={"email": new_email()})
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'route="/v1/auth/email/start",status="202"' in metrics.text
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/auth/email/verify" in schema["paths"]
