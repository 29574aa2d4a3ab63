"""The sync log: documents, encrypted updates and snapshots, settings registers.

Revision ID: 97e884e8ce8f
Revises: e0d18b174af6
Create Date: 2026-11-21 05:21:09.010729
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "97e884e8ce8f"
down_revision: str | None = "e0d18b174af6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_since_snapshot", sa.BigInteger(), nullable=False),
        sa.Column("updates_since_snapshot", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_seq", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_lease_device", sa.Uuid(), nullable=True),
        sa.Column("snapshot_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f("fk_documents_owner_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_documents_owner_user_id"), ["owner_user_id"], unique=False
        )

    op.create_table(
        "settings",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("hlc", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_settings_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_settings")),
    )
    op.create_table(
        "doc_snapshots",
        sa.Column("doc_id", sa.Uuid(), nullable=False),
        sa.Column("upto_seq", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prune_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
            name=op.f("fk_doc_snapshots_doc_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("doc_id", "upto_seq", name=op.f("pk_doc_snapshots")),
    )
    op.create_table(
        "doc_updates",
        sa.Column("doc_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("client_update_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
            name=op.f("fk_doc_updates_doc_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("doc_id", "seq", name=op.f("pk_doc_updates")),
        sa.UniqueConstraint(
            "doc_id", "client_update_id", name=op.f("uq_doc_updates_doc_id_client_update_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("doc_updates")
    op.drop_table("doc_snapshots")
    op.drop_table("settings")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_owner_user_id"))

    op.drop_table("documents")
