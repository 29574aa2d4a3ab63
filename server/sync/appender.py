"""Group commit for the update log: every push waiting when a group starts joins it,
whatever its document, and all are acknowledged together once it commits.

On Postgres a group of documents seen before is one statement, one round trip: it locks the
documents in id order, inserts the rows after the heads it finds and raises them, and voids
itself when it finds what needs more (``repository.PgLog.append_at_once``). Otherwise, and
on SQLite, a group is a transaction: lock the documents (learning their owner and kind),
insert the rows and raise the heads. A push sent again (its client update ids stored
already) voids either; the group then runs again as a transaction that looks the stored ids
up under its locks.

Alone, a push commits at once; under load, one commit (and its fsync) serves hundreds. The
hot path skips the ORM (asyncpg itself on Postgres, SQLAlchemy Core on SQLite): its unit of
work cost several times the database's own time per push (bench/results/push_anatomy.txt).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from server.auth.service import Principal
from server.config import Settings
from server.errors import NotFound, PayloadTooLarge
from server.kit.clock import utcnow
from server.kit.websocket import corked
from server.sync import repository as repo
from server.sync.hub import Hub
from server.sync.repository import LockedDoc, Row
from server.sync.schemas import PushOut, UpdateIn

log = logging.getLogger("session_sync.sync")

LOG_KINDS = frozenset({"canvas", "settings"})
MAX_GROUP = 512  # pushes per transaction
FACTS_LIMIT = 100_000  # documents whose owner and kind an appender keeps
GROUP_BYTES = 16 * 1024 * 1024  # of ciphertext per transaction: a big push waits for its own


Outcome = PushOut | BaseException  # of one push in its group


class QuotaExceeded(PayloadTooLarge):
    slug, title = "quota-exceeded", "The storage or document quota is used up"


@dataclass(frozen=True, slots=True)
class Appended:
    out: PushOut
    rows: list[Row]  # only those stored by this push


Then = Callable[[Appended | BaseException], None]


@dataclass(eq=False)
class _Push:
    who: Principal
    doc_id: uuid.UUID
    updates: Sequence[UpdateIn]
    kinds: frozenset[str]
    then: Then  # called with the outcome as soon as the group has committed
    rows: list[Row] = field(default_factory=list)
    fresh: list[dict[str, Any]] = field(default_factory=list)  # the rows to insert


class Appender:
    """One group at a time per replica. A second one in flight (on its own connection;
    the row locks keep each document's order) gave smaller groups and no steadier p99 in
    bench/relay_fanout.py (docs/benchmarks.md, "What would close the gaps"); with one,
    bench/durable_append.py appended 10-25 % more rows/s (measured in an earlier session)."""

    def __init__(self, engine: AsyncEngine, settings: Settings, hub: Hub) -> None:
        self.engine, self.settings, self.hub = engine, settings, hub
        self._waiting: collections.deque[_Push] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        # Owner and kind of the documents seen under a lock: they never change, so a group
        # of known documents can be decided before the statement that locks them.
        self._facts: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
        self._at_once = engine is not None and engine.dialect.name == "postgresql"

    def submit(
        self,
        who: Principal,
        doc_id: uuid.UUID,
        updates: Sequence[UpdateIn],
        kinds: frozenset[str],
        then: Then,
    ) -> None:
        """Queue a push behind every push queued before it, without waiting. Once its group
        has committed, ``then`` is called with the outcome, in the group's answer (so that
        a websocket's ack leaves with the group's deliveries)."""
        push = _Push(who, doc_id, updates, kinds, then)
        self._waiting.append(push)
        # Alone, a push commits at once; under load, the next group grows while one commits.
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="group-commit")

    async def _work(self) -> None:
        while group := self._take():
            started = time.perf_counter()
            outcomes, heads = await self._store(group)
            self.hub.stats.committed(time.perf_counter() - started, len(group))
            self._answer(group, outcomes, heads)

    def _take(self) -> list[_Push]:
        """The next group, in the order the pushes came: at most MAX_GROUP pushes, and at
        most GROUP_BYTES of ciphertext unless one push alone holds more."""
        group: list[_Push] = []
        size = 0
        while self._waiting and len(group) < MAX_GROUP:
            push = self._waiting[0]
            size += sum(len(u.ciphertext) for u in push.updates)
            if group and size > GROUP_BYTES:
                break
            group.append(self._waiting.popleft())
        return group

    async def _store(self, group: list[_Push]) -> tuple[list[Outcome], dict[uuid.UUID, int]]:
        """Each push's outcome, and the new head of each document that grew."""
        try:
            try:
                if self._at_once and all(p.doc_id in self._facts for p in group):
                    return await self._statement(group)
                return await self._transaction(group, dedupe=False)
            except (repo.AlreadyStored, repo.Rerun):  # e.g. a push sent again: look it up
                return await self._transaction(group, dedupe=True)
        except Exception as exc:
            self.hub.stats.failed_groups += 1
            return [exc] * len(group), {}

    def _answer(
        self,
        group: list[_Push],
        outcomes: list[Outcome],
        heads: dict[uuid.UUID, int],
    ) -> None:
        # A group's deliveries and acks leave together: one write per socket, not one each.
        with corked():
            stored: dict[uuid.UUID, list[Row]] = {}
            for push in group:  # one pass: a group may span hundreds of documents
                stored.setdefault(push.doc_id, []).extend(push.rows)
            for doc_id, head in heads.items():
                self.hub.committed(doc_id, head, stored[doc_id])
                self.hub.stats.updates += len(stored[doc_id])
            for push, outcome in zip(group, outcomes, strict=True):
                try:
                    push.then(
                        outcome
                        if isinstance(outcome, BaseException)
                        else Appended(outcome, push.rows)
                    )
                except Exception:
                    log.exception("push callback failed")

    async def _statement(self, group: list[_Push]) -> tuple[list[Outcome], dict[uuid.UUID, int]]:
        """The group in one statement (Postgres, every document known): decided first with
        the heads taken as 0, then stored after whatever heads the statement finds under its
        locks, and the seqs moved up by them. Only the quota needs what other documents
        hold: the statement checks it, and a group that would pass it runs again (Rerun),
        as does one with a client update id stored already."""
        now = utcnow()
        docs: dict[uuid.UUID, LockedDoc] = {}
        for push in group:
            push.rows, push.fresh = [], []
            if push.doc_id not in docs:
                owner, kind = self._facts[push.doc_id]
                docs[push.doc_id] = LockedDoc(push.doc_id, owner, kind, 0, 0, 0, None, 0)
        known: dict[tuple[uuid.UUID, str], int] = {}  # a client update id twice in the group
        used: dict[uuid.UUID, int] = {}  # bytes this group adds, by owner
        outcomes = [self._assign(push, docs[push.doc_id], known, used) for push in group]
        taken = {p.doc_id for p, o in zip(group, outcomes, strict=True) if isinstance(o, PushOut)}
        if not taken:
            return outcomes, {}
        written = [docs[doc_id] for doc_id in sorted(taken)]
        async with repo.statements(self.engine) as db:
            found = await db.append_at_once(
                [f for p in group for f in p.fresh],
                written,
                used,
                self.settings.storage_quota,
                now,
            )
            for index, (push, outcome) in enumerate(zip(group, outcomes, strict=True)):
                if not isinstance(outcome, PushOut):
                    continue
                state = found.get(push.doc_id)
                if state is None:  # deleted since it was last seen
                    self._facts.pop(push.doc_id, None)
                    outcomes[index], push.rows = NotFound("no such document"), []
                    continue
                base = state.base
                outcome.seqs = [base + seq for seq in outcome.seqs]
                outcome.head += base
                for row in push.rows:
                    row.seq += base
            due = [
                doc_id
                for doc_id, state in found.items()
                if self._snapshot_due(
                    docs[doc_id].kind,
                    state.updates_since_snapshot,
                    state.bytes_since_snapshot,
                    state.lease_until,
                    now,
                )
            ]
            try:  # the rows are committed: a lease not taken only waits for the next push
                await self._lease_snapshots(db, group, outcomes, due, now)
            except Exception:
                log.warning("snapshot lease not taken", exc_info=True)
        return outcomes, {
            doc.id: found[doc.id].base + doc.head_seq
            for doc in written
            if doc.head_seq and doc.id in found
        }

    async def _transaction(
        self, group: list[_Push], dedupe: bool
    ) -> tuple[list[Outcome], dict[uuid.UUID, int]]:
        """One try at the group as a transaction: lock, insert, raise the heads. Optimistic
        first: client update ids are taken for new (one statement fewer); if one was stored
        already, ``append_rows`` voids the transaction and the group runs again with
        ``dedupe``, which looks them up under the locks."""
        now = utcnow()
        for push in group:
            push.rows, push.fresh = [], []
        async with repo.group_transaction(self.engine) as db:
            docs = await db.lock_docs(sorted({p.doc_id for p in group}))
            self._remember(docs.values())
            known = (
                await db.seqs_for(
                    [(p.doc_id, u.client_update_id) for p in group for u in p.updates]
                )
                if dedupe
                else {}
            )
            used = {d.owner_user_id: d.owner_bytes for d in docs.values()}
            outcomes = [self._assign(push, docs.get(push.doc_id), known, used) for push in group]
            changed = [d for d in docs.values() if d.head_seq > d.start_seq]
            if changed:
                due = [
                    d.id
                    for d in changed
                    if self._snapshot_due(
                        d.kind,
                        d.updates_since_snapshot + d.head_seq - d.start_seq,
                        d.bytes_since_snapshot + d.added_bytes,
                        d.lease_until,
                        now,
                    )
                ]
                await self._lease_snapshots(db, group, outcomes, due, now)
                rows = [f | {"created_at": now} for p in group for f in p.fresh]
                await db.append_rows(rows, changed)
        return outcomes, {d.id: d.head_seq for d in changed}

    def _remember(self, docs: Iterable[LockedDoc]) -> None:
        if len(self._facts) > FACTS_LIMIT:
            self._facts.clear()
        for doc in docs:
            self._facts[doc.id] = (doc.owner_user_id, doc.kind)

    def _assign(
        self,
        push: _Push,
        doc: LockedDoc | None,
        known: dict[tuple[uuid.UUID, str], int],
        used: dict[uuid.UUID, int],
    ) -> Outcome:
        """Seqs for one push, in order; a client update id seen before (in the log or earlier
        in this transaction) answers its original seq and stores nothing."""
        if doc is None or not repo.writable_by(doc, push.who.user_id) or doc.kind not in push.kinds:
            return NotFound("no such document")
        seqs, rows, fresh, last = [], [], [], doc.head_seq
        device = push.who.device_id
        for update in push.updates:
            seq = known.get((doc.id, update.client_update_id))
            if seq is None:
                seq = last = last + 1
                rows.append(Row(seq, device, update.key_version, update.ciphertext))
                fresh.append(
                    {
                        "doc_id": doc.id,
                        "seq": seq,
                        "client_update_id": update.client_update_id,
                        "device_id": device,
                        "key_version": update.key_version,
                        "ciphertext": update.ciphertext,
                    }
                )
            seqs.append(seq)
        nbytes = sum(len(r.ciphertext) for r in rows)
        owner_used = used.get(doc.owner_user_id, 0)
        if rows and owner_used + nbytes > self.settings.storage_quota:
            return QuotaExceeded(
                f"the storage quota of {self.settings.storage_quota} bytes is full"
            )
        used[doc.owner_user_id] = owner_used + nbytes
        for update, seq in zip(push.updates, seqs, strict=True):
            known.setdefault((doc.id, update.client_update_id), seq)
        push.rows, push.fresh = rows, fresh
        doc.head_seq, doc.added_bytes = last, doc.added_bytes + nbytes
        return PushOut(seqs, last)

    def _snapshot_due(
        self, kind: str, updates: int, nbytes: int, lease_until: datetime | None, now: datetime
    ) -> bool:
        """Past a threshold of updates or bytes since the last snapshot, a log document's next
        snapshot is leased, unless a lease is held."""
        s = self.settings
        return (
            kind in LOG_KINDS
            and (lease_until is None or lease_until < now)
            and (updates >= s.snapshot_after_updates or nbytes >= s.snapshot_after_bytes)
        )

    async def _lease_snapshots(
        self,
        db: repo.GroupLog,
        group: list[_Push],
        outcomes: list[Outcome],
        due: list[uuid.UUID],
        now: datetime,
    ) -> None:
        """Lease each due document's next snapshot to its last pushing device: connected,
        and holding the document up to the head. The lease stops two racing."""
        until = now + timedelta(seconds=self.settings.snapshot_lease)
        for doc_id in due:
            index, pusher = next(
                (i, p) for i, p in reversed(list(enumerate(group))) if p.doc_id == doc_id and p.rows
            )
            if await db.lease_snapshot(doc_id, pusher.who.device_id, now, until):
                outcome = outcomes[index]
                if isinstance(outcome, PushOut):
                    outcome.snapshot_requested = True
