"""Identity tables: users, their devices, refresh-token families and one-time codes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, UUIDPrimaryKey
from server.kit.clock import utcnow


class User(UUIDPrimaryKey, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The client's key hierarchy: KDF parameters (a salt is not a secret) and the public half
    # of the user's X25519 key pair. The account secret itself never reaches the server.
    kdf_params: Mapped[str | None] = mapped_column(String(400))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))


class Device(UUIDPrimaryKey, Base):
    """A signed-in device; its refresh tokens form one family that dies with it."""

    __tablename__ = "devices"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(40))


class RefreshToken(UUIDPrimaryKey, Base):
    """One link of a device's rotation chain; only the token's HMAC is kept."""

    __tablename__ = "refresh_tokens"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    spent_at: Mapped[datetime | None]


class EmailCode(UUIDPrimaryKey, Base):
    """A one-time login code; only its HMAC is kept, and it can be consumed once."""

    __tablename__ = "email_codes"

    email: Mapped[str] = mapped_column(String(320))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    consumed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_email_codes_email_created_at", "email", "created_at"),)
