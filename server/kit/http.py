"""Request helpers shared by controllers: the client's address and body formats."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from server.config import Settings
from server.errors import UnsupportedMediaType, ValidationFailed
from server.kit.net import client_address

MSGPACK = "application/msgpack"
COMPACT = "application/vnd.session-sync.compact+msgpack"  # catch-up pages as arrays
T = TypeVar("T")


def client_of(request: Request[Any, Any, Any], settings: Settings) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.proxy_networks)


async def decode_body(request: Request[Any, Any, Any], kind: type[T]) -> T:
    """A JSON (ciphertext in base64) or msgpack (raw bytes) body, validated as ``kind``."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    try:
        if media in ("application/json", ""):
            return msgspec.json.decode(body, type=kind)
        if media in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack"):
            return msgspec.msgpack.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationFailed(str(exc)) from exc
    raise UnsupportedMediaType(f"send application/json or {MSGPACK}")


def wants_msgpack(request: Request[Any, Any, Any]) -> bool:
    return MSGPACK in request.headers.get("accept", "")


def negotiated(
    request: Request[Any, Any, Any],
    content: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """JSON by default; msgpack, a third smaller for ciphertext, when the client accepts it."""
    if wants_msgpack(request):
        return Response(
            msgspec.msgpack.encode(content), status_code=status, media_type=MSGPACK, headers=headers
        )
    return Response(content, status_code=status, headers=headers)
