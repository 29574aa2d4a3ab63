"""Live mode: canvases kept in sync over the `/v1/sync` websocket, reconnecting with backoff
and catching up from each canvas's last applied seq (docs/spec/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from client_sdk.crypto import Kind
from client_sdk.errors import DecryptError
from client_sdk.session import CanvasSync

log = logging.getLogger("client_sdk.live")
SUBPROTOCOL = "session-sync.v1.msgpack"
# A snapshot frame carries up to 64 MiB of ciphertext, a backlog frame about 8 MiB
# (docs/spec/protocol.md); websockets would refuse anything over 1 MiB by default.
MAX_FRAME = 128 * 1024 * 1024


class LiveSync:
    def __init__(self, canvases: list[CanvasSync], max_backoff: float = 30.0) -> None:
        if not canvases:
            raise ValueError("nothing to keep in sync")
        self.canvases = {c.doc_id: c for c in canvases}
        self.client = canvases[0].client
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.errors: list[Exception] = []
        self._ws: ClientConnection | None = None
        self._acks: dict[int, list[str]] = {}
        self._subscribed: set[uuid.UUID] = set()
        self._ref = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set; every reconnect resubscribes from the
        canvases' applied seqs, so nothing is missed and nothing applied twice."""
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                attempt = 0
            except (ConnectionClosed, OSError) as exc:
                log.info("live sync disconnected: %s", exc)
            finally:
                self.connected.clear()
                self._ws = None
            if stop.is_set():
                return
            attempt += 1
            delay = min(self.max_backoff, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def flush(self) -> None:
        """Seal each canvas's local changes and push its outbox over the socket."""
        ws = self._ws
        if ws is None:
            return
        for canvas in self.canvases.values():
            canvas.seal()
            for pending in canvas.store.pending(canvas.doc_id):
                if any(pending.client_update_id in ids for ids in self._acks.values()):
                    continue
                self._ref += 1
                self._acks[self._ref] = [pending.client_update_id]
                await self._send(
                    {
                        "type": "push",
                        "doc": str(canvas.doc_id),
                        "ref": self._ref,
                        "updates": [
                            {
                                "client_update_id": pending.client_update_id,
                                "key_version": pending.key_version,
                                "ciphertext": pending.ciphertext,
                            }
                        ],
                    }
                )

    def disconnect(self) -> None:
        """Drop the connection (the run loop reconnects); for tests and network changes."""
        if self._ws is not None:
            self._ws.transport.abort()

    # -- one connection -----------------------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
        url = self.client.base_url.replace("http", "ws", 1) + "/v1/sync"
        ticket = await self.client.ticket()
        async with connect(
            url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            max_size=MAX_FRAME,
        ) as ws:
            self._ws, self._acks, self._subscribed = ws, {}, set()
            await self._send({"type": "hello", "token": ticket})
            welcome = await self._recv(ws)
            if welcome.get("type") != "welcome":
                raise ConnectionClosed(None, None)
            for canvas in self.canvases.values():
                await self._send(
                    {"type": "subscribe", "doc": str(canvas.doc_id), "after": canvas.applied_seq}
                )
            await self.flush()
            stopper = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    receiver = asyncio.create_task(self._recv(ws))
                    done, _ = await asyncio.wait(
                        {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receiver not in done:
                        receiver.cancel()
                        return
                    await self._handle(receiver.result())
            finally:
                stopper.cancel()

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        canvas = self.canvases.get(uuid.UUID(frame["doc"])) if "doc" in frame else None
        if kind == "ping":
            await self._send({"type": "pong"})
        elif kind == "subscribed":
            self._subscribed.add(uuid.UUID(frame["doc"]))
            if self._subscribed == set(self.canvases):
                self.connected.set()
        elif kind == "snapshot" and canvas is not None:
            self._apply(
                canvas,
                [(frame["ciphertext"], Kind.SNAPSHOT, frame["key_version"])],
                frame["upto_seq"],
            )
        elif kind == "updates" and canvas is not None:
            items = [(u["ciphertext"], Kind.UPDATE, u["key_version"]) for u in frame["updates"]]
            self._apply(canvas, items, frame["head"])
        elif kind == "ack" and canvas is not None:
            canvas.store.acknowledged(self._acks.pop(frame["ref"], []))
        elif kind == "snapshot_request" and canvas is not None:
            await canvas.pull()
            await canvas.snapshot()
        elif kind == "error":
            self._acks.pop(frame.get("ref", -1), None)
            self.errors.append(RuntimeError(f"{frame.get('problem')}: {frame.get('detail')}"))

    def _apply(self, canvas: CanvasSync, items: list[tuple[bytes, Kind, int]], seq: int) -> None:
        try:
            opened = [canvas.open(ct, kind, kv) for ct, kind, kv in items]
        except DecryptError as exc:
            self.errors.append(exc)  # nothing of the frame is applied
            return
        canvas.apply(opened, seq)

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is not None:
            await self._ws.send(msgspec.msgpack.encode(frame))

    @staticmethod
    async def _recv(ws: ClientConnection) -> dict[str, Any]:
        data = await ws.recv()
        frame = msgspec.msgpack.decode(data if isinstance(data, bytes) else data.encode())
        return frame if isinstance(frame, dict) else {}
