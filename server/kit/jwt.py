"""Access tokens: EdDSA JWTs with a checked type, audience and issuer, and their JWKS.

The Ed25519 signing keys are derived from the secret key per *generation*, so every replica
holds the same keys without storing them; raising ``jwt_key_generation`` rotates, and the
previous generation keeps verifying until the tokens it signed have expired.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from server.kit.crypto import Keyring

ALGORITHM = "EdDSA"
AUDIENCE = "session-sync"
HEADER_TYPE = "at+jwt"  # RFC 9068


class TokenError(Exception):
    """The token is malformed, forged, expired, or of the wrong type, audience or issuer."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    device_id: uuid.UUID
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class JWTKeys:
    def __init__(self, keyring: Keyring, generation: int, issuer: str) -> None:
        self.issuer = issuer
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._current = ""
        for gen in (generation, generation - 1):
            if gen < 1:
                continue
            private = Ed25519PrivateKey.from_private_bytes(keyring.derive(f"jwt:ed25519:{gen}"))
            raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            kid = f"g{gen}-{_b64(hashlib.sha256(raw).digest()[:9])}"
            self._keys[kid] = private
            self._current = self._current or kid

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": ALGORITHM,
                    "use": "sig",
                    "kid": kid,
                    "x": _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
                }
                for kid, key in self._keys.items()
            ]
        }

    def issue_access(
        self, user_id: uuid.UUID, device_id: uuid.UUID, now: datetime, ttl: int
    ) -> str:
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "sid": str(device_id),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=ttl)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self._current, "typ": HEADER_TYPE}
        return jwt.encode(claims, self._keys[self._current], ALGORITHM, headers=headers)

    def verify_access(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid")))
            if key is None or header.get("typ") != HEADER_TYPE:
                raise TokenError("unknown key or wrong token type")
            claims = jwt.decode(
                token,
                key.public_key(),
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
            )
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                device_id=uuid.UUID(claims["sid"]),
                expires_at=int(claims["exp"]),
            )
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            raise TokenError(str(exc)) from exc
