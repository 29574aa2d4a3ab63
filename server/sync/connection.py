"""One websocket connection: its state machine, its bounded send queue, and its document
subscriptions with their cursors. Transport-neutral: it talks to a ``Channel``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import msgspec

from server.auth.service import AuthService, Principal
from server.config import Settings
from server.errors import AppError, Unauthorized
from server.sync import protocol as p
from server.sync.appender import Appended
from server.sync.hub import Hub
from server.sync.service import SyncService
from server.sync.subscription import DocSubscription
from server.sync.tickets import Tickets

log = logging.getLogger("session_sync.sync")

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
MAX_BAD_FRAMES = 10
MAX_IN_FLIGHT = 64  # pushes of one connection waiting for their commit


class Channel(Protocol):
    """What the connection needs of a websocket."""

    async def receive(self) -> bytes | str | None:
        """The next message; None once the peer has gone."""

    async def send(self, data: bytes | str) -> None: ...

    def send_now(self, data: bytes | str) -> bool:
        """Write at once if that needs no waiting; False if it does (then ``send``)."""

    async def close(self, code: int, reason: str) -> None: ...


class State(enum.Enum):
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Closed(Exception):
    def __init__(self, code: p.CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Connection:
    def __init__(
        self,
        channel: Channel,
        codec: p.Codec,
        settings: Settings,
        auth: AuthService,
        tickets: Tickets,
        sync: SyncService,
        hub: Hub,
    ) -> None:
        self.channel, self.codec, self.settings = channel, codec, settings
        self.auth, self.tickets, self.sync, self.hub = auth, tickets, sync, hub
        self.state = State.AUTHENTICATING
        self.principal: Principal | None = None
        self.subscriptions: dict[uuid.UUID, DocSubscription] = {}
        # An idle socket holds no task of its own (memory per socket is a target): a writer
        # runs only while frames wait, and heartbeats are sent by the replica's maintenance.
        self._queue: collections.deque[bytes | str] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._close: Closed | None = None
        self._last_heard = time.monotonic()
        self._bad_frames = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[Any] | None = None
        self._in_flight = 0  # pushes submitted and not yet committed
        self._room: asyncio.Future[None] | None = None  # the reader waits here when full

    @property
    def device_id(self) -> uuid.UUID | None:
        return self.principal.device_id if self.principal else None

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.principal = await self._hello()
            self.state = State.OPEN
            self.send(
                p.Welcome(
                    self.principal.user_id,
                    self.principal.device_id,
                    self.settings.ws_heartbeat,
                    self.settings.ws_max_frame,
                )
            )
            await self._read_forever()
        except Closed as closed:
            self._close = self._close or closed
        except Exception:
            log.exception("websocket connection failed")
            self._close = self._close or Closed(p.CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self.state = State.CLOSING
            for task in list(self._tasks):
                task.cancel()
            for doc_id, sub in list(self.subscriptions.items()):
                await self.hub.leave(doc_id, sub)
            self.subscriptions.clear()
            await self._drain_and_close()
            self.state = State.CLOSED

    def kill(self, code: p.CloseCode, reason: str) -> None:
        """Close from anywhere, without waiting: the reader stops, and run() closes."""
        if self._close is None:
            self._close = Closed(code, reason)
        self.state = State.CLOSING
        for task in list(self._tasks):
            task.cancel()
        self._reader_cancel()

    def _reader_cancel(self) -> None:
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _drain_and_close(self) -> None:
        """Flush what is queued (not for a client too slow to take it), then close; neither
        step may wait on the client for long."""
        closed = self._close or Closed(p.CloseCode.NORMAL, "bye")
        self.hub.stats.closes[closed.code] += 1
        writer = self._writer
        if closed.code == p.CloseCode.TOO_SLOW:
            self._queue.clear()
            if writer is not None:
                writer.cancel()
        if writer is not None and not writer.done():
            try:
                await asyncio.wait_for(writer, CLOSE_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.channel.close(int(closed.code), closed.reason)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ------------------------------------------------------------------------

    def send(self, frame: p.ServerFrame) -> None:
        """Queue a frame; a client whose queue is full is too slow and is disconnected."""
        if self.state not in (State.CLOSING, State.CLOSED):
            self.send_encoded(self.codec.encode(frame))

    def send_encoded(self, data: bytes | str) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if len(self._queue) >= self.settings.ws_send_queue:
            self.kill(p.CloseCode.TOO_SLOW, "send queue full; reconnect and catch up")
            return
        idle = self._writer is None or self._writer.done()
        if idle and not self._queue and self.channel.send_now(data):
            return  # the common case: no task, nothing queued
        self._queue.append(data)
        if idle:
            self._writer = asyncio.create_task(self._write_queued())

    async def drained(self, frames: int) -> None:
        """Return once at most ``frames`` frames wait to be written: a catch-up that reads
        pages faster than the client takes them waits here instead of filling the queue."""
        writer = self._writer
        if len(self._queue) > frames and writer is not None and not writer.done():
            await asyncio.wait({writer})

    async def _write_queued(self) -> None:
        while self._queue:
            await self.channel.send(self._queue.popleft())

    def heartbeat(self, now: float) -> None:
        """Called every heartbeat by the replica: ping, or drop a client gone silent."""
        if self.state is not State.OPEN:
            return
        if now - self._last_heard > 2 * self.settings.ws_heartbeat:
            self.kill(p.CloseCode.HEARTBEAT_TIMEOUT, "no frame for two heartbeats")
        else:
            self.send(p.Ping())

    # -- receiving ----------------------------------------------------------------------

    async def _receive(self) -> bytes | str:
        data = await self.channel.receive()
        if data is None:
            raise Closed(p.CloseCode.NORMAL, "peer left")
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > self.settings.ws_max_frame:
            raise Closed(p.CloseCode.FRAME_TOO_LARGE, "frame too large")
        self._last_heard = time.monotonic()
        return data

    async def _hello(self) -> Principal:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                data = await self._receive()
        except TimeoutError:
            raise Closed(p.CloseCode.HELLO_TIMEOUT, "send hello first") from None
        try:
            frame = self.codec.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Closed(p.CloseCode.MALFORMED, "the first frame must be hello") from None
        if not isinstance(frame, p.Hello):
            raise Closed(p.CloseCode.MALFORMED, "the first frame must be hello")
        if frame.protocol != p.PROTOCOL_VERSION:
            raise Closed(p.CloseCode.UNSUPPORTED_PROTOCOL, f"speak protocol {p.PROTOCOL_VERSION}")
        try:
            if frame.token.startswith(Tickets.PREFIX):
                return await self.tickets.redeem(frame.token)
            return await self.auth.authenticate(frame.token)
        except Unauthorized:
            raise Closed(p.CloseCode.UNAUTHORIZED, "invalid or expired token") from None

    async def _read_forever(self) -> None:
        self._reader_task = asyncio.current_task()
        while True:
            data = await self._receive()
            try:
                frame = self.codec.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._bad_frame(str(exc), _ref_of(data))
                continue
            await self._dispatch(frame)

    def _bad_frame(self, detail: str, ref: int | None = None) -> None:
        self._bad_frames += 1
        if self._bad_frames > MAX_BAD_FRAMES:
            raise Closed(p.CloseCode.POLICY, "too many malformed frames")
        self.send(p.ErrorFrame("validation-failed", detail[:300], ref=ref))

    async def _dispatch(self, frame: p.ClientFrame) -> None:
        match frame:
            case p.Push():
                await self._push(frame)
            case p.Subscribe():
                await self._subscribe(frame)
            case p.Unsubscribe():
                sub = self.subscriptions.pop(frame.doc, None)
                if sub is not None:
                    await self.hub.leave(frame.doc, sub)
            case p.PresenceIn():
                sub = self.subscriptions.get(frame.doc)
                if sub is None:
                    self.send(p.ErrorFrame("not-found", "subscribe first", doc=frame.doc))
                else:
                    sub.share_presence(frame.data)
            case p.Ping():
                self.send(p.Pong(frame.ref))
            case p.Pong():
                pass
            case p.Hello():
                self._bad_frame("already authenticated")

    async def _push(self, frame: p.Push) -> None:
        """Queue the push and read on: its ack is sent when its group commits. Acks of one
        document come in push order; at most MAX_IN_FLIGHT pushes wait, then reading waits."""
        assert self.principal is not None  # noqa: S101 - set before the read loop starts
        try:
            then = functools.partial(self._pushed, frame)
            self.sync.submit(self.principal, frame.doc, frame.updates, then=then)
        except AppError as exc:
            self._refuse(frame, exc)
            return
        self._in_flight += 1
        if self._in_flight >= MAX_IN_FLIGHT:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _pushed(self, frame: p.Push, result: Appended | BaseException) -> None:
        """The push's group committed (called within the group's answer, see Appender)."""
        self._in_flight -= 1
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        if isinstance(result, AppError):
            self._refuse(frame, result)
        elif isinstance(result, BaseException):
            log.error("push failed", exc_info=result)
            self.kill(p.CloseCode.INTERNAL_ERROR, "internal error")
        else:
            out = result.out
            self.send(p.Ack(frame.doc, frame.ref, out.seqs, out.head))
            if out.snapshot_requested:
                self.send(p.SnapshotRequest(frame.doc, out.head, self.settings.snapshot_lease))

    def _refuse(self, frame: p.Push, exc: AppError) -> None:
        retry = exc.headers.get("Retry-After")
        self.send(
            p.ErrorFrame(
                exc.slug,
                str(exc.detail or exc.title),
                ref=frame.ref,
                doc=frame.doc,
                retry_after=float(retry) if retry else None,
            )
        )

    async def _subscribe(self, frame: p.Subscribe) -> None:
        assert self.principal is not None  # noqa: S101 - set before the read loop starts
        if frame.doc in self.subscriptions:
            self.send(p.ErrorFrame("conflict", "subscribed already", doc=frame.doc))
            return
        try:
            await self.sync.authorize(self.principal, frame.doc)
        except AppError as exc:
            self.send(p.ErrorFrame(exc.slug, str(exc.detail or exc.title), doc=frame.doc))
            return
        sub = DocSubscription(self, frame.doc, frame.after)
        self.subscriptions[frame.doc] = sub
        await sub.start()


def _ref_of(data: bytes | str) -> int | None:
    """The `ref` of a frame that failed validation, when it has one, so that the client
    learns which of its pushes was refused."""
    try:
        raw = msgspec.json.decode(data) if isinstance(data, str) else msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return None
    ref = raw.get("ref") if isinstance(raw, dict) else None
    return ref if isinstance(ref, int) and not isinstance(ref, bool) else None
