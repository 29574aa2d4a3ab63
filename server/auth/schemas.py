"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class EmailStart(msgspec.Struct, forbid_unknown_fields=True):
    email: Email


class EmailVerify(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]
    device_name: DeviceName


class RefreshGrant(msgspec.Struct):
    """OAuth clients send extra parameters (client_id, scope); they are ignored."""

    grant_type: Literal["refresh_token"]
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Accepted(msgspec.Struct):
    status: str = "accepted"


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: uuid.UUID
    device_id: uuid.UUID
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


class KdfParams(msgspec.Struct, forbid_unknown_fields=True):
    """How the client stretches its account secret; chosen by the first device, then fixed."""

    alg: Literal["scrypt"]
    salt: Annotated[bytes, msgspec.Meta(min_length=16, max_length=64)]
    n: Annotated[int, msgspec.Meta(ge=2**14, le=2**22)]
    r: Annotated[int, msgspec.Meta(ge=1, le=32)]
    p: Annotated[int, msgspec.Meta(ge=1, le=16)]


class PublicKey(msgspec.Struct, forbid_unknown_fields=True):
    public_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    alg: Literal["x25519"] = "x25519"


class Me(msgspec.Struct):
    user_id: uuid.UUID
    email: str
    created_at: datetime
    device_id: uuid.UUID
    kdf: KdfParams | None = None
    public_key: bytes | None = None


class DeviceOut(msgspec.Struct):
    device_id: uuid.UUID
    name: str
    created_at: datetime
    last_seen_at: datetime
    current: bool


class DeviceList(msgspec.Struct):
    devices: list[DeviceOut]
