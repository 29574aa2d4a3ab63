"""Fan-out on one replica: which local subscriptions listen to which document, and the bells
that tell every replica a document has a new head.

A bell carries the document id, the new head and, when small, the new updates themselves, so
that other replicas can deliver without reading the database. The hub hands its listeners
each document's rows in seq order, holding rows that came past a gap for the bell that fills
it (``GAP_WAIT``). A bell is only ever a hint: each subscription tracks its own cursor and
reads from the database whatever the bells did not bring (a gap not filled in time, a lost
bell, a Redis restart). Postgres is the truth; Redis is the bell.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from server.broker import Broker, Subscription
from server.sync.repository import Row, row_fields
from server.sync.stats import SyncStats

log = logging.getLogger("session_sync.sync")

CHANNEL_PREFIX = "ssync:doc:"
INLINE_LIMIT = 256 * 1024  # updates larger than this in total travel by database, not bell
BELL_QUEUE = 10_000
RING_BATCH = 256
# Replicas that write one document commit in turns, and their bells cross: rows may come
# past a gap that another replica's bell, on its way, fills. They wait this long for it
# before every listener reads the gap from the database.
GAP_WAIT = 0.05
HELD_LIMIT = 10_000  # rows held past a gap; beyond, the listeners read at once

Reader = Callable[[uuid.UUID, int, int], Awaitable[list[Row]]]
Heads = Callable[[Sequence[uuid.UUID]], Awaitable[dict[uuid.UUID, int]]]


class Listener(Protocol):
    """A local subscription to one document (see ``server.sync.connection``)."""

    def offer(self, head: int, rows: Sequence[Row]) -> None:
        """New updates up to ``head``; ``rows`` may be empty or partial."""

    def gone(self) -> None:
        """The document was deleted."""

    def presence(self, device: uuid.UUID, data: bytes) -> None:
        """Another device's encrypted presence (cursor, selection) in this document."""


class Bell(msgspec.Struct, array_like=True):
    replica: bytes
    doc: bytes
    head: int
    rows: list[tuple[int, uuid.UUID, int, bytes]] | None = None  # seq, device, key v., ct
    deleted: bool = False
    presence: tuple[bytes, bytes] | None = None  # device, ciphertext: relayed, never stored


# UUIDs as 16 bytes (msgpack bin): the rows are built and read in C, not field by field.
_encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
_decode = msgspec.msgpack.Decoder(Bell).decode
# A bell opens with its replica's id: a fixarray header, then bin8 of 16 bytes. Every
# replica hears its own bells too (Redis has no way not to) and drops them unread.
_REPLICA = slice(3, 19)


@dataclass(eq=False)
class _Stream:
    """What this replica has delivered of one document: every row up to ``delivered``, in
    order; rows past a gap are ``held`` until it is filled or ``GAP_WAIT`` runs out."""

    delivered: int = 0  # 0: nothing yet, the first rows heard set it
    head: int = 0  # the highest head heard
    held: dict[int, Row] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class FrameCache:
    """Encoded frames of recent deliveries, keyed by what determines their bytes (document,
    seq range, format): the log is immutable, so equal keys mean equal frames."""

    LIMIT = 1024

    def __init__(self) -> None:
        self._frames: dict[Hashable, bytes | str] = {}

    def get(self, key: Hashable, encode: Callable[[], bytes | str]) -> bytes | str:
        frame = self._frames.get(key)
        if frame is None:
            if len(self._frames) >= self.LIMIT:
                self._frames.clear()
            frame = self._frames[key] = encode()
        return frame


