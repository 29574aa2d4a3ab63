"""Finding the real Postgres, Redis and SMTP the tests run against.

Postgres and Redis come from ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL``, else from localhost's
standard ports, else from testcontainers where a Docker engine runs. When none answers, the
run stops with a message naming what is missing: these tests are never skipped.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from redis import Redis

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
# A database of its own: the suite empties it between tests.
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
MAIL_WAIT = 10.0


def _postgres_answers(url: str) -> bool:
    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
        return True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def _redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=3).ping())
    except Exception:
        return False


def _docker_runs() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


def _missing(what: str, url: str) -> None:
    pytest.exit(
        f"{what} is not reachable at {url} and no Docker engine is available to start one. "
        f"Start it (see ../shared/services.md or tests/README.md), or point "
        f"TEST_{what.upper()}_URL at one. These tests are never skipped.",
        returncode=3,
    )


@contextmanager
def postgres_admin_url() -> Iterator[str]:
    """A URL with the right to create databases."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    if _postgres_answers(url):
        yield url
        return
    if not _docker_runs():
        _missing("Postgres", url)
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield pg.get_connection_url()


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)
    if _redis_answers(url):
        yield url
        return
    if not _docker_runs():
        _missing("Redis", url)
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def recreate_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MailCatcher:
    """A real SMTP server on loopback that keeps what it receives."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._cond:
            self.messages.append(message)  # type: ignore[arg-type]
            self._cond.notify_all()
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp+plain://{self.host}:{self.port}"

    async def wait_for(self, to: str, count: int = 1) -> EmailMessage:
        """The ``count``-th message to ``to``, waiting without blocking the event loop."""
        try:
            async with asyncio.timeout(MAIL_WAIT):
                # Mail lands on aiosmtpd's own thread and loop, so poll.
                while len(received := self.to(to)) < count:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"no mail #{count} to {to} within {MAIL_WAIT}s") from None
        return received[count - 1]

    def to(self, address: str) -> list[EmailMessage]:
        with self._cond:
            return [m for m in self.messages if m["To"] == address]


@contextmanager
def smtp_server() -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=free_port())
    controller = Controller(catcher, hostname=catcher.host, port=catcher.port)
    controller.start()
    try:
        yield catcher
    finally:
        controller.stop()
