"""Request and response bodies of the sync REST API. Ciphertext travels as base64 in JSON
(msgspec's ``bytes``) and as raw bytes in msgpack."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

DocKind = Literal["canvas", "settings", "transcript"]
ClientUpdateId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
KeyVersion = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
# A hybrid logical clock: 15-digit wall-clock milliseconds, a dot, a 5-digit counter.
HLC = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{15}\.[0-9]{5}$")]
SettingKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class DocCreate(msgspec.Struct, forbid_unknown_fields=True):
    kind: DocKind
    doc_id: uuid.UUID | None = None  # a client may choose the id, e.g. for offline creation


class DocOut(msgspec.Struct):
    doc_id: uuid.UUID
    kind: str
    created_at: datetime
    head: int
    snapshot_seq: int
    bytes: int


class DocList(msgspec.Struct):
    docs: list[DocOut]


class UpdateIn(msgspec.Struct, forbid_unknown_fields=True):
    client_update_id: ClientUpdateId
    key_version: KeyVersion
    ciphertext: bytes


class PushIn(msgspec.Struct, forbid_unknown_fields=True):
    updates: Annotated[list[UpdateIn], msgspec.Meta(min_length=1)]


class PushOut(msgspec.Struct):
    seqs: list[int]
    head: int
    snapshot_requested: bool = False


class UpdateOut(msgspec.Struct, gc=False):
    seq: int
    device_id: uuid.UUID
    key_version: int
    ciphertext: bytes


class SnapshotIn(msgspec.Struct, forbid_unknown_fields=True):
    upto_seq: Annotated[int, msgspec.Meta(ge=1)]
    key_version: KeyVersion
    ciphertext: bytes


class SnapshotOut(msgspec.Struct):
    upto_seq: int
    key_version: int
    ciphertext: bytes
    device_id: uuid.UUID
    created_at: datetime


class UpdatePage(msgspec.Struct):
    snapshot: SnapshotOut | None
    updates: list[UpdateOut]
    head: int
    has_more: bool


class SettingIn(msgspec.Struct, forbid_unknown_fields=True):
    hlc: HLC
    key_version: KeyVersion
    ciphertext: bytes


class SettingOut(msgspec.Struct):
    key: str
    hlc: str
    device_id: uuid.UUID
    key_version: int
    ciphertext: bytes
    updated_at: datetime


class SettingWrite(msgspec.Struct):
    applied: bool  # false: the write was stale and `setting` is the winner it lost to
    setting: SettingOut


class SettingList(msgspec.Struct):
    settings: list[SettingOut]


class Ticket(msgspec.Struct):
    ticket: str
    expires_in: int


class ChunkIn(msgspec.Struct, forbid_unknown_fields=True):
    client_chunk_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    key_version: KeyVersion
    ciphertext: bytes


class ChunksIn(msgspec.Struct, forbid_unknown_fields=True):
    chunks: Annotated[list[ChunkIn], msgspec.Meta(min_length=1)]


class ChunkOut(msgspec.Struct):
    seq: int
    device_id: uuid.UUID
    key_version: int
    ciphertext: bytes


class ChunkPage(msgspec.Struct):
    chunks: list[ChunkOut]
    head: int
    has_more: bool
