"""The websocket protocol, version 1: frames, their codecs, and the close codes.

Pure data and pure functions; no I/O. Frames are JSON text (ciphertext in base64) or, with
the ``session-sync.v1.msgpack`` subprotocol, msgpack binary (ciphertext as raw bytes). Every
frame is an object whose ``type`` names it. See docs/spec/protocol.md.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Literal

import msgspec

from server.sync.schemas import UpdateIn, UpdateOut

PROTOCOL_VERSION = 1
SUBPROTOCOL_JSON = "session-sync.v1.json"
SUBPROTOCOL_MSGPACK = "session-sync.v1.msgpack"
Ref = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect, to another replica if need be
    FRAME_TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    MALFORMED = 4000  # a frame that does not decode, or an unknown type
    UNAUTHORIZED = 4001  # a bad or expired token, or the device was signed out
    HELLO_TIMEOUT = 4002  # no hello within the first seconds
    UNSUPPORTED_PROTOCOL = 4003
    HEARTBEAT_TIMEOUT = 4008
    TOO_SLOW = 4009  # the send queue overflowed: reconnect and catch up from your cursor
    POLICY = 4029  # too many bad frames


# -- client to server -------------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", tag_field="type", forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=4096)]
    protocol: int = PROTOCOL_VERSION


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    doc: uuid.UUID
    after: Annotated[int, msgspec.Meta(ge=0)] = 0


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    doc: uuid.UUID


class Push(msgspec.Struct, tag="push", tag_field="type", forbid_unknown_fields=True):
    doc: uuid.UUID
    ref: Ref
    updates: Annotated[list[UpdateIn], msgspec.Meta(min_length=1)]


class PresenceIn(msgspec.Struct, tag="presence", tag_field="type", forbid_unknown_fields=True):
    doc: uuid.UUID
    data: Annotated[bytes, msgspec.Meta(max_length=16 * 1024)]


class Ping(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    ref: Ref | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    ref: Ref | None = None


ClientFrame = Hello | Subscribe | Unsubscribe | Push | PresenceIn | Ping | Pong


# -- server to client -------------------------------------------------------------------


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    user_id: uuid.UUID
    device_id: uuid.UUID
    heartbeat: int
    max_frame: int
    protocol: int = PROTOCOL_VERSION


class SnapshotFrame(msgspec.Struct, tag="snapshot", tag_field="type"):
    doc: uuid.UUID
    upto_seq: int
    key_version: int
    ciphertext: bytes


class Updates(msgspec.Struct, tag="updates", tag_field="type"):
    doc: uuid.UUID
    updates: list[UpdateOut]
    head: int


class Subscribed(msgspec.Struct, tag="subscribed", tag_field="type"):
    doc: uuid.UUID
    head: int


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    doc: uuid.UUID
    ref: int
    seqs: list[int]
    head: int


class PresenceOut(msgspec.Struct, tag="presence", tag_field="type"):
    doc: uuid.UUID
    device: uuid.UUID
    data: bytes


class SnapshotRequest(msgspec.Struct, tag="snapshot_request", tag_field="type"):
    doc: uuid.UUID
    head: int
    lease_seconds: int


class Gone(msgspec.Struct, tag="gone", tag_field="type"):
    doc: uuid.UUID
    reason: Literal["deleted"]


class ErrorFrame(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    problem: str  # the problem type slug, as in the HTTP API
    detail: str
    ref: int | None = None
    doc: uuid.UUID | None = None
    retry_after: float | None = None


ServerFrame = (
    Welcome
    | SnapshotFrame
    | Updates
    | Subscribed
    | Ack
    | PresenceOut
    | SnapshotRequest
    | Gone
    | ErrorFrame
    | Ping
    | Pong
)


class Codec:
    """Encodes server frames and decodes client frames in one of the two wire formats."""

    def __init__(self, subprotocol: str | None) -> None:
        self.binary = subprotocol == SUBPROTOCOL_MSGPACK
        if self.binary:
            self._encode = msgspec.msgpack.Encoder().encode
            self._decoder: (
                msgspec.msgpack.Decoder[ClientFrame] | msgspec.json.Decoder[ClientFrame]
            ) = msgspec.msgpack.Decoder(ClientFrame)
        else:
            self._encode = msgspec.json.Encoder().encode
            self._decoder = msgspec.json.Decoder(ClientFrame)

    def encode(self, frame: ServerFrame) -> bytes | str:
        raw = self._encode(frame)
        return raw if self.binary else raw.decode()

    def decode(self, data: bytes | str) -> ClientFrame:
        """Raise ``msgspec.DecodeError`` (or ValidationError) for anything malformed."""
        if isinstance(data, str):
            data = data.encode()
        return self._decoder.decode(data)


def choose_subprotocol(offered: list[str]) -> str | None:
    for name in (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON):
        if name in offered:
            return name
    return None
