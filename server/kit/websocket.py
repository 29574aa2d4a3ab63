"""A lean ASGI websocket protocol for uvicorn (``uvicorn.Config(ws=WebSocketProtocol)``).

RFC 6455 without extensions, written for many idle sockets: an open socket holds this
object, its transport and nothing else until a message arrives (uvicorn's own
implementations keep the parsed upgrade request, a handshake response, an ``asyncio.Queue``,
an ``Event`` and a frame parser per socket: 19 KiB; see docs/benchmarks.md). Everything the
ASGI websocket spec asks of a server is here: the upgrade, ``accept`` with a subprotocol,
a 403 for a socket closed before ``accept``, text and binary messages (fragmented or not),
ping/pong, the closing handshake, ``websocket.disconnect`` with the peer's code, back
pressure both ways and uvicorn's shutdown (close code 1012).

Not covered: permessage-deflate (sync frames are ciphertext, which does not compress) and
the websocket denial-response extension.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import struct
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

log = logging.getLogger("session_sync.websocket")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_REQUEST = 16 * 1024  # an upgrade request's head
_CLOSE_TIMEOUT = 10.0  # how long a sent close waits for the peer's
_INBOX_HIGH = 16  # messages waiting for the app before reading pauses

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (CONT, TEXT, BINARY)
_CONTROL = (CLOSE, PING, PONG)
# Close codes a peer may send (RFC 6455 7.4.1 and 7.4.2; 1005, 1006 and 1015 never travel).
_SENDABLE = {*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)}

# Connection phases.
_REQUEST, _HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(5)


# The sockets holding writes made inside ``corked()``, in the task that entered it.
_held: ContextVar[list[WebSocketProtocol] | None] = ContextVar("websocket_held", default=None)


@contextlib.contextmanager
def corked() -> Iterator[None]:
    """Hold what this task writes to any socket until the block ends, then send each
    socket's in one system call: a writer's acks and the updates committed in the same
    group are one segment instead of one each. The block must not wait on anything."""
    if _held.get() is not None:
        yield
        return
    held: list[WebSocketProtocol] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        for protocol in held:
            protocol._flush()


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())


def _http_response(status: str, body: str, headers: tuple[bytes, ...] = ()) -> bytes:
    data = body.encode()
    lines = [
        b"HTTP/1.1 " + status.encode(),
        b"Connection: close",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: " + str(len(data)).encode(),
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + data


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_accept",
        "_app",
        "_app_state",
        "_buf",
        "_close_timer",
        "_connections",
        "_default_headers",
        "_drain",
        "_frag_op",
        "_frags",
        "_gone",
        "_inbox",
        "_loop",
        "_max_size",
        "_out",
        "_phase",
        "_read_paused",
        "_root_path",
        "_scope",
        "_tasks",
        "_transport",
        "_waiter",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()  # pragma: no cover - uvicorn loads it before serving
        self._app: Callable[..., Any] = config.loaded_app
        self._max_size: int = config.ws_max_size
        self._root_path: str = config.root_path
        self._app_state = app_state
        self._connections: set[Any] = server_state.connections
        self._tasks: set[asyncio.Task[None]] = server_state.tasks
        self._default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        self._loop = _loop or asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._phase = _REQUEST
        self._buf = bytearray()
        self._accept = b""  # Sec-WebSocket-Accept, until the app accepts
        self._scope: dict[str, Any] | None = None  # handed to the app, then dropped
        self._inbox: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None  # the app waiting in receive()
        self._drain: asyncio.Future[None] | None = None  # set while writing is paused
        self._out: list[bytes] | None = None  # held by corked(), not yet sent
        self._read_paused = False
        self._gone = False  # websocket.disconnect has been queued for the app
        self._frag_op = 0  # opcode of a fragmented message in progress
        self._frags: list[bytes] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._phase = _CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._disconnect(1006)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def data_received(self, data: bytes) -> None:
        if self._phase == _CLOSED:
            return
        self._buf += data
        try:
            if self._phase == _REQUEST:
                self._read_request()
            if self._phase >= _OPEN:
                self._read_frames()
        except _ProtocolError as error:
            self._fail(error.code, error.reason)

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the peer and the app (1012, service restart)."""
        if self._phase == _OPEN:
            self._write(frame(CLOSE, close_payload(1012, "server restarting")))
        elif self._phase in (_REQUEST, _HANDSHAKE):
            self._write(_http_response("503 Service Unavailable", "server restarting"))
        self._disconnect(1012)
        self._close_transport()

    # -- the upgrade request ------------------------------------------------------------

    def _read_request(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_REQUEST:
                self._reject("431 Request Header Fields Too Large", "request head too large")
            return
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                self._reject("400 Bad Request", "malformed header line")
                return
            headers.append((name.strip().lower(), value.strip()))
        fields = dict(headers)
        if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
            self._reject("400 Bad Request", "a websocket upgrade is a GET over HTTP/1.1")
            return
        if b"websocket" not in _tokens(fields.get(b"upgrade", b"")) or b"upgrade" not in _tokens(
            fields.get(b"connection", b"")
        ):
            self._reject("400 Bad Request", "missing Upgrade: websocket / Connection: Upgrade")
            return
        if fields.get(b"sec-websocket-version") != b"13":
            self._reject(
                "426 Upgrade Required",
                "unsupported websocket version",
                b"Sec-WebSocket-Version: 13",
            )
            return
        key = fields.get(b"sec-websocket-key", b"")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            self._reject("400 Bad Request", "invalid Sec-WebSocket-Key")
            return
        self._accept = accept_key(key)
        self._start_app(parts[1], headers)

    def _start_app(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        transport = cast(asyncio.Transport, self._transport)  # set by connection_made
        raw_path, _, query = target.partition(b"?")
        subprotocols = [
            token.strip()
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for token in value.decode("latin-1").split(",")
            if token.strip()
        ]
        self._scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": self._root_path,
            "path": self._root_path + unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self._app_state.copy(),
        }
        self._phase = _HANDSHAKE
        self._pause_reading()  # nothing more is read until the app accepts
        self._inbox.append({"type": "websocket.connect"})
        task = self._loop.create_task(self._run_app())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reject(self, status: str, reason: str, *headers: bytes) -> None:
        self._write(_http_response(status, reason, headers))
        self._phase = _CLOSED
        self._disconnect(1006)
        self._close_transport()

    # -- frames from the peer -----------------------------------------------------------

    def _read_frames(self) -> None:
        buf = self._buf
        while len(buf) >= 2 and self._phase in (_OPEN, _CLOSING):
            b0, b1 = buf[0], buf[1]
            if b0 & 0x70:
                raise _ProtocolError(1002, "reserved bits set")
            if not b1 & 0x80:
                raise _ProtocolError(1002, "client frames must be masked")
            opcode, fin, length = b0 & 0x0F, b0 & 0x80, b1 & 0x7F
            if opcode not in _DATA and opcode not in _CONTROL:
                raise _ProtocolError(1002, "unknown opcode")
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                (length,) = struct.unpack_from("!H", buf, 2)
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buf, 2)
                offset = 10
            if opcode in _CONTROL and (length > 125 or not fin):
                raise _ProtocolError(1002, "control frames are short and final")
            pending = sum(map(len, self._frags)) if self._frags else 0
            if pending + length > self._max_size:
                raise _ProtocolError(1009, "message too big")
            end = offset + 4 + length
            if len(buf) < end:
                return
            payload = apply_mask(bytes(buf[offset + 4 : end]), bytes(buf[offset : offset + 4]))
            del buf[:end]
            if opcode in _CONTROL:
                self._on_control(opcode, payload)
            else:
                self._on_data(opcode, bool(fin), payload)

    def _on_data(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == CONT:
            if self._frags is None:
                raise _ProtocolError(1002, "continuation without a message")
            self._frags.append(payload)
            if not fin:
                return
            opcode, payload = self._frag_op, b"".join(self._frags)
            self._frags = None
        elif self._frags is not None:
            raise _ProtocolError(1002, "a new message inside a fragmented one")
        elif not fin:
            self._frag_op, self._frags = opcode, [payload]
            return
        if self._phase != _OPEN:
            return  # past our close: what the peer still sends is dropped
        if opcode == TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "invalid UTF-8 in a text message") from None
            self._deliver({"type": "websocket.receive", "text": text})
        else:
            self._deliver({"type": "websocket.receive", "bytes": payload})

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            if self._phase == _OPEN:
                self._write(frame(PONG, payload))
        elif opcode == CLOSE:
            code, reason = _parse_close(payload)
            if self._phase == _OPEN:  # the peer starts the closing handshake: answer it
                self._write(frame(CLOSE, payload[:2]))
            self._phase = _CLOSED
            self._disconnect(code, reason)
            self._close_transport()

    def _fail(self, code: int, reason: str) -> None:
        if self._phase == _OPEN:
            self._write(frame(CLOSE, close_payload(code, reason)))
        self._phase = _CLOSED
        self._disconnect(code, reason)
        self._close_transport()

    # -- what the app receives ----------------------------------------------------------

    def _deliver(self, event: dict[str, Any]) -> None:
        self._inbox.append(event)
        if len(self._inbox) >= _INBOX_HIGH:
            self._pause_reading()
        self._wake()

    def _disconnect(self, code: int, reason: str = "") -> None:
        if not self._gone:
            self._gone = True
            self._inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while not self._inbox:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._inbox.pop(0)
        if event["type"] == "websocket.disconnect":
            self._inbox.append(event)  # every later receive() sees it too
        elif len(self._inbox) < _INBOX_HIGH // 2:
            self._resume_reading()
        return event

    # -- what the app sends -------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self._phase == _HANDSHAKE:
            if kind == "websocket.accept":
                self._send_accept(message)
            elif kind == "websocket.close":
                self._reject("403 Forbidden", "")
            else:
                raise RuntimeError(f"expected websocket.accept or websocket.close, got {kind}")
            return
        if self._phase != _OPEN:
            if kind == "websocket.close":
                return  # already closing or closed: nothing more to say
            raise ClientDisconnected()
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is not None:
                self._write(frame(BINARY, data))
            else:
                self._write(frame(TEXT, message["text"].encode()))
            drain = self._drain
            if drain is not None:
                await drain
        elif kind == "websocket.close":
            code = message.get("code") or 1000
            self._write(frame(CLOSE, close_payload(code, message.get("reason") or "")))
            self._phase = _CLOSING
            self._disconnect(code, message.get("reason") or "")
            self._resume_reading()  # read on, to hear the peer's close
            self._close_timer = self._loop.call_later(_CLOSE_TIMEOUT, self._close_transport)
        else:
            raise RuntimeError(f"expected websocket.send or websocket.close, got {kind}")

    def send_now(self, data: bytes | str) -> bool:
        """Write a message at once (inside ``corked()``, at its end), without the ASGI event
        and coroutine; False when the socket is not open or its writing is paused (then use
        ``send``, which waits)."""
        if self._phase != _OPEN or self._drain is not None:
            return False
        if isinstance(data, bytes):
            self._write(frame(BINARY, data))
        else:
            self._write(frame(TEXT, data.encode()))
        return True

    def _send_accept(self, message: dict[str, Any]) -> None:
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + self._accept,
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
        for name, value in [*self._default_headers, *message.get("headers", [])]:
            lines.append(name + b": " + value)
        self._write(b"\r\n".join(lines) + b"\r\n\r\n")
        self._accept = b""
        self._phase = _OPEN
        self._resume_reading()
        if self._buf:  # frames that came with or right after the request
            try:
                self._read_frames()
            except _ProtocolError as error:
                self._fail(error.code, error.reason)

    # -- the app's task -----------------------------------------------------------------

    async def _run_app(self) -> None:
        try:
            # The scope goes to the app and is not kept here: an open socket needs none of it.
            await self._app(self._take_scope(), self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("websocket application failed")
            if self._phase == _HANDSHAKE:
                self._write(_http_response("500 Internal Server Error", "internal error"))
        else:
            if self._phase == _HANDSHAKE:
                log.error("websocket application returned without accepting or closing")
                self._write(_http_response("500 Internal Server Error", "internal error"))
        if self._close_timer is None:
            self._close_transport()

    def _take_scope(self) -> dict[str, Any]:
        scope, self._scope = self._scope, None
        return cast(dict[str, Any], scope)  # set by _start_app, which started this task

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def _write(self, data: bytes) -> None:
        held = _held.get()
        if self._out is not None:
            self._out.append(data)
            if held is None:  # written outside the block that holds the rest: all go now
                self._flush()
        elif held is not None:
            self._out = [data]
            held.append(self)
        else:
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.write(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _close_transport(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def _parse_close(payload: bytes) -> tuple[int, str]:
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise _ProtocolError(1002, "a close payload has a two-byte code")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _SENDABLE:
        raise _ProtocolError(1002, f"invalid close code {code}")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise _ProtocolError(1007, "invalid UTF-8 in a close reason") from None
