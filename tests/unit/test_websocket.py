"""server.kit.websocket under uvicorn on loopback: a real client library for what clients do,
raw frames over TCP for what a broken or hostile client does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.kit.websocket import WebSocketProtocol, corked
from tests import services
from tests.conftest import serving


class EchoApp:
    """Echoes messages; records what the protocol told it."""

    def __init__(self) -> None:
        self.disconnects: list[dict[str, Any]] = []
        self.received: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes: list[bytes] = []  # what a burst asked the transport to write

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/reject":
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] == "/crash":
            raise RuntimeError("the app failed before accepting")
        if scope["path"] == "/burst":
            await self.burst(receive, send)
            return
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[-1] if offered else None,
                "headers": [(b"x-echo", scope["query_string"] or b"-")],
            }
        )
        while True:
            await self.gate.wait()
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self.disconnects.append(event)
                return
            message = event.get("text") if event.get("text") is not None else event["bytes"]
            self.received.append(message)
            if message == "close-me":
                await send({"type": "websocket.close", "code": 4001, "reason": "as asked"})
            elif isinstance(message, str):
                await send({"type": "websocket.send", "text": message})
            else:
                await send({"type": "websocket.send", "bytes": message})

    async def burst(self, receive: Any, send: Any) -> None:
        """On a message: three messages held by ``corked()``, one more after it, and then,
        inside another block, a message and the close."""
        await send({"type": "websocket.accept"})
        await receive()
        protocol = send.__self__
        write = protocol._transport.write

        def recorded(data: bytes) -> None:
            self.writes.append(data)
            write(data)

        protocol._transport.write = recorded
        with corked():
            assert all(protocol.send_now(m) for m in (b"1", b"2", "3"))
            assert self.writes == []
        assert protocol.send_now(b"4")
        with corked():
            assert protocol.send_now(b"5")
            await send({"type": "websocket.close", "code": 4002})


@pytest.fixture
async def served() -> AsyncIterator[tuple[EchoApp, int, uvicorn.Server]]:
    app, port = EchoApp(), services.free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=WebSocketProtocol,
        ws_max_size=64 * 1024,
        lifespan="off",
        log_level="critical",
    )
    server = uvicorn.Server(config)
    async with serving(server):
        yield app, port, server


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- a raw client ---------------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, *headers: str, path: str = "/") -> tuple[Raw, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        default = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        names = {h.split(":")[0].lower() for h in headers}
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            *headers,
            *(h for h in default if h.split(":")[0].lower() not in names),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return cls(reader, writer), head

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> tuple[int, bytes]:
        async with asyncio.timeout(5):
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "server frames are not masked"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def closed_with(self) -> int:
        opcode, payload = await self.frame()
        assert opcode == 0x8
        code: int = struct.unpack("!H", payload[:2])[0]
        # Then the server hangs up (with a reset, when it left our bytes unread).
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(self.reader.read(), 5) == b""
        return code


# -- what clients do -------------------------------------------------------------------------


async def test_echo_text_and_binary_with_a_subprotocol(served: Any) -> None:
    app, port, _ = served
    url = f"ws://127.0.0.1:{port}/room?x=1"
    async with connect(url, subprotocols=["a", "b"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "b"
        assert ws.response.headers["x-echo"] == "x=1"
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        big = os.urandom(60_000)  # 16-bit length
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(["frag", "mented"])  # a message in three frames
        assert await ws.recv() == "fragmented"
        await ws.ping(b"are you there")  # answered by the protocol, not the app
    await until(lambda: app.disconnects)
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]
    assert app.received == ["héllo", big, "fragmented"]


async def test_the_app_closes_with_a_code_and_a_reason(served: Any) -> None:
    _, port, _ = served
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "as asked")


async def test_closed_before_accept_is_403_and_a_crash_is_500(served: Any) -> None:
    _, port, _ = served
    for path, status in (("/reject", 403), ("/crash", 500)):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}{path}"):
                pass
        assert refused.value.response.status_code == status


async def test_messages_sent_while_the_app_is_busy_all_arrive_in_order(served: Any) -> None:
    app, port, _ = served
    app.gate.clear()  # the app stops reading: the protocol queues, then stops reading
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        for i in range(200):
            await ws.send(f"m{i}")
        await asyncio.sleep(0.2)
        assert app.received == []
        app.gate.set()
        assert [await ws.recv() for _ in range(200)] == [f"m{i}" for i in range(200)]


async def test_writes_held_by_corked_leave_in_one_write_in_order(served: Any) -> None:
    app, port, _ = served
    raw, _ = await Raw.open(port, path="/burst")
    raw.send(client_frame(0x2, b"go"))
    frames = [await raw.frame() for _ in range(5)]
    assert frames == [(0x2, b"1"), (0x2, b"2"), (0x1, b"3"), (0x2, b"4"), (0x2, b"5")]
    opcode, payload = await raw.frame()
    assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 4002))
    assert len(app.writes) == 3  # 1-3 together, 4 alone, then 5 with the close
    assert app.writes[2].endswith(payload)


async def test_shutdown_closes_open_sockets_with_1012(served: Any) -> None:
    app, port, server = served
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("x")
        await ws.recv()
        server.should_exit = True
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    await until(lambda: app.disconnects)
    assert app.disconnects[0]["code"] == 1012


# -- what broken clients do ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (("Sec-WebSocket-Version: 8",), b"426"),
        (("Sec-WebSocket-Key: c2hvcnQ=",), b"400"),  # not 16 bytes
        (("Sec-WebSocket-Key: not base64!",), b"400"),
        (("Connection: keep-alive, Upgrade, close", "Upgrade: WebSocket"), b"101"),
    ],
)
async def test_the_upgrade_request_is_checked(
    served: Any, headers: tuple[str, ...], status: bytes
) -> None:
    _, port, _ = served
    raw, head = await Raw.open(port, *headers)
    assert head.split(b" ")[1] == status, head
    if status == b"426":
        assert b"Sec-WebSocket-Version: 13" in head
    raw.writer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"hi", mask=False), 1002),  # clients must mask
        (bytes([0xC1]) + client_frame(0x1, b"hi")[1:], 1002),  # a reserved bit
        (client_frame(0x3, b""), 1002),  # an unknown opcode
        (client_frame(0x9, b"p", fin=False), 1002),  # a fragmented control frame
        (client_frame(0x9, b"p" * 126), 1002),  # a control frame too long
        (client_frame(0x0, b"orphan"), 1002),  # a continuation of nothing
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), 1002),
        (client_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (client_frame(0x2, b"x" * (64 * 1024 + 1)), 1009),  # over ws_max_size
        (client_frame(0x2, b"x" * 40_000, fin=False) + client_frame(0x0, b"x" * 30_000), 1009),
        (client_frame(0x8, b"\x03\xe8"[:1]), 1002),  # a one-byte close payload
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),  # a code that never travels
    ],
)
async def test_a_protocol_error_closes_with_its_code(served: Any, frame: bytes, code: int) -> None:
    app, port, _ = served
    raw, head = await Raw.open(port)
    assert head.startswith(b"HTTP/1.1 101")
    raw.send(frame)
    assert await raw.closed_with() == code
    await until(lambda: app.disconnects)
    assert app.disconnects[0]["code"] == code
    assert app.received == []


async def test_ping_is_answered_and_a_peer_close_is_echoed(served: Any) -> None:
    app, port, _ = served
    raw, _ = await Raw.open(port)
    raw.send(client_frame(0x9, b"ping data"))
    assert await raw.frame() == (0xA, b"ping data")
    raw.send(client_frame(0x8, struct.pack("!H", 4002) + "bye ✓".encode()))
    assert await raw.closed_with() == 4002
    await until(lambda: app.disconnects)
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 4002, "reason": "bye ✓"}]


async def test_a_dropped_connection_is_a_1006_disconnect(served: Any) -> None:
    app, port, _ = served
    raw, _ = await Raw.open(port)
    raw.send(client_frame(0x1, b"hi"))
    assert await raw.frame() == (0x1, b"hi")
    raw.writer.transport.abort()
    await until(lambda: app.disconnects)
    assert app.disconnects[0]["code"] == 1006
