"""The update log: a function that voids a group commit's one statement from inside it.

A group commit on Postgres is one statement (server.sync.repository.append_at_once). When it
finds what needs the full transaction (a client update id stored already, an owner past the
quota) it calls this function, whose error undoes everything the statement did. Plain SQL has
no way to raise; SQLite never runs that statement, so it gets nothing.

Revision ID: 3c1d6a0e5b27
Revises: fb5892c00e97
Create Date: 2026-11-21 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3c1d6a0e5b27"
down_revision: str | None = "fb5892c00e97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION sync_group_conflict(reason text) RETURNS boolean"
        " LANGUAGE plpgsql VOLATILE AS $$"
        " BEGIN RAISE EXCEPTION USING ERRCODE = 'SS409',"
        " MESSAGE = 'group commit needs the full transaction: ' || reason; END $$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION sync_group_conflict(text)")
