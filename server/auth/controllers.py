"""HTTP routes of sign-in, tokens and the signed-in user's devices."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from server.auth.guards import provide_auth_service, provide_principal
from server.auth.schemas import (
    Accepted,
    DeviceList,
    EmailStart,
    EmailVerify,
    KdfParams,
    Me,
    PublicKey,
    RefreshGrant,
    TokenPair,
)
from server.auth.service import AuthService, Principal
from server.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from server.kit.http import client_of


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]
    dependencies = {"auth": Provide(provide_auth_service, sync_to_thread=False)}

    @post("/email/start", status_code=HTTP_202_ACCEPTED)
    async def email_start(
        self,
        data: JSONBody[EmailStart],
        request: Request[Any, Any, Any],
        state: State,
        auth: NamedDependency[AuthService],
    ) -> Accepted:
        """Mail a one-time code. The answer is the same whether or not the address has an
        account; a new address gets its account when the code is verified."""
        await auth.start_email(data.email, client_of(request, state.settings))
        return Accepted()

    @post("/email/verify", status_code=HTTP_200_OK)
    async def email_verify(
        self,
        data: JSONBody[EmailVerify],
        request: Request[Any, Any, Any],
        state: State,
        auth: NamedDependency[AuthService],
    ) -> TokenPair:
        """Exchange a code for tokens of a new device."""
        client = client_of(request, state.settings)
        return await auth.verify_email(data.email, data.code, data.device_name, client)

    @post("/token", status_code=HTTP_200_OK)
    async def token(
        self, request: Request[Any, Any, Any], auth: NamedDependency[AuthService]
    ) -> TokenPair:
        """OAuth 2 token endpoint (JSON or form body): the `refresh_token` grant."""
        grant = await _read_grant(request)
        return await auth.refresh(grant.refresh_token)

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        dependencies={"principal": Provide(provide_principal)},
    )
    async def logout(
        self, principal: NamedDependency[Principal], auth: NamedDependency[AuthService]
    ) -> None:
        """Sign this device out: its access and refresh tokens stop working."""
        await auth.revoke(principal, principal.device_id, "logout")


class WellKnownController(Controller):
    path = "/.well-known"
    tags = ["auth"]

    @get("/jwks.json")
    async def jwks(self, state: State) -> dict[str, Any]:
        """The public keys that verify access tokens (current and previous generation)."""
        keys: dict[str, Any] = state.jwt.jwks()
        return keys


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]
    dependencies = {
        "auth": Provide(provide_auth_service, sync_to_thread=False),
        "principal": Provide(provide_principal),
    }

    @get("/")
    async def me(
        self, principal: NamedDependency[Principal], auth: NamedDependency[AuthService]
    ) -> Me:
        return await auth.me(principal)

    @put("/kdf")
    async def set_kdf(
        self,
        data: JSONBody[KdfParams],
        principal: NamedDependency[Principal],
        auth: NamedDependency[AuthService],
    ) -> KdfParams:
        """Record how clients stretch the account secret (once; the first device does it)."""
        return await auth.set_kdf(principal, data)

    @put("/public-key")
    async def set_public_key(
        self,
        data: JSONBody[PublicKey],
        principal: NamedDependency[Principal],
        auth: NamedDependency[AuthService],
    ) -> PublicKey:
        """Publish the user's X25519 public key, to which team room keys are wrapped."""
        return await auth.set_public_key(principal, data)

    @get("/devices")
    async def devices(
        self, principal: NamedDependency[Principal], auth: NamedDependency[AuthService]
    ) -> DeviceList:
        return await auth.devices(principal)

    @delete("/devices/{device_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def revoke_device(
        self,
        device_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        auth: NamedDependency[AuthService],
    ) -> None:
        """Sign one of your devices out; its tokens stop working on every replica."""
        await auth.revoke(principal, device_id, "revoked")


async def _read_grant(request: Request[Any, Any, Any]) -> RefreshGrant:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/json":
            raw: Any = msgspec.json.decode(await request.body())
        elif content_type == "application/x-www-form-urlencoded":
            raw = dict(await request.form())
        else:
            raise UnsupportedMediaType("send application/json or a form")
        if not isinstance(raw, dict):
            raise ValidationFailed("the body must be an object")
        if raw.get("grant_type") not in {"refresh_token"}:
            raise BadRequest("unsupported grant_type", error="unsupported_grant_type")
        return msgspec.convert(raw, RefreshGrant)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationFailed(str(exc)) from exc
