"""Request helpers shared by controllers."""

from __future__ import annotations

from typing import Any

from litestar import Request

from server.config import Settings
from server.kit.net import client_address


def client_of(request: Request[Any, Any, Any], settings: Settings) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.proxy_networks)