class Hub:
    def __init__(self, broker: Broker, heads: Heads, sweep_interval: float) -> None:
        self.replica = uuid.uuid4()
        self.frames = FrameCache()
        # What this replica's sync path has done: the appender and every connection report
        # here, the one object they all share; /metrics reads it.
        self.stats = SyncStats()
        self._broker = broker
        self._heads = heads
        self._sweep_interval = sweep_interval
        self._listeners: defaultdict[uuid.UUID, set[Listener]] = defaultdict(set)
        self._streams: dict[uuid.UUID, _Stream] = {}
        self._subscriptions: dict[uuid.UUID, Subscription] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._bells: asyncio.Queue[tuple[uuid.UUID, Bell]] = asyncio.Queue(BELL_QUEUE)
        self._ringer: asyncio.Task[None] | None = None
        broker.on_reconnect(self.sweep)

    @property
    def documents(self) -> int:
        return len(self._listeners)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sync-sweeper")
        self._ringer = asyncio.create_task(self._ring_forever(), name="sync-bells")

    async def close(self) -> None:
        for task in (self._sweeper, self._ringer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sub in list(self._subscriptions.values()):
            with contextlib.suppress(Exception):
                await sub.close()
        self._subscriptions.clear()

    async def join(self, doc_id: uuid.UUID, listener: Listener) -> None:
        self._listeners[doc_id].add(listener)
        self._streams.setdefault(doc_id, _Stream())
        if doc_id not in self._subscriptions:
            self._subscriptions[doc_id] = await self._broker.subscribe(
                CHANNEL_PREFIX + str(doc_id), self._on_bell
            )

    async def leave(self, doc_id: uuid.UUID, listener: Listener) -> None:
        listeners = self._listeners.get(doc_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[doc_id]
            self._streams.pop(doc_id, _Stream()).stop()
            sub = self._subscriptions.pop(doc_id, None)
            if sub is not None:
                await sub.close()

    def committed(self, doc_id: uuid.UUID, head: int, rows: Sequence[Row]) -> None:
        """After a commit: deliver to local listeners, then ring the other replicas.

        A failed publish is logged, never raised: the write is durable and acknowledged, and
        the other replicas find it on their next sweep."""
        self._arrive(doc_id, head, rows)
        inline = sum(len(r.ciphertext) for r in rows) <= INLINE_LIMIT
        bell = Bell(
            self.replica.bytes, doc_id.bytes, head, list(map(row_fields, rows)) if inline else None
        )
        self._ring(doc_id, bell)

    def deleted(self, doc_id: uuid.UUID) -> None:
        self._gone(doc_id)
        self._ring(doc_id, Bell(self.replica.bytes, doc_id.bytes, 0, None, deleted=True))

    def presence(self, doc_id: uuid.UUID, device: uuid.UUID, data: bytes) -> None:
        self._presence(doc_id, device, data)
        self._ring(
            doc_id, Bell(self.replica.bytes, doc_id.bytes, 0, None, presence=(device.bytes, data))
        )

    def _ring(self, doc_id: uuid.UUID, bell: Bell) -> None:
        """Queue the bell: a write is acknowledged without waiting on Redis."""
        try:
            self._bells.put_nowait((doc_id, bell))
        except asyncio.QueueFull:
            self.stats.bells["dropped"] += 1
            log.warning("bell queue full; other replicas will catch up on their sweep")

    async def _ring_forever(self) -> None:
        """Publish queued bells in order, all that are waiting in one round trip."""
        failing = False
        while True:
            batch = [await self._bells.get()]
            while not self._bells.empty() and len(batch) < RING_BATCH:
                batch.append(self._bells.get_nowait())
            try:
                await self._broker.publish_many(
                    [(CHANNEL_PREFIX + str(doc_id), _encode(bell)) for doc_id, bell in batch]
                )
                self.stats.bells["rung"] += len(batch)
                failing = False
            except Exception as exc:
                self.stats.bells["failed"] += len(batch)
                if not failing:
                    log.warning("bells not rung (%s); replicas catch up", type(exc).__name__)
                failing = True

    async def _on_bell(self, _channel: str, data: bytes) -> None:
        if data[_REPLICA] == self.replica.bytes:
            return
        self.stats.bells["heard"] += 1
        try:
            bell = _decode(data)
        except msgspec.DecodeError:
            log.warning("malformed bell ignored")
            return
        doc_id = uuid.UUID(bytes=bell.doc)
        if bell.presence is not None:
            self._presence(doc_id, uuid.UUID(bytes=bell.presence[0]), bell.presence[1])
            return
        if bell.deleted:
            self._gone(doc_id)
            return
        self._arrive(doc_id, bell.head, list(itertools.starmap(Row, bell.rows or ())))

    def _arrive(self, doc_id: uuid.UUID, head: int, rows: Sequence[Row]) -> None:
        """New rows of a document, from a commit here or a bell: delivered in seq order,
        once. Rows past a gap wait for the bell that fills it; a bell without rows (too
        large to carry), a sweep, or a gap not filled in time sends every listener to the
        database for what it lacks."""
        stream = self._streams.get(doc_id)
        if stream is None:
            return
        stream.head = max(stream.head, head)
        if not rows:
            self._read_gap(doc_id, stream)
            return
        if not stream.delivered:
            stream.delivered = rows[0].seq - 1
        for row in rows:
            if row.seq > stream.delivered:
                stream.held[row.seq] = row
        run, held = [], stream.held
        while stream.delivered + 1 in held:
            stream.delivered += 1
            run.append(held.pop(stream.delivered))
        if run:
            self._deliver(doc_id, stream.delivered, run)
        if not held:
            stream.stop()
        elif len(held) > HELD_LIMIT:
            self._read_gap(doc_id, stream)
        elif stream.timer is None:
            loop = asyncio.get_running_loop()
            stream.timer = loop.call_later(GAP_WAIT, self._read_gap, doc_id, stream)

    def _read_gap(self, doc_id: uuid.UUID, stream: _Stream) -> None:
        stream.stop()
        stream.head = max(stream.head, *stream.held, stream.delivered)
        stream.held.clear()
        stream.delivered = stream.head
        self._deliver(doc_id, stream.head, ())

    def _deliver(self, doc_id: uuid.UUID, head: int, rows: Sequence[Row]) -> None:
        for listener in list(self._listeners.get(doc_id, ())):
            listener.offer(head, rows)

    def _presence(self, doc_id: uuid.UUID, device: uuid.UUID, data: bytes) -> None:
        for listener in list(self._listeners.get(doc_id, ())):
            listener.presence(device, data)

    def _gone(self, doc_id: uuid.UUID) -> None:
        for listener in list(self._listeners.get(doc_id, ())):
            listener.gone()

    async def sweep(self) -> None:
        """Compare every subscribed document's head with the database; offer what is new."""
        doc_ids = list(self._listeners)
        for start in range(0, len(doc_ids), 500):
            batch = doc_ids[start : start + 500]
            found = await self._heads(batch)
            for doc_id in batch:
                if doc_id in found:
                    self._arrive(doc_id, found[doc_id], ())
                else:  # deleted while its bell was lost
                    self._gone(doc_id)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")
