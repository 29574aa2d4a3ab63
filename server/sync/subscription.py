"""A connection's subscription to one document: its cursor, catch-up under a lock, live
offers from the hub, and coalesced presence."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.sync import protocol as p
from server.sync.repository import Row
from server.sync.service import MAX_PAGE

if TYPE_CHECKING:
    from server.sync.connection import Connection


class DocSubscription:
    """A connection's view of one document: everything up to ``cursor`` has been sent, in
    order, once. Live offers that follow the cursor go straight out; anything else (a gap, a
    bell without rows, a catch-up in progress) is read from the database under a lock."""

    def __init__(self, conn: Connection, doc_id: uuid.UUID, after: int) -> None:
        self.conn, self.doc_id, self.cursor = conn, doc_id, after
        self._lock = asyncio.Lock()
        self._pending = 0  # catch-ups queued or running; live offers wait behind them
        self._presence_out: bytes | None = None
        self._presence_at = 0.0

    async def start(self) -> None:
        """Join the bell first, then send the backlog: nothing can fall in between."""
        self._pending += 1
        try:
            async with self._lock:
                await self.conn.hub.join(self.doc_id, self)
                head = await self._send_backlog()
        finally:
            self._pending -= 1
        # The document's real head: a client whose cursor is past it (say, a deleted and
        # recreated id) sees so at once.
        self.conn.send(p.Subscribed(self.doc_id, head))

    async def _send_backlog(self) -> int:
        while True:
            await self.conn.drained(1)  # the next page is read while this one is written
            page = await self.conn.sync.page(None, self.doc_id, self.cursor, MAX_PAGE)
            if page.snapshot is not None:
                snap = page.snapshot
                self.conn.send(
                    p.SnapshotFrame(self.doc_id, snap.upto_seq, snap.key_version, snap.ciphertext)
                )
                self.cursor = snap.upto_seq
            if page.updates:
                # `head` in an updates frame: the seq this frame brings the client up to.
                self.cursor = page.updates[-1].seq
                self.conn.send(p.Updates(self.doc_id, page.updates, self.cursor))
            if not page.has_more:
                return page.head

    # -- the Listener protocol of the hub -----------------------------------------------

    def offer(self, head: int, rows: Sequence[Row]) -> None:
        if head <= self.cursor:
            return
        if not self._pending and rows and rows[0].seq <= self.cursor + 1 and rows[-1].seq == head:
            self._emit([r for r in rows if r.seq > self.cursor])
            return
        self._pending += 1
        self.conn.hub.stats.catch_ups += 1
        self.conn.spawn(self._catch_up(head))

    def gone(self) -> None:
        self.conn.send(p.Gone(self.doc_id, "deleted"))
        self.conn.subscriptions.pop(self.doc_id, None)
        self.conn.spawn(self.conn.hub.leave(self.doc_id, self))

    def presence(self, device: uuid.UUID, data: bytes) -> None:
        if device != self.conn.device_id:
            self.conn.send(p.PresenceOut(self.doc_id, device, data))

    # -- internals ----------------------------------------------------------------------

    async def _catch_up(self, head: int) -> None:
        try:
            async with self._lock:
                while self.cursor < head:
                    rows = await self.conn.sync.read_log(self.doc_id, self.cursor, MAX_PAGE)
                    if not rows:
                        break
                    self._emit(rows)
        finally:
            self._pending -= 1

    def _emit(self, rows: Sequence[Row]) -> None:
        """Send rows that follow the cursor. A device's own updates are not echoed: it
        holds them already, and its acks carry their seqs."""
        own, last = self.conn.device_id, rows[-1].seq
        mine = own.int if own is not None else -1  # ints compare in C; UUIDs call __eq__
        out = [r for r in rows if r.device_id.int != mine]
        if len(out) == len(rows):
            # The same rows go to every reader of the document: encode them once per format.
            key = (self.doc_id, rows[0].seq, last, self.conn.codec.binary)
            self.conn.send_encoded(
                self.conn.hub.frames.get(
                    key, lambda: self.conn.codec.encode(p.Updates(self.doc_id, out, last))
                )
            )
        elif out:
            self.conn.send(p.Updates(self.doc_id, out, last))
        self.cursor = last

    def share_presence(self, data: bytes) -> None:
        """Relay at most one presence per interval; in between, the newest one wins."""
        interval = self.conn.settings.presence_interval
        now = time.monotonic()
        if self._presence_out is None and now - self._presence_at >= interval:
            self._presence_at = now
            self._relay_presence(data)
            return
        if self._presence_out is None:
            self.conn.spawn(self._flush_presence(self._presence_at + interval - now))
        self._presence_out = data

    async def _flush_presence(self, delay: float) -> None:
        await asyncio.sleep(delay)
        data, self._presence_out = self._presence_out, None
        if data is not None:
            self._presence_at = time.monotonic()
            self._relay_presence(data)

    def _relay_presence(self, data: bytes) -> None:
        device = self.conn.device_id
        if device is not None:
            self.conn.hub.presence(self.doc_id, device, data)
