"""The httpx-shaped clients: sign-in, tokens with silent refresh, and the REST API.

``AsyncClient`` does the work; ``Client`` runs one in a private event loop for code that is
not async. Payloads travel as msgpack (ciphertext as raw bytes)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import msgspec

from client_sdk import config
from client_sdk.errors import InvalidToken, NotSignedIn, TransportError, problem
from client_sdk.keychain import FileKeychain, Keychain

MSGPACK = "application/msgpack"
COMPACT = "application/vnd.session-sync.compact+msgpack"
TOKENS = "tokens"
REFRESH_MARGIN = 30.0


class PageSnapshot(msgspec.Struct, array_like=True, gc=False):
    upto_seq: int
    key_version: int
    ciphertext: bytes
    device_id: bytes  # 16 bytes
    created_at: datetime


class PageRow(msgspec.Struct, array_like=True, gc=False):
    seq: int
    device_id: bytes  # 16 bytes
    key_version: int
    ciphertext: bytes


class Page(msgspec.Struct, array_like=True, gc=False):
    """A catch-up page in the compact form (docs/spec/api.md): decoded in C, without the
    member names and UUID text of the map form."""

    head: int
    has_more: bool
    snapshot: PageSnapshot | None
    updates: list[PageRow]  # `rows` in the spec; named as in the map form

    @property
    def last(self) -> int:
        """The seq this page brings the reader up to (where the next page starts)."""
        seq = self.updates[-1].seq if self.updates else 0
        return max(seq, self.snapshot.upto_seq if self.snapshot else 0)


_decode_page = msgspec.msgpack.Decoder(Page).decode


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float
    user_id: str
    device_id: str

    @classmethod
    def from_grant(cls, body: dict[str, Any]) -> Tokens:
        return cls(
            body["access_token"],
            body["refresh_token"],
            time.time() + float(body["expires_in"]),
            str(body["user_id"]),
            str(body["device_id"]),
        )


class AsyncClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        state_dir: str | None = None,
        keychain: Keychain | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = config.base_url(base_url)
        self.state_dir = config.state_dir(state_dir)
        self.keychain = keychain or FileKeychain(self.state_dir / "keychain.json")
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout)
        self._refreshing = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- tokens -------------------------------------------------------------------------

    @property
    def tokens(self) -> Tokens | None:
        raw = self.keychain.get(TOKENS)
        return Tokens(**json.loads(raw)) if raw else None

    def _save(self, tokens: Tokens) -> None:
        self.keychain.set(TOKENS, json.dumps(asdict(tokens)))

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it is about to expire."""
        tokens = self.tokens
        if tokens is None:
            raise NotSignedIn("sign in first")
        if tokens.expires_at - time.time() < REFRESH_MARGIN:
            tokens = await self.refresh(tokens.access_token)
        return tokens.access_token

    async def refresh(self, stale_access: str | None = None) -> Tokens:
        """Rotate the refresh token, once even when many callers ask at the same time: a
        refresh token presented twice signs the device out."""
        async with self._refreshing:
            tokens = self.tokens
            if tokens is None:
                raise NotSignedIn("sign in first")
            if stale_access is not None and tokens.access_token != stale_access:
                return tokens  # another caller refreshed meanwhile
            body = await self._call(
                "POST",
                "/v1/auth/token",
                json={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
                auth=False,
            )
            fresh = Tokens.from_grant(body)
            self._save(fresh)
            return fresh

    # -- sign-in and the signed-in user -------------------------------------------------

    async def start_email_login(self, email: str) -> None:
        await self._call("POST", "/v1/auth/email/start", json={"email": email}, auth=False)

    async def verify_email(self, email: str, code: str, device_name: str) -> Tokens:
        body = await self._call(
            "POST",
            "/v1/auth/email/verify",
            json={"email": email, "code": code, "device_name": device_name},
            auth=False,
        )
        tokens = Tokens.from_grant(body)
        self._save(tokens)
        return tokens

    async def logout(self) -> None:
        try:
            await self._call("POST", "/v1/auth/logout")
        finally:
            self.keychain.delete(TOKENS)

    async def me(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/me")

    async def devices(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/me/devices"))["devices"])

    async def revoke_device(self, device_id: str) -> None:
        await self._call("DELETE", f"/v1/me/devices/{device_id}")

    async def set_kdf(self, params: dict[str, Any]) -> dict[str, Any]:
        body = params | {"salt": _b64(params["salt"])}
        return await self._call("PUT", "/v1/me/kdf", json=body)

    async def set_public_key(self, public_key: bytes) -> None:
        await self._call("PUT", "/v1/me/public-key", json={"public_key": _b64(public_key)})

    # -- documents and the log ----------------------------------------------------------

    async def create_doc(self, kind: str, doc_id: uuid.UUID | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind}
        if doc_id is not None:
            body["doc_id"] = str(doc_id)
        return await self._call("POST", "/v1/docs", json=body)

    async def list_docs(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/docs"))["docs"])

    async def get_doc(self, doc_id: uuid.UUID) -> dict[str, Any]:
        return await self._call("GET", f"/v1/docs/{doc_id}")

    async def delete_doc(self, doc_id: uuid.UUID) -> None:
        await self._call("DELETE", f"/v1/docs/{doc_id}")

    async def push(self, doc_id: uuid.UUID, updates: list[dict[str, Any]]) -> dict[str, Any]:
        """Append ``[{client_update_id, key_version, ciphertext: bytes}]``."""
        return await self._call("POST", f"/v1/docs/{doc_id}/updates", packed={"updates": updates})

    async def pull(self, doc_id: uuid.UUID, after: int, limit: int = 1000) -> dict[str, Any]:
        return await self._call(
            "GET", f"/v1/docs/{doc_id}/updates", params={"after": after, "limit": limit}
        )

    async def pull_page(self, doc_id: uuid.UUID, after: int, limit: int = 5000) -> Page:
        """The same read as ``pull``, in the compact form."""
        response = await self._request(
            "GET",
            f"/v1/docs/{doc_id}/updates",
            params={"after": after, "limit": limit},
            accept=COMPACT,
        )
        return _decode_page(response.content)

    async def put_snapshot(
        self, doc_id: uuid.UUID, upto_seq: int, key_version: int, ciphertext: bytes
    ) -> dict[str, Any]:
        body = {"upto_seq": upto_seq, "key_version": key_version, "ciphertext": ciphertext}
        return await self._call("PUT", f"/v1/docs/{doc_id}/snapshot", packed=body)

    async def append_chunks(
        self, transcript_id: uuid.UUID, chunks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return await self._call(
            "POST", f"/v1/transcripts/{transcript_id}/chunks", packed={"chunks": chunks}
        )

    async def read_chunks(
        self, transcript_id: uuid.UUID, after: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self._call(
            "GET",
            f"/v1/transcripts/{transcript_id}/chunks",
            params={"after": after, "limit": limit},
        )

    async def list_settings(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/settings"))["settings"])

    async def put_setting(
        self, key: str, hlc: str, key_version: int, ciphertext: bytes
    ) -> dict[str, Any]:
        body = {"hlc": hlc, "key_version": key_version, "ciphertext": _b64(ciphertext)}
        return await self._call("PUT", f"/v1/settings/{key}", json=body)

    async def ticket(self) -> str:
        return str((await self._call("POST", "/v1/sync/ticket"))["ticket"])

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        """``_request``, its answer decoded as an object."""
        return _decode(await self._request(method, path, **options))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        packed: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        accept: str = f"{MSGPACK}, application/json",
    ) -> httpx.Response:
        """One request: a refresh and one retry on an expired token, and the server's
        problem+json raised as the matching exception."""
        for attempt in (1, 2):
            headers = {"Accept": accept}
            if auth:
                headers["Authorization"] = f"Bearer {await self.access_token()}"
            content = None
            if packed is not None:
                content = msgspec.msgpack.encode(packed)
                headers["Content-Type"] = MSGPACK
            try:
                response = await self._http.request(
                    method, path, json=json, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                raise TransportError(f"{self.base_url}: {exc}") from exc
            if response.status_code < 400:
                return response
            error = problem(
                response.status_code, _decode(response), response.headers.get("retry-after")
            )
            if auth and attempt == 1 and type(error) is InvalidToken and self.tokens is not None:
                await self.refresh(headers["Authorization"].removeprefix("Bearer "))
                continue
            raise error
        raise AssertionError("unreachable")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _decode(response: httpx.Response) -> dict[str, Any]:
    """The body as an object (empty for no body)."""
    media = response.headers.get("content-type", "")
    body: Any = None
    if response.content and media.startswith(MSGPACK):
        body = msgspec.msgpack.decode(response.content)
    elif response.content and "json" in media:
        body = response.json()
    return body if isinstance(body, dict) else {}


class Client:
    """``AsyncClient`` for synchronous code: the same methods, each run to completion on a
    private event loop in a background thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._async: AsyncClient = self._portal.call(lambda: _make(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(lambda: attr(*args, **kwargs))

        return call

    def close(self) -> None:
        self._portal.call(self._async.aclose)
        self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(*args: Any, **kwargs: Any) -> AsyncClient:
    return AsyncClient(*args, **kwargs)
