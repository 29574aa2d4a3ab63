"""A bare ASGI websocket app under uvicorn with our server's uvicorn settings: it accepts a
socket and waits for it to close. The floor that idle_connections.py measures our server
against (what uvicorn and its websocket implementation cost per socket before any of ours).

    .venv/bin/python bench/tools/bare_ws_app.py PORT [WS]   # WS: uvicorn's --ws, default auto
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        ws_max_size=4 * 1024 * 1024 + 1024,
        ws_ping_interval=None,
        ws=sys.argv[2] if len(sys.argv) > 2 else "auto",
    )
