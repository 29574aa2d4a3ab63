"""Group commit for the update log: concurrent pushes to one document share one transaction
(one row lock, one dedupe query, one insert) and are acknowledged together once it commits.

Under load this turns N transactions into one; alone, a push commits at once as before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth.service import Principal
from server.config import Settings
from server.db.models import Document
from server.errors import NotFound, PayloadTooLarge
from server.kit.clock import utcnow
from server.sync import repository as repo
from server.sync.hub import Hub
from server.sync.repository import Row
from server.sync.schemas import PushOut, UpdateIn

LOG_KINDS = frozenset({"canvas", "settings"})


class QuotaExceeded(PayloadTooLarge):
    slug, title = "quota-exceeded", "The storage or document quota is used up"


@dataclass(frozen=True, slots=True)
class Appended:
    out: PushOut
    rows: list[Row]  # only those stored by this push


@dataclass(eq=False)
class _Push:
    who: Principal
    updates: Sequence[UpdateIn]
    kinds: frozenset[str]
    future: asyncio.Future[Appended] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    rows: list[Row] = field(default_factory=list)


class Appender:
    def __init__(self, db: async_sessionmaker[AsyncSession], settings: Settings, hub: Hub) -> None:
        self.db, self.settings, self.hub = db, settings, hub
        self._waiting: dict[uuid.UUID, list[_Push]] = {}
        self._workers: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def push(
        self, who: Principal, doc_id: uuid.UUID, updates: Sequence[UpdateIn], kinds: frozenset[str]
    ) -> Appended:
        """Append after every push queued before it; answer once the group has committed."""
        push = _Push(who, updates, kinds)
        self._waiting.setdefault(doc_id, []).append(push)
        if doc_id not in self._workers:
            self._workers[doc_id] = asyncio.create_task(self._work(doc_id))
        return await asyncio.shield(push.future)

    async def _work(self, doc_id: uuid.UUID) -> None:
        try:
            while group := self._waiting.pop(doc_id, None):
                await self._commit(doc_id, group)
        finally:
            self._workers.pop(doc_id, None)

    async def _commit(self, doc_id: uuid.UUID, group: list[_Push]) -> None:
        try:
            outcomes, head, rows = await self._transaction(doc_id, group)
        except Exception as exc:
            outcomes, head, rows = [exc] * len(group), 0, []
        for push, outcome in zip(group, outcomes, strict=True):
            if push.future.done():
                continue
            if isinstance(outcome, BaseException):
                push.future.set_exception(outcome)
            else:
                push.future.set_result(Appended(outcome, push.rows))
        if rows:
            await self.hub.committed(doc_id, head, rows)

    async def _transaction(
        self, doc_id: uuid.UUID, group: list[_Push]
    ) -> tuple[list[PushOut | BaseException], int, list[Row]]:
        async with self.db.begin() as session:
            doc = await repo.locked_doc(session, doc_id)
            if doc is None:
                return [NotFound("no such document")] * len(group), 0, []
            ids = [u.client_update_id for push in group for u in push.updates]
            known = await repo.seqs_of(session, doc_id, ids)
            outcomes, fresh, head = await self._assign(session, doc, group, known)
            stored = [r for push in group for r in push.rows]
            if fresh:
                leased = await self._maybe_request_snapshot(session, doc, group, stored)
                await repo.append(session, doc, fresh, utcnow())
                if leased is not None:
                    outcome = outcomes[group.index(leased)]
                    if isinstance(outcome, PushOut):
                        outcome.snapshot_requested = True
        return outcomes, head, stored

    async def _assign(
        self, session: AsyncSession, doc: Document, group: list[_Push], known: dict[str, int]
    ) -> tuple[list[PushOut | BaseException], list[dict[str, Any]], int]:
        """Seqs for each push in order; a client update id seen before (in the log or earlier
        in the group) answers its original seq and stores nothing."""
        outcomes: list[PushOut | BaseException] = []
        fresh: list[dict[str, Any]] = []
        head, used = doc.head_seq, -1
        for push in group:
            if not repo.writable_by(doc, push.who.user_id) or doc.kind not in push.kinds:
                outcomes.append(NotFound("no such document"))
                continue
            seqs, rows, assigned, last = [], [], {}, head
            for update in push.updates:
                seq = known.get(update.client_update_id)
                if seq is None:
                    seq = last = last + 1
                    assigned[update.client_update_id] = seq
                    rows.append(Row(seq, push.who.device_id, update.key_version, update.ciphertext))
                seqs.append(seq)
            nbytes = sum(len(r.ciphertext) for r in rows)
            if rows and used < 0:
                used = (await repo.usage(session, doc.owner_user_id))[1]
            if rows and used + nbytes > self.settings.storage_quota:
                quota = self.settings.storage_quota
                outcomes.append(QuotaExceeded(f"the storage quota of {quota} bytes is full"))
                continue
            used += nbytes
            known.update(assigned)
            head, push.rows = last, rows
            fresh += [
                _row(u, known[u.client_update_id], push.who.device_id)
                for u in push.updates
                if u.client_update_id in assigned
            ]
            outcomes.append(PushOut(seqs, head))
        return outcomes, fresh, head

    async def _maybe_request_snapshot(
        self, session: AsyncSession, doc: Document, group: list[_Push], stored: list[Row]
    ) -> _Push | None:
        """Past a threshold, lease the next snapshot to the last pushing device: it is
        connected and holds the document up to the head. The lease stops two racing."""
        s = self.settings
        if doc.kind not in LOG_KINDS or (
            doc.updates_since_snapshot + len(stored) < s.snapshot_after_updates
            and doc.bytes_since_snapshot + sum(len(r.ciphertext) for r in stored)
            < s.snapshot_after_bytes
        ):
            return None
        pusher = next(p for p in reversed(group) if p.rows)
        now = utcnow()
        until = now + timedelta(seconds=s.snapshot_lease)
        if await repo.lease_snapshot(session, doc.id, pusher.who.device_id, now, until):
            return pusher
        return None


def _row(update: UpdateIn, seq: int, device: uuid.UUID) -> dict[str, Any]:
    return {
        "seq": seq,
        "client_update_id": update.client_update_id,
        "device_id": device,
        "key_version": update.key_version,
        "ciphertext": update.ciphertext,
    }
