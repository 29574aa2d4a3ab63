"""Small steps that many tests share: signing in through the real mail path."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from tests.services import MailCatcher

PROBLEM = "application/problem+json"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.test"


async def request_code(client: httpx.AsyncClient, smtp: MailCatcher, email: str) -> str:
    """Ask for a code and read it out of the mail the real SMTP server received."""
    before = len(smtp.to(email))
    response = await client.post("/v1/auth/email/start", json={"email": email})
    assert response.status_code == 202, response.text
    return code_in(await smtp.wait_for(email, count=before + 1))


def code_in(message: Any) -> str:
    match = re.search(r"\b(\d{6})\b", message.get_content())
    assert match, "no code in the mail"
    return match.group(1)


async def sign_in(
    client: httpx.AsyncClient, smtp: MailCatcher, email: str | None = None, device: str = "laptop"
) -> dict[str, Any]:
    email = email or new_email()
    code = await request_code(client, smtp, email)
    response = await client.post(
        "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": device}
    )
    assert response.status_code == 200, response.text
    return dict(response.json()) | {"email": email}


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:session-sync:problem:{slug}", body
    assert body["status"] == status
    return body


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def updates(*payloads: bytes, prefix: str = "u", key_version: int = 1) -> dict[str, Any]:
    """A push body with client update ids ``prefix0``, ``prefix1``, ..."""
    return {
        "updates": [
            {"client_update_id": f"{prefix}{n}", "key_version": key_version, "ciphertext": b64(p)}
            for n, p in enumerate(payloads)
        ]
    }


async def new_doc(client: httpx.AsyncClient, tokens: dict[str, Any], kind: str = "canvas") -> str:
    r = await client.post("/v1/docs", json={"kind": kind}, headers=bearer(tokens))
    assert r.status_code == 201, r.text
    return str(r.json()["doc_id"])


async def count_rows(settings: Any, model: Any) -> int:
    """How many rows a table holds, read through a connection of its own."""
    from sqlalchemy import func, select

    from server.db.engine import create_engine, session_factory

    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()
