"""A tiny websocket client for the sync protocol, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class SyncSocket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, base_url: str, token: str | None = None, **kwargs: Any) -> SyncSocket:
        ws = await connect(
            base_url.replace("http", "ws", 1) + "/v1/sync",
            subprotocols=["session-sync.v1.json"],  # type: ignore[list-item]
            **kwargs,
        )
        socket = cls(ws)
        if token is not None:
            await socket.send({"type": "hello", "token": token})
            welcome = await socket.recv()
            assert welcome["type"] == "welcome", welcome
        return socket

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame: dict[str, Any] = json.loads(await self.ws.recv())
                if frame["type"] != "ping":
                    return frame

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (frame := await self.recv(timeout))["type"] != kind:
                pass
        return frame

    async def subscribe(self, doc: str, after: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Subscribe; the backlog's updates and the head from the `subscribed` frame."""
        await self.send({"type": "subscribe", "doc": doc, "after": after})
        got: list[dict[str, Any]] = []
        while True:
            frame = await self.recv()
            if frame["type"] == "updates":
                got += frame["updates"]
            elif frame["type"] == "subscribed":
                return got, int(frame["head"])
            elif frame["type"] == "error":
                raise AssertionError(frame)

    async def push(self, doc: str, ref: int, *payloads: bytes, prefix: str = "u") -> dict[str, Any]:
        await self.send(
            {
                "type": "push",
                "doc": doc,
                "ref": ref,
                "updates": [
                    {
                        "client_update_id": f"{prefix}{ref}-{n}",
                        "key_version": 1,
                        "ciphertext": base64.b64encode(p).decode(),
                    }
                    for n, p in enumerate(payloads)
                ],
            }
        )
        while (frame := await self.recv())["type"] not in ("ack", "error"):
            pass
        return frame

    async def close(self) -> None:
        await self.ws.close()
