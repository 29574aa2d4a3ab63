"""Client-side encryption: the key hierarchy, the ciphertext envelope, and room-key wrapping.

Every byte is specified in docs/spec/envelope.md, with test vectors in
docs/spec/test-vectors.json. Nothing here ever leaves the client in the clear.
"""

from __future__ import annotations

import base64
import enum
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client_sdk.errors import DecryptError

ENVELOPE_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 2 + NONCE_SIZE
SECRET_SIZE = 32
DEFAULT_SCRYPT = {"n": 2**17, "r": 8, "p": 1}  # 128 MiB, about half a second


class Alg(enum.IntEnum):
    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2


class Kind(enum.StrEnum):
    """What a ciphertext is; part of its associated data, so it cannot pose as another."""

    UPDATE = "update"
    SNAPSHOT = "snapshot"
    CHUNK = "chunk"
    SETTING = "setting"
    PRESENCE = "presence"


def associated_data(kind: Kind, scope: bytes, key_version: int, header: bytes) -> bytes:
    """``session/v1 0x00 kind 0x00 len(scope):u16 scope key_version:u32 header``."""
    if len(scope) > 0xFFFF:
        raise ValueError("scope too long")
    return b"".join(
        [
            b"session/v1\x00",
            kind.value.encode(),
            b"\x00",
            len(scope).to_bytes(2, "big"),
            scope,
            key_version.to_bytes(4, "big"),
            header,
        ]
    )


def doc_scope(doc_id: uuid.UUID) -> bytes:
    return doc_id.bytes


def setting_scope(key: str) -> bytes:
    return key.encode()


def _aead(alg: Alg, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if alg is Alg.AES_256_GCM else ChaCha20Poly1305(key)


def seal(
    key: bytes,
    plaintext: bytes,
    *,
    kind: Kind,
    scope: bytes,
    key_version: int,
    alg: Alg = Alg.AES_256_GCM,
    nonce: bytes | None = None,
) -> bytes:
    """``version:u8 alg:u8 nonce:12 ciphertext||tag:16``, the AAD binding it in place."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 12 bytes")
    header = bytes([ENVELOPE_VERSION, alg])
    aad = associated_data(kind, scope, key_version, header)
    return header + nonce + _aead(alg, key).encrypt(nonce, plaintext, aad)


def open_envelope(
    key: bytes, envelope: bytes, *, kind: Kind, scope: bytes, key_version: int
) -> bytes:
    """The plaintext, or DecryptError if the envelope was altered, moved or mislabelled."""
    if len(envelope) < HEADER_SIZE + TAG_SIZE:
        raise DecryptError("ciphertext too short to be an envelope")
    version, alg_byte = envelope[0], envelope[1]
    if version != ENVELOPE_VERSION:
        raise DecryptError(f"unknown envelope version {version}")
    try:
        alg = Alg(alg_byte)
    except ValueError:
        raise DecryptError(f"unknown algorithm {alg_byte}") from None
    nonce, body = envelope[2:HEADER_SIZE], envelope[HEADER_SIZE:]
    aad = associated_data(kind, scope, key_version, envelope[:2])
    try:
        return _aead(alg, key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptError(
            "ciphertext does not authenticate: altered, moved to another document or kind, "
            "or labelled with another key version"
        ) from None


# -- the key hierarchy ------------------------------------------------------------------


def new_account_secret() -> bytes:
    return os.urandom(SECRET_SIZE)


def recovery_code(secret: bytes) -> str:
    """The account secret as 13 groups of 4 base32 letters, shown once to the user."""
    text = base64.b32encode(secret).decode().rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_recovery_code(code: str) -> bytes:
    text = "".join(ch for ch in code.upper() if ch.isalnum())
    try:
        secret = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise ValueError("not a recovery code") from None
    if len(secret) != SECRET_SIZE:
        raise ValueError("not a recovery code")
    return secret


def hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


@dataclass(frozen=True)
class KdfParams:
    salt: bytes
    n: int = DEFAULT_SCRYPT["n"]
    r: int = DEFAULT_SCRYPT["r"]
    p: int = DEFAULT_SCRYPT["p"]
    alg: str = "scrypt"

    @classmethod
    def fresh(
        cls, n: int = DEFAULT_SCRYPT["n"], r: int = DEFAULT_SCRYPT["r"], p: int = 1
    ) -> KdfParams:
        return cls(salt=os.urandom(16), n=n, r=r, p=p)


class AccountKeys:
    """Keys derived from the account secret: scrypt once, then HKDF per purpose."""

    def __init__(self, master: bytes) -> None:
        self._master = master

    @classmethod
    def derive(cls, secret: bytes, kdf: KdfParams) -> AccountKeys:
        if kdf.alg != "scrypt":
            raise ValueError(f"unsupported KDF {kdf.alg}")
        master = Scrypt(salt=kdf.salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(secret)
        return cls(master)

    def doc_key(self, doc_id: uuid.UUID) -> bytes:
        """The key of a personal document (key version 0)."""
        return hkdf(self._master, b"session/v1/doc:" + doc_id.bytes)

    def settings_key(self) -> bytes:
        return hkdf(self._master, b"session/v1/settings")

    def identity(self) -> X25519PrivateKey:
        """The user's X25519 key pair; its public half is published for team rooms."""
        return X25519PrivateKey.from_private_bytes(hkdf(self._master, b"session/v1/x25519"))

    def public_key(self) -> bytes:
        return self.identity().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# -- room keys for team rooms -----------------------------------------------------------


def _wrap_key(shared: bytes, eph: bytes, recipient: bytes, doc_id: uuid.UUID, kv: int) -> bytes:
    info = b"session/v1/wrap:" + doc_id.bytes + kv.to_bytes(4, "big") + eph + recipient
    return hkdf(shared, info)


def wrap_room_key(
    room_key: bytes,
    recipient_public: bytes,
    doc_id: uuid.UUID,
    key_version: int,
    ephemeral: X25519PrivateKey | None = None,
) -> bytes:
    """``0x01 ephemeral_public:32 nonce:12 ciphertext||tag:48`` for one member."""
    ephemeral = ephemeral or X25519PrivateKey.generate()
    eph = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _wrap_key(shared, eph, recipient_public, doc_id, key_version)
    nonce = bytes(NONCE_SIZE)  # the key is used once: a fresh ephemeral key per wrap
    return (
        b"\x01" + eph + nonce + ChaCha20Poly1305(key).encrypt(nonce, room_key, b"session/v1/wrap")
    )


def unwrap_room_key(
    identity: X25519PrivateKey, envelope: bytes, doc_id: uuid.UUID, key_version: int
) -> bytes:
    if len(envelope) != 1 + 32 + NONCE_SIZE + 32 + TAG_SIZE or envelope[0] != 1:
        raise DecryptError("not a wrapped room key")
    eph, nonce, body = envelope[1:33], envelope[33:45], envelope[45:]
    mine = identity.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = identity.exchange(X25519PublicKey.from_public_bytes(eph))
    key = _wrap_key(shared, eph, mine, doc_id, key_version)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, b"session/v1/wrap")
    except InvalidTag:
        raise DecryptError("the room key was not wrapped for this key pair") from None
