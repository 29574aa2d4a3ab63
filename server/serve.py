"""How the app is served: uvicorn's configuration, and a front door that hands the sync socket
straight to its handler. ``session-sync serve`` and the tests' live server both use it."""

from __future__ import annotations

from typing import Any

import uvicorn
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from server.config import Settings
from server.kit.websocket import WebSocketProtocol
from server.sync.controllers import SyncController, serve_socket


def front_door(app: Litestar) -> ASGIApp:
    """The app, except that the sync socket skips the router and its middleware: they hold
    ~4 KiB per open socket and do nothing for it (bench/idle_connections.py)."""
    state, socket_path = app.state, SyncController.path

    async def door(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET and scope["path"] == socket_path:
            await serve_socket(state, scope, receive, send)
        else:
            await app(scope, receive, send)

    return door


def uvicorn_config(app: Litestar, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    settings: Settings = app.state.settings
    options: dict[str, Any] = {
        "proxy_headers": False,  # the app reads X-Forwarded-For itself, from trusted proxies only
        "log_level": settings.log_level.lower(),
        "access_log": False,  # the app logs each request by route template
        "lifespan": "on",  # a failed start-up stops the server
        "timeout_graceful_shutdown": 10,
        "ws": WebSocketProtocol,  # ~6 KiB per idle socket where uvicorn's own take 19
        "ws_max_size": settings.ws_max_frame + 1024,
        "ws_ping_interval": None,  # the protocol has its own heartbeats
    }
    return uvicorn.Config(front_door(app), host=host, port=port, **(options | overrides))
