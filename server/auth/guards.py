"""Request authentication: the ``principal`` dependency every signed-in route takes."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from server.auth.service import AuthService, Principal
from server.errors import Unauthorized


def bearer_token(request: Request[Any, Any, Any]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send an access token as `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": 'Bearer realm="session-sync"'},
        )
    return token.strip()


async def provide_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    service: AuthService = state.auth
    return await service.authenticate(bearer_token(request))


def provide_auth_service(state: State) -> AuthService:
    service: AuthService = state.auth
    return service
