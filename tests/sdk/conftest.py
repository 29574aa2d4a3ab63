"""SDK fixtures: devices, each an AsyncClient with its own state directory, driving the
real app in-process (httpx.ASGITransport) and signing in through the real mail path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from client_sdk import AsyncClient, Session
from tests.conftest import BASE, running
from tests.helpers import code_in
from tests.services import MailCatcher

FAST_KDF = {"n": 2**14, "r": 8, "p": 1}  # the spec's minimum: tests need no 128 MiB scrypt

Device = Callable[..., Awaitable[tuple[AsyncClient, Session, str | None]]]


async def sign_in_device(client: AsyncClient, smtp: MailCatcher, email: str, name: str) -> None:
    before = len(smtp.to(email))
    await client.start_email_login(email)
    code = code_in(await smtp.wait_for(email, count=before + 1))
    await client.verify_email(email, code, name)


@pytest.fixture
async def served_app(app: Litestar) -> AsyncIterator[Litestar]:
    async with running(app):
        yield app


@pytest.fixture
async def device(served_app: Litestar, smtp: MailCatcher, tmp_path: Path) -> AsyncIterator[Device]:
    """``await device(email, name, recovery_code=None)`` -> (client, session, new code)."""
    opened: list[tuple[AsyncClient, Session]] = []

    async def make(
        email: str, name: str, recovery_code: str | None = None
    ) -> tuple[AsyncClient, Session, str | None]:
        transport = httpx.ASGITransport(app=served_app, client=("127.0.0.1", 50000))
        client = AsyncClient(BASE, state_dir=str(tmp_path / name), transport=transport)
        await sign_in_device(client, smtp, email, name)
        session, code = await Session.open(client, recovery_code, kdf_cost=FAST_KDF)
        opened.append((client, session))
        return client, session, code

    yield make
    for client, session in opened:
        session.close()
        await client.aclose()
