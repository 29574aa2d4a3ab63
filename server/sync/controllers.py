"""HTTP and websocket routes of the sync core: documents, updates, snapshots, transcripts,
settings, and the live socket."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, asgi, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
    WebSocketAcceptEvent,
    WebSocketCloseEvent,
    WebSocketSendEvent,
)

from server.auth.guards import provide_principal
from server.auth.service import Principal
from server.kit.http import COMPACT, decode_body, negotiated
from server.kit.websocket import WebSocketProtocol
from server.sync import protocol as p
from server.sync.connection import Connection
from server.sync.repository import row_fields
from server.sync.schemas import (
    ChunkOut,
    ChunkPage,
    ChunksIn,
    DocCreate,
    DocList,
    DocOut,
    PushIn,
    PushOut,
    SettingIn,
    SettingKey,
    SettingList,
    SettingWrite,
    SnapshotIn,
    Ticket,
    UpdateIn,
    UpdatePage,
)
from server.sync.service import TRANSCRIPT, SyncService

After = Annotated[int, Parameter(ge=0, description="Return updates with seq > after")]
Limit = Annotated[int, Parameter(ge=1, le=5000, description="At most this many updates")]


def provide_sync(state: State) -> SyncService:
    service: SyncService = state.sync
    return service


SIGNED_IN = {
    "sync": Provide(provide_sync, sync_to_thread=False),
    "principal": Provide(provide_principal),
}


class DocsController(Controller):
    path = "/v1/docs"
    tags = ["documents"]
    dependencies = SIGNED_IN

    @post("/", status_code=HTTP_201_CREATED)
    async def create(
        self,
        data: JSONBody[DocCreate],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> DocOut:
        """Start syncing a document (opt-in per canvas). Repeating it with the same id is a
        no-op."""
        return await sync.create(principal, data.kind, data.doc_id)

    @get("/")
    async def list_docs(
        self, principal: NamedDependency[Principal], sync: NamedDependency[SyncService]
    ) -> DocList:
        return await sync.list_docs(principal)

    @get("/{doc_id:uuid}")
    async def get_doc(
        self,
        doc_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> DocOut:
        return await sync.get(principal, doc_id)

    @delete("/{doc_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_doc(
        self,
        doc_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> None:
        """Delete the document with its whole log; live subscribers are told it is gone."""
        await sync.delete(principal, doc_id)

    @post("/{doc_id:uuid}/updates", status_code=HTTP_200_OK)
    async def push(
        self,
        doc_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> PushOut:
        """Append a batch (JSON or msgpack); answers seqs in order, after commit. A repeated
        client_update_id answers its original seq and stores nothing."""
        body = await decode_body(request, PushIn)
        return (await sync.push(principal, doc_id, body.updates)).out

    @get("/{doc_id:uuid}/updates")
    async def updates(
        self,
        doc_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
        after: FromQuery[After] = 0,
        limit: FromQuery[Limit] = 1000,
    ) -> Response[Any]:
        """Catch up: the newest snapshot first where it covers `after`, then updates in seq
        order. `Accept: application/msgpack` for the compact binary form."""
        page = await sync.page(principal, doc_id, after, limit)
        return _page_response(request, page, after, limit, lambda: page)

    @put("/{doc_id:uuid}/snapshot", request_max_body_size=100 * 1024 * 1024)
    async def put_snapshot(
        self,
        doc_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> DocOut:
        """Store a snapshot replacing every update up to upto_seq (JSON or msgpack)."""
        body = await decode_body(request, SnapshotIn)
        return await sync.put_snapshot(principal, doc_id, body)

    @get("/{doc_id:uuid}/snapshot")
    async def get_snapshot(
        self,
        doc_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> Response[Any]:
        return negotiated(request, await sync.get_snapshot(principal, doc_id))


class TranscriptsController(Controller):
    path = "/v1/transcripts"
    tags = ["transcripts"]
    dependencies = SIGNED_IN

    @post("/{transcript_id:uuid}/chunks", status_code=HTTP_200_OK)
    async def append(
        self,
        transcript_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> PushOut:
        """Append encrypted chunks to a transcript (a document of kind `transcript`)."""
        body = await decode_body(request, ChunksIn)
        updates = [UpdateIn(c.client_chunk_id, c.key_version, c.ciphertext) for c in body.chunks]
        return (await sync.push(principal, transcript_id, updates, TRANSCRIPT)).out

    @get("/{transcript_id:uuid}/chunks")
    async def read(
        self,
        transcript_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
        after: FromQuery[After] = 0,
        limit: FromQuery[Limit] = 1000,
    ) -> Response[Any]:
        page = await sync.page(principal, transcript_id, after, limit, TRANSCRIPT)

        def chunk_page() -> ChunkPage:
            chunks = [
                ChunkOut(u.seq, u.device_id, u.key_version, u.ciphertext) for u in page.updates
            ]
            return ChunkPage(chunks, page.head, page.has_more)

        return _page_response(request, page, after, limit, chunk_page)


class SettingsController(Controller):
    path = "/v1/settings"
    tags = ["settings"]
    dependencies = SIGNED_IN

    @get("/")
    async def list_settings(
        self, principal: NamedDependency[Principal], sync: NamedDependency[SyncService]
    ) -> SettingList:
        return await sync.settings_list(principal)

    @put("/{key:str}")
    async def put_setting(
        self,
        key: FromPath[SettingKey],
        data: JSONBody[SettingIn],
        principal: NamedDependency[Principal],
        sync: NamedDependency[SyncService],
    ) -> SettingWrite:
        """Last write wins by (hlc, device id). A stale write changes nothing and answers
        the current winner with `applied: false`."""
        return await sync.put_setting(principal, key, data)


class SyncController(Controller):
    path = "/v1/sync"
    tags = ["sync"]

    @post(
        "/ticket", status_code=HTTP_200_OK, dependencies={"principal": Provide(provide_principal)}
    )
    async def ticket(self, principal: NamedDependency[Principal], state: State) -> Ticket:
        """A single-use ticket, valid 30 s, for the websocket's hello frame."""
        ticket: Ticket = await state.tickets.mint(principal)
        return ticket

    @asgi("/", copy_scope=False)
    async def socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The live socket; see docs/spec/protocol.md. Served by uvicorn, the socket reaches
        serve_socket through server.serve.front_door, without the router."""
        await serve_socket(scope["litestar_app"].state, scope, receive, send)


async def serve_socket(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI handler: an idle socket should cost as little as possible
    (bench/idle_connections.py), so nothing of the upgrade request is kept once it is open."""
    if scope["type"] != ScopeType.WEBSOCKET:
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 426,
            "headers": [(b"upgrade", b"websocket")],
        }
        body: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": b"",
            "more_body": False,
        }
        await send(start)
        await send(body)
        return
    offered = [
        part.strip()
        for name, value in scope["headers"]
        if name == b"sec-websocket-protocol"
        for part in value.decode("latin-1").split(",")
    ]
    del scope
    if (await receive())["type"] != "websocket.connect":
        return
    subprotocol = p.choose_subprotocol(offered)
    accept: WebSocketAcceptEvent = {
        "type": "websocket.accept",
        "subprotocol": subprotocol,
        "headers": [],
    }
    await send(accept)
    connection = Connection(
        _Channel(receive, send),
        p.Codec(subprotocol),
        state.settings,
        state.auth,
        state.tickets,
        state.sync,
        state.hub,
    )
    state.sockets.add(connection)
    try:
        await connection.run()
    finally:
        state.sockets.discard(connection)


