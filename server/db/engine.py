"""The async engine and session factory for Postgres (asyncpg) or the embedded SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from server.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        # The most recently returned connection first: the group commit, one statement at a
        # time, keeps reusing one warm backend instead of walking all ten, each preparing
        # its statements and looking up their types anew (docs/benchmarks.md).
        pool_use_lifo=True,
        connect_args={"server_settings": {"application_name": "session-sync"}},
    )
    _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Hand out no connection the server has closed (a restart, a terminated backend).

    asyncpg notices a closed socket as soon as the event loop reads the EOF, so the check
    costs no round trip. SQLAlchemy's pool_pre_ping would cost three per checkout with
    asyncpg (BEGIN, a ping, ROLLBACK): more than the statements of most requests
    (bench/tools/push_anatomy.py). A connection that dies unnoticed still fails one
    statement, and SQLAlchemy then replaces the whole pool.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("connection closed by the server")


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so that writers queue instead of failing.

    pysqlite's own BEGIN handling is switched off (the SQLAlchemy recipe for SQLite
    transactions): a deferred transaction that later writes can fail at once with
    SQLITE_BUSY, an immediate one waits for the lock.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def pooled_driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A pooled connection's asyncpg connection, for the hot paths (Postgres only), without
    SQLAlchemy's Connection around it: checking one out and in this way costs ~28 us of CPU,
    through ``engine.connect()`` ~100 us (greenlet switches, events, transaction state),
    as much as a round trip. A connection left mid-statement (cancelled, timed out, broken)
    is thrown away, not pooled; one that reported an SQL error is fine and goes back."""
    fairy = await engine.raw_connection()
    driver = fairy.driver_connection
    assert driver is not None  # noqa: S101 - a live connection always has its driver
    try:
        yield driver
    except BaseException as exc:
        if not isinstance(exc, Exception) or isinstance(
            exc, OSError | TimeoutError | asyncpg.InterfaceError
        ):
            driver.terminate()
            await greenlet_spawn(fairy.invalidate)
        else:
            fairy.close()
        raise
    fairy.close()  # no I/O: SQLAlchemy has no transaction of its own to roll back on it
