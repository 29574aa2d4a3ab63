"""The sync log: documents, their encrypted updates and snapshots, and settings registers.

Only ciphertext and the clear metadata needed to route, order and account for it are kept.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base
from server.kit.clock import utcnow


class Document(Base):
    """A synced document. ``head_seq`` is the last sequence number handed out; the row lock
    taken to raise it orders concurrent writers, so seqs commit in order and without gaps."""

    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Owned by a user now; team ownership arrives as a second nullable owner column.
    owner_user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    # Since the newest snapshot: what compaction would save.
    bytes_since_snapshot: Mapped[int] = mapped_column(BigInteger, default=0)
    updates_since_snapshot: Mapped[int] = mapped_column(BigInteger, default=0)
    snapshot_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Which device was asked to write the next snapshot, and until when.
    snapshot_lease_device: Mapped[uuid.UUID | None]
    snapshot_lease_until: Mapped[datetime | None]


class DocUpdate(Base):
    __tablename__ = "doc_updates"

    doc_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client_update_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[uuid.UUID]
    key_version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("doc_id", "client_update_id"),)


class DocSnapshot(Base):
    """An encrypted snapshot replacing every update up to ``upto_seq``. The updates it covers
    are pruned at ``prune_after``, so that a device mid-catch-up is not cut off."""

    __tablename__ = "doc_snapshots"

    doc_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    upto_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    device_id: Mapped[uuid.UUID]
    key_version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prune_after: Mapped[datetime]
    pruned: Mapped[bool] = mapped_column(default=False)


class SettingRegister(Base):
    """A last-write-wins register: the highest (hlc, device_id) written so far wins."""

    __tablename__ = "settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    hlc: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[uuid.UUID]
    key_version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
