"""The migrations are the schema: they match the models, and the server guards versions."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from server.config import ConfigError, Settings
from server.db.engine import create_engine
from server.db.migrate import SchemaState, ensure_schema, schema_state, upgrade
from server.db.models import Base
from tests import services
from tests.conftest import SECRET


async def _diff(settings: Settings) -> list[object]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


def test_migrations_match_the_models(make_settings):
    """`alembic upgrade head` then the equivalent of `alembic check`, on each backend."""
    settings = make_settings()
    assert asyncio.run(_diff(settings)) == []
    assert asyncio.run(schema_state(settings))[0] is SchemaState.CURRENT


@pytest.fixture
def scratch(pg_admin_url, tmp_path, request):
    """A fresh, empty database of either kind."""
    if request.param == "embedded":
        yield Settings(data_dir=tmp_path, secret_key=SECRET)
        return
    name = f"ssync_scratch_{tmp_path.name[-12:].replace('-', '_')}"
    asyncio.run(services.recreate_database(pg_admin_url, name))
    yield Settings(database_url=services.with_database(pg_admin_url, name), secret_key=SECRET)
    asyncio.run(services.drop_database(pg_admin_url, name))


@pytest.mark.parametrize("scratch", ["postgres", "embedded"], indirect=True)
def test_an_empty_database_is_migrated_or_refused(scratch):
    assert asyncio.run(schema_state(scratch))[0] is SchemaState.BEHIND
    if scratch.embedded:
        ensure_schema(scratch)  # the embedded default migrates itself
    else:
        with pytest.raises(ConfigError, match="session-sync migrate"):
            ensure_schema(scratch)
        upgrade(scratch)
    assert asyncio.run(schema_state(scratch))[0] is SchemaState.CURRENT


@pytest.mark.parametrize("scratch", ["postgres", "embedded"], indirect=True)
def test_a_newer_schema_is_refused(scratch):
    upgrade(scratch)

    async def pretend_newer() -> None:
        engine = create_engine(scratch)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
        await engine.dispose()

    asyncio.run(pretend_newer())
    with pytest.raises(ConfigError, match="newer than this server"):
        ensure_schema(scratch)


@pytest.mark.parametrize("scratch", ["postgres"], indirect=True)
def test_replicas_migrating_at_once_are_serialised(scratch):
    """Several processes may run `migrate` together; the advisory lock orders them."""
    import subprocess
    import sys

    env = {"SESSION_SYNC_DATABASE_URL": scratch.database_url, "SESSION_SYNC_SECRET_KEY": SECRET}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "server", "migrate"],
            env={**env, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert asyncio.run(schema_state(scratch))[0] is SchemaState.CURRENT
