"""Running migrations and checking the schema version against what this build knows."""

from __future__ import annotations

import asyncio
import enum
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from server.config import ConfigError, Settings
from server.db.engine import create_engine


class SchemaState(enum.Enum):
    CURRENT = "current"
    BEHIND = "behind"  # includes an empty database
    NEWER = "newer"  # a revision this build does not know: a newer server migrated it


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings) -> None:
    """`alembic upgrade head`; safe to run from several replicas at once on Postgres."""
    command.upgrade(alembic_config(settings), "head")


def _state(connection: Connection, script: ScriptDirectory) -> tuple[SchemaState, set[str]]:
    current = set(MigrationContext.configure(connection).get_current_heads())
    known = {rev.revision for rev in script.walk_revisions()}
    if current - known:
        return SchemaState.NEWER, current
    if current != set(script.get_heads()):
        return SchemaState.BEHIND, current
    return SchemaState.CURRENT, current


async def schema_state(settings: Settings) -> tuple[SchemaState, set[str]]:
    script = ScriptDirectory.from_config(alembic_config(settings))
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_state, script)
    finally:
        await engine.dispose()


def ensure_schema(settings: Settings) -> None:
    """Before serving: refuse a newer schema; migrate or refuse an older one."""
    state, current = asyncio.run(schema_state(settings))
    if state is SchemaState.NEWER:
        raise ConfigError(
            f"the database schema ({', '.join(sorted(current))}) is newer than this server "
            "knows; run a server version at least as new as the one that migrated it"
        )
    if state is SchemaState.BEHIND:
        if not settings.should_migrate_on_start:
            raise ConfigError(
                "the database schema is not up to date; run `session-sync migrate` first "
                "(or set SESSION_SYNC_MIGRATE_ON_START=true)"
            )
        upgrade(settings)
