"""One recipe for secrets: prefixed opaque tokens whose HMAC alone is stored, and codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Keyring:
    """Purpose-separated keys derived from the server's secret key."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._cache: dict[tuple[str, int], bytes] = {}

    def derive(self, purpose: str, length: int = 32) -> bytes:
        key = self._cache.get((purpose, length))
        if key is None:
            key = HKDF(
                algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()
            ).derive(self._secret)
            self._cache[(purpose, length)] = key
        return key

    def hmac(self, purpose: str, *parts: str) -> bytes:
        """HMAC-SHA256 of the parts under the purpose's key; parts are length-prefixed."""
        mac = hmac.new(self.derive("hmac:" + purpose), digestmod=hashlib.sha256)
        for part in parts:
            raw = part.encode()
            mac.update(len(raw).to_bytes(4, "big") + raw)
        return mac.digest()


def opaque_token(prefix: str, nbytes: int = 32) -> str:
    """A random token that says what it is, e.g. ``ssr_...`` for a refresh token."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def numeric_code(digits: int = 6) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
