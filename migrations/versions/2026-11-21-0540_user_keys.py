"""Users: the client's KDF parameters and X25519 public key.

Revision ID: fb5892c00e97
Revises: 97e884e8ce8f
Create Date: 2026-11-21 05:40:01.883788
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fb5892c00e97"
down_revision: str | None = "97e884e8ce8f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kdf_params", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("public_key", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("public_key")
        batch_op.drop_column("kdf_params")
