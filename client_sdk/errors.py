"""The SDK's exceptions, mirroring the server's problem+json types slug for slug.

SessionSyncError
 ├── TransportError            the server could not be reached
 ├── DecryptError              a ciphertext failed to authenticate (altered or moved)
 ├── NotSignedIn               no stored tokens; sign in first
 └── ProblemError              the server answered a problem+json error
      ├── BadRequest            bad-request
      │    └── ValidationFailed validation-failed
      ├── Unauthorized          unauthorized
      │    ├── InvalidToken     invalid-token
      │    ├── InvalidCode      invalid-code
      │    └── RefreshReused    refresh-token-reused
      ├── Forbidden             forbidden
      ├── NotFound              not-found
      ├── MethodNotAllowed      method-not-allowed
      ├── Conflict              conflict
      ├── PayloadTooLarge       payload-too-large
      │    └── QuotaExceeded    quota-exceeded
      ├── UnsupportedMediaType  unsupported-media-type
      ├── RateLimited           rate-limited
      ├── ServiceUnavailable    service-unavailable
      └── InternalError         internal
"""

from __future__ import annotations

from typing import Any, ClassVar

TYPE_PREFIX = "urn:session-sync:problem:"


class SessionSyncError(Exception):
    """Every error the SDK raises."""


class TransportError(SessionSyncError):
    pass


class DecryptError(SessionSyncError):
    pass


class NotSignedIn(SessionSyncError):
    pass


class ProblemError(SessionSyncError):
    slug: ClassVar[str] = ""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.type = str(body.get("type", ""))
        self.title = str(body.get("title", ""))
        self.detail = str(body.get("detail") or self.title)
        super().__init__(f"{status} {self.type.removeprefix(TYPE_PREFIX)}: {self.detail}")


class BadRequest(ProblemError):
    slug = "bad-request"


class ValidationFailed(BadRequest):
    slug = "validation-failed"


class Unauthorized(ProblemError):
    slug = "unauthorized"


class InvalidToken(Unauthorized):
    slug = "invalid-token"


class InvalidCode(Unauthorized):
    slug = "invalid-code"


class RefreshReused(Unauthorized):
    slug = "refresh-token-reused"


class Forbidden(ProblemError):
    slug = "forbidden"


class NotFound(ProblemError):
    slug = "not-found"


class MethodNotAllowed(ProblemError):
    slug = "method-not-allowed"


class Conflict(ProblemError):
    slug = "conflict"


class PayloadTooLarge(ProblemError):
    slug = "payload-too-large"


class QuotaExceeded(PayloadTooLarge):
    slug = "quota-exceeded"


class UnsupportedMediaType(ProblemError):
    slug = "unsupported-media-type"


class RateLimited(ProblemError):
    slug = "rate-limited"

    @property
    def retry_after(self) -> float:
        return float(self.body.get("retry_after", 1))


class ServiceUnavailable(ProblemError):
    slug = "service-unavailable"


class InternalError(ProblemError):
    slug = "internal"


def _all(cls: type[ProblemError]) -> list[type[ProblemError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _all(sub))]


BY_SLUG: dict[str, type[ProblemError]] = {c.slug: c for c in _all(ProblemError) if c.slug}


def problem(status: int, body: dict[str, Any], retry_after: str | None = None) -> ProblemError:
    """The exception for a problem+json answer; an unknown type falls back by status."""
    slug = str(body.get("type", "")).removeprefix(TYPE_PREFIX)
    cls = BY_SLUG.get(slug)
    if cls is None:
        cls = InternalError if status >= 500 else BadRequest
    if retry_after is not None:
        body = body | {"retry_after": retry_after}
    return cls(status, body)
