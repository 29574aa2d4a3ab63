"""Fixtures shared by every test: real services, fresh schemas, settings, app and client.

Tests that take ``settings`` (or anything built on it) run twice: on Postgres + Redis and on
the embedded default (SQLite file, in-process broker). Mark one ``@pytest.mark.backend("x")``
to run it on one backend only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from redis import Redis
from sqlalchemy import text

from server.app import create_app
from server.config import Settings
from server.db.engine import create_engine
from server.db.migrate import upgrade
from server.db.models import Base
from tests import services

SECRET = "test-secret-key-that-is-long-enough-0123456789"
BACKENDS = ("postgres", "embedded")
BASE = "http://testserver"
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd chatter


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with services.postgres_admin_url() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database of this test run's own, built by running the migrations."""
    name = f"ssync_test_{os.getpid()}"
    asyncio.run(services.recreate_database(pg_admin_url, name))
    url = services.with_database(pg_admin_url, name)
    upgrade(Settings(database_url=url, secret_key=SECRET))
    yield url
    asyncio.run(services.drop_database(pg_admin_url, name))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with services.redis_url() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default's data directory, migrated once."""
    data_dir = tmp_path_factory.mktemp("embedded")
    upgrade(Settings(data_dir=data_dir, secret_key=SECRET))
    return data_dir


@pytest.fixture(scope="session")
def smtp() -> Iterator[services.MailCatcher]:
    with services.smtp_server() as catcher:
        yield catcher


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Every record, message and structured fields alike, as one string."""
        return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in self.records)


@pytest.fixture
def server_logs() -> Iterator[_Records]:
    """What the server logs (its logger does not propagate to pytest's caplog)."""
    handler = _Records()
    logger = logging.getLogger("session_sync")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each backend-using test on every backend, or on the one its marker names."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backend")
        names = [marker.args[0]] if marker else list(BACKENDS)
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_settings(
    request: pytest.FixtureRequest, backend: str, smtp: services.MailCatcher, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings for this backend, with the real loopback SMTP server; override any field.

    The backend's tables and Redis database are emptied first, so each test starts clean.
    """

    base: dict[str, Any] = {"secret_key": SECRET, "smtp_url": smtp.url}
    # Resolved here, outside any event loop: the session fixtures run asyncio.run().
    if backend == "postgres":
        base |= {
            "database_url": request.getfixturevalue("pg_url"),
            "redis_url": request.getfixturevalue("redis_url"),
            "data_dir": tmp_path,
        }
    else:
        base["data_dir"] = request.getfixturevalue("sqlite_dir")
    asyncio.run(_reset(Settings(**base)))

    def make(**overrides: Any) -> Settings:
        return Settings(**(base | overrides))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


async def _reset(settings: Settings) -> None:
    """Empty every table and the Redis database."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
            else:
                for table in tables:
                    await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608
    finally:
        await engine.dispose()
    if settings.redis_url:
        Redis.from_url(settings.redis_url).flushdb()


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client driving the app in this event loop, so requests really overlap."""
    async with app_client(app) as client:
        yield client


@asynccontextmanager
async def app_client(
    app: Litestar, peer: tuple[str, int] = ("127.0.0.1", 40000)
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app and talk to it from the socket address ``peer``."""
    transport = httpx.ASGITransport(app=app, client=peer)
    async with running(app), httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan, entered and left in one task of its own.

    pytest-asyncio sets a fixture up and tears it down in different tasks, which the
    lifespan's task group does not allow.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def live_server(app: Litestar) -> AsyncIterator[str]:
    """The app served by uvicorn on a loopback port, in this event loop; yields its URL."""
    import uvicorn

    from server.serve import uvicorn_config

    port = services.free_port()
    async with serving(uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning"))):
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serving(server: Any) -> AsyncIterator[None]:
    """A uvicorn.Server running in this event loop until the block ends."""
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task
