"""Per-replica background work: heartbeats for every live socket (one loop, not a task per
socket), sockets of signed-out devices closed, and the updates that snapshots replaced pruned
once their grace period is over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from server.auth.service import AuthService
from server.sync import protocol as p
from server.sync.connection import Connection
from server.sync.service import SyncService

log = logging.getLogger("session_sync.sync")

PRUNE_EVERY = 30.0


class Sockets:
    """The live connections of this replica."""

    def __init__(self, auth: AuthService, sync: SyncService, check_every: float) -> None:
        self.auth, self.sync, self.check_every = auth, sync, check_every
        self._live: set[Connection] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._live)

    def add(self, connection: Connection) -> None:
        self._live.add(connection)

    def discard(self, connection: Connection) -> None:
        self._live.discard(connection)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="sync-maintenance")

    async def close(self) -> None:
        """Server shutdown: tell every client to reconnect (to another replica)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for connection in list(self._live):
            connection.kill(p.CloseCode.GOING_AWAY, "server shutting down")

    async def close_revoked(self) -> None:
        by_device: dict[object, list[Connection]] = {}
        for connection in self._live:
            if connection.device_id is not None:
                by_device.setdefault(connection.device_id, []).append(connection)
        if not by_device:
            return
        for device in await self.auth.revoked_among(list(by_device)):  # type: ignore[arg-type]
            for connection in by_device[device]:
                connection.kill(p.CloseCode.UNAUTHORIZED, "device signed out")

    async def _forever(self) -> None:
        since_prune = 0.0
        while True:
            await asyncio.sleep(self.check_every)
            since_prune += self.check_every
            now = time.monotonic()
            for connection in list(self._live):
                connection.heartbeat(now)
            try:
                await self.close_revoked()
                if since_prune >= PRUNE_EVERY:
                    since_prune = 0.0
                    freed = await self.sync.prune_due()
                    if freed:
                        log.info("pruned compacted updates", extra={"bytes": freed})
            except Exception:
                log.exception("maintenance failed")
