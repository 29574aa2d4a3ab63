"""The error tree, rendered as RFC 9457 problem+json; the SDK mirrors the ``type`` slugs.

AppError
 ├── BadRequest            400 bad-request
 │    └── ValidationFailed 400 validation-failed
 ├── Unauthorized          401 unauthorized
 │    ├── InvalidToken     401 invalid-token
 │    ├── InvalidCode      401 invalid-code
 │    └── RefreshReused    401 refresh-token-reused
 ├── Forbidden             403 forbidden
 ├── NotFound              404 not-found
 ├── MethodNotAllowed      405 method-not-allowed
 ├── Conflict              409 conflict
 ├── PayloadTooLarge       413 payload-too-large
 ├── UnsupportedMediaType  415 unsupported-media-type
 ├── RateLimited           429 rate-limited
 └── ServiceUnavailable    503 service-unavailable
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:session-sync:problem:"

log = logging.getLogger("session_sync.errors")


class AppError(Exception):
    """An expected failure with an HTTP status and a stable problem type."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(AppError):
    status, slug, title = 400, "bad-request", "Bad request"


class ValidationFailed(BadRequest):
    slug, title = "validation-failed", "The request body or parameters are invalid"


class Unauthorized(AppError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class InvalidToken(Unauthorized):
    slug, title = "invalid-token", "The token is invalid, expired or revoked"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="session-sync", error="invalid_token"'},
        )


class InvalidCode(Unauthorized):
    slug, title = "invalid-code", "The code is wrong, expired or used up"


class RefreshReused(Unauthorized):
    slug, title = "refresh-token-reused", "A spent refresh token was presented again"


class Forbidden(AppError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, slug, title = 404, "not-found", "No such resource"


class MethodNotAllowed(AppError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(AppError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class PayloadTooLarge(AppError):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class UnsupportedMediaType(AppError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"


class RateLimited(AppError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AppError):
    status, slug, title = 503, "service-unavailable", "A backing service is unavailable"


@functools.cache
def _client_error(status: int) -> type[AppError]:
    """A client error litestar raised that has no type of ours: keep its status."""
    return type("ClientError", (BadRequest,), {"status": status})


_BY_STATUS: dict[int, type[AppError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    503: ServiceUnavailable,
}


def problem_response(request: Request[Any, Any, Any], error: AppError) -> Response[Any]:
    return Response(
        content=error.to_problem(instance=request.url.path),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )


def handle_app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    return problem_response(request, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors (routing, body parsing, size limit) as problem+json."""
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        error: AppError = ValidationFailed(
            _validation_detail(exc.detail, errors), errors=_public_errors(errors)
        )
    elif exc.status_code == 400:
        # Litestar's own 400s are all about the request's shape: malformed JSON and the like.
        error = ValidationFailed(exc.detail)
    else:
        cls = _BY_STATUS.get(exc.status_code)
        if cls is None or cls is RateLimited:
            cls = _client_error(exc.status_code) if exc.status_code < 500 else AppError
        error = cls(exc.detail if exc.status_code < 500 else None)
    headers = dict(getattr(exc, "headers", None) or {})
    error.headers.update({k: v for k, v in headers.items() if k.lower() == "allow"})
    return problem_response(request, error)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", extra={"path": request.url.path})
    return Response(
        content=AppError().to_problem(instance=request.url.path),
        status_code=500,
        media_type=PROBLEM_JSON,
    )


def _validation_detail(detail: str, errors: list[Any]) -> str:
    if errors and isinstance(errors[0], dict) and errors[0].get("message"):
        return str(errors[0]["message"])
    return detail


def _public_errors(errors: list[Any]) -> list[dict[str, str]]:
    """Field errors without echoing the submitted values back."""
    out = []
    for item in errors:
        if isinstance(item, dict):
            out.append({k: str(v) for k, v in item.items() if k in {"key", "message", "source"}})
    return out


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    AppError: handle_app_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