_compact = msgspec.msgpack.Encoder(uuid_format="bytes").encode


def _page_response(
    request: Request[Any, Any, Any],
    page: UpdatePage,
    after: int,
    limit: int,
    content: Callable[[], Any],
) -> Response[Any]:
    """A catch-up page as JSON, msgpack maps (``content()``), or compact msgpack arrays
    (docs/spec/api.md), with a `Link: <...>; rel="next"` (RFC 8288) while there is more: a
    client may ask for the next page as soon as it has the headers, and decode meanwhile."""
    headers = {}
    if page.has_more:
        if page.updates:
            after = page.updates[-1].seq
        elif page.snapshot is not None:
            after = page.snapshot.upto_seq
        headers["link"] = f'<{request.url.path}?after={after}&limit={limit}>; rel="next"'
    if COMPACT in request.headers.get("accept", ""):
        snap = page.snapshot
        body = _compact(
            [
                page.head,
                page.has_more,
                None
                if snap is None
                else [
                    snap.upto_seq,
                    snap.key_version,
                    snap.ciphertext,
                    snap.device_id,
                    snap.created_at,
                ],
                list(map(row_fields, page.updates)),  # in C: speed is what this form is for
            ]
        )
        return Response(body, media_type=COMPACT, headers=headers)
    return negotiated(request, content(), headers=headers)


class _Channel:
    """An ASGI websocket as the connection's Channel."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self._gone = False
        # Our own protocol (server/kit/websocket.py) can also write without a coroutine.
        protocol = getattr(send, "__self__", None)
        self.send_now: Callable[[bytes | str], bool] = (
            protocol.send_now if isinstance(protocol, WebSocketProtocol) else _cannot
        )

    async def receive(self) -> bytes | str | None:
        if self._gone:
            return None
        message = await self._receive()
        if message["type"] != "websocket.receive":
            self._gone = True
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, data: bytes | str) -> None:
        event: WebSocketSendEvent = (
            {"type": "websocket.send", "text": data, "bytes": None}
            if isinstance(data, str)
            else {"type": "websocket.send", "bytes": data, "text": None}
        )
        await self._send(event)

    async def close(self, code: int, reason: str) -> None:
        if not self._gone:
            event: WebSocketCloseEvent = {"type": "websocket.close", "code": code, "reason": reason}
            await self._send(event)


def _cannot(_data: bytes | str) -> bool:
    return False
