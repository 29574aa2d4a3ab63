"""The relay's ceiling on our stack: a Python relay that stores nothing, on the websocket
protocol, uvicorn settings and event loop our server runs on, speaking Hocuspocus's wire
protocol so that relay_fanout.py drives it exactly as it drives Hocuspocus (``--ceiling``).

Each update is acknowledged (SyncStatus) and written to every other socket of its document,
all inside ``corked()`` as our server answers a group; nothing is parsed beyond the document
name and the message type, nothing is applied, nothing is committed, and no bell is rung.
Whatever rate it sustains bounds what any server on this stack could relay on the same
machine, before it does any of the work the brief asks (the commit, the bell, the protocol).

    .venv/bin/python bench/tools/bare_relay.py PORT
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import uvicorn

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from bare_ws_app import app as bare_app  # noqa: E402
from yjs_wire import (  # noqa: E402
    HP_AUTH,
    HP_AUTH_OK,
    HP_SYNC,
    HP_SYNC_STATUS,
    Y_STEP1,
    Y_STEP2,
    Y_UPDATE,
    read_varbytes,
    read_varuint,
    varbytes,
    varstring,
)

from server.kit.websocket import WebSocketProtocol, corked  # noqa: E402

# The sockets of each document: their ``send_now``.
rooms: dict[bytes, set[Any]] = defaultdict(set)


async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    send_now = send.__self__.send_now
    joined: set[bytes] = set()
    try:
        while (event := await receive())["type"] == "websocket.receive":
            message: bytes = event["bytes"]
            name, pos = read_varbytes(message, 0)
            kind, pos = read_varuint(message, pos)
            doc = varstring(name.decode())
            if kind == HP_AUTH:
                rooms[name].add(send_now)
                joined.add(name)
                send_now(doc + bytes([HP_AUTH, HP_AUTH_OK]) + varstring("read-write"))
            elif kind == HP_SYNC and message[pos] == Y_STEP1:
                send_now(doc + bytes([HP_SYNC, Y_STEP2]) + varbytes(b"\x00\x00"))
            elif kind == HP_SYNC and message[pos] == Y_UPDATE:
                with corked():
                    send_now(doc + bytes([HP_SYNC_STATUS, 1]))
                    for other in rooms[name]:
                        if other is not send_now:
                            other(message)
    finally:
        for name in joined:
            rooms[name].discard(send_now)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await relay(scope, receive, send)
    else:  # the lifespan, and a 404 for plain HTTP
        await bare_app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws=WebSocketProtocol,
        ws_max_size=1024 * 1024,
        ws_ping_interval=None,
    )
