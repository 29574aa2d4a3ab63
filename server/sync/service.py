"""The rules of the sync log: ownership, limits, idempotent ordered appends, catch-up pages,
snapshots and their pruning, transcripts, and last-write-wins settings."""

from __future__ import annotations

import asyncio
import operator
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.auth.service import Principal
from server.config import Settings
from server.db.engine import pooled_driver, session_factory
from server.db.models import DocSnapshot, Document, SettingRegister
from server.errors import Conflict, NotFound, PayloadTooLarge, RateLimited, ValidationFailed
from server.kit.clock import utcnow
from server.kit.ratelimit import TokenBuckets
from server.sync import repository as repo
from server.sync.appender import LOG_KINDS, Appended, Appender, QuotaExceeded, Then
from server.sync.hub import Hub
from server.sync.repository import Row
from server.sync.schemas import (
    DocList,
    DocOut,
    SettingIn,
    SettingList,
    SettingOut,
    SettingWrite,
    SnapshotIn,
    SnapshotOut,
    UpdateIn,
    UpdateOut,
    UpdatePage,
)

TRANSCRIPT = frozenset({"transcript"})
MAX_PAGE = 5000
PAGE_BYTES = 8 * 1024 * 1024
SETTING_KEY = re.compile(r"[A-Za-z0-9._-]{1,128}")


def doc_out(doc: Document) -> DocOut:
    return DocOut(doc.id, doc.kind, doc.created_at, doc.head_seq, doc.snapshot_seq, doc.bytes_total)


def setting_out(reg: SettingRegister) -> SettingOut:
    return SettingOut(
        reg.key, reg.hlc, reg.device_id, reg.key_version, reg.ciphertext, reg.updated_at
    )


class SyncService:
    def __init__(self, engine: AsyncEngine, settings: Settings, hub: Hub) -> None:
        self.engine, self.db = engine, session_factory(engine)
        self.settings, self.hub = settings, hub
        self._push_buckets = TokenBuckets(settings.push_rate, settings.push_burst)
        self.appender = Appender(engine, settings, hub)

    # -- documents ----------------------------------------------------------------------

    async def create(self, who: Principal, kind: str, doc_id: uuid.UUID | None) -> DocOut:
        """Create a document; creating the same id again for the same owner is a no-op."""
        doc_id = doc_id or uuid.uuid4()
        async with self.db.begin() as session:
            if await repo.doc_exists(session, doc_id):
                doc = await repo.owned_doc(session, who.user_id, doc_id)
                if doc is None or doc.kind != kind:
                    raise Conflict("that document id is taken")
                return doc_out(doc)  # a retry: no quota is spent
            count, _ = await repo.usage(session, who.user_id)
            if count >= self.settings.max_docs_per_user:
                raise QuotaExceeded(f"at most {self.settings.max_docs_per_user} documents")
            if not await repo.add_doc(session, doc_id, who.user_id, kind, utcnow()):
                raise Conflict("that document id is taken")
            return doc_out(await self._doc(session, who, doc_id))

    async def list_docs(self, who: Principal) -> DocList:
        async with self.db.begin() as session:
            return DocList([doc_out(d) for d in await repo.list_docs(session, who.user_id)])

    async def get(self, who: Principal, doc_id: uuid.UUID) -> DocOut:
        async with self.db.begin() as session:
            return doc_out(await self._doc(session, who, doc_id))

    async def delete(self, who: Principal, doc_id: uuid.UUID) -> None:
        async with self.db.begin() as session:
            await repo.delete_doc(session, await self._doc(session, who, doc_id, lock=True))
        self.hub.deleted(doc_id)

    async def authorize(self, who: Principal, doc_id: uuid.UUID) -> None:
        """NotFound unless ``who`` may read and write the document (one statement, outside a
        transaction, on Postgres: every subscribe asks)."""
        if self.engine.dialect.name == "postgresql":
            async with pooled_driver(self.engine) as driver:
                head = await repo.doc_head(driver, doc_id)
            if head is None or not repo.writable_by(head, who.user_id):
                raise NotFound("no such document")
            return
        async with self.db.begin() as session:
            await self._doc(session, who, doc_id)

    # -- the update log -----------------------------------------------------------------

    async def push(
        self,
        who: Principal,
        doc_id: uuid.UUID,
        updates: Sequence[UpdateIn],
        kinds: frozenset[str] = LOG_KINDS,
    ) -> Appended:
        """Append a batch, answering after commit (group-committed with concurrent pushes to
        the same document). A client update id seen before answers its original seq."""
        done: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()

        def settle(result: Appended | BaseException) -> None:
            if done.done():
                return  # its waiter went away
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)

        self.submit(who, doc_id, updates, kinds, then=settle)
        return await asyncio.shield(done)

    def submit(
        self,
        who: Principal,
        doc_id: uuid.UUID,
        updates: Sequence[UpdateIn],
        kinds: frozenset[str] = LOG_KINDS,
        *,
        then: Then,
    ) -> None:
        """Check a batch and queue it without waiting (a websocket keeps reading while its
        pushes commit); after the commit, in the order of submission, ``then`` is called
        with the outcome."""
        self._check_batch(updates, kinds)
        wait = self._push_buckets.take(str(who.device_id), len(updates))
        if wait:
            raise RateLimited(int(wait) + 1, "this device is pushing too fast")
        self.appender.submit(who, doc_id, updates, kinds, then)

    def _check_batch(self, updates: Sequence[UpdateIn], kinds: frozenset[str]) -> None:
        limit = (
            self.settings.max_chunk_size if kinds is TRANSCRIPT else self.settings.max_update_size
        )
        if len(updates) > self.settings.max_batch:
            raise ValidationFailed(f"at most {self.settings.max_batch} updates per push")
        for update in updates:
            if len(update.ciphertext) > limit:
                raise PayloadTooLarge(f"an update may hold at most {limit} bytes")
        if len({u.client_update_id for u in updates}) != len(updates):
            raise ValidationFailed("client_update_id repeats within the batch")

    async def page(
        self,
        who: Principal | None,
        doc_id: uuid.UUID,
        after: int,
        limit: int,
        kinds: frozenset[str] = LOG_KINDS,
    ) -> UpdatePage:
        """Updates after ``after``; the newest snapshot first where it covers ``after``.
        ``who`` None: an internal read for a subscription that was authorized already."""
        limit = max(1, min(limit, MAX_PAGE))
        if self.engine.dialect.name == "postgresql":
            # Outside a transaction: the document, then its rows (two statements, not one
            # join that repeats the document on each of 5,000 rows: half the time).
            async with pooled_driver(self.engine) as driver:
                head = await repo.doc_head(driver, doc_id)
                if head is None or (
                    who is not None
                    and (not repo.writable_by(head, who.user_id) or head.kind not in kinds)
                ):
                    raise NotFound("no such document")
                snapshot = None
                if kinds is LOG_KINDS and after < head.snapshot_seq:
                    newest = await repo.newest_snapshot(driver, doc_id)
                    if newest is not None and newest[0] > after:
                        snapshot = SnapshotOut(*newest)
                        after = snapshot.upto_seq
                rows = await repo.read_rows(driver, doc_id, after, limit)
            # Rows that committed after the document was read are in the log: so is the head.
            last = rows[-1].seq if rows else 0
            return _bounded_page(snapshot, rows, after, max(head.head_seq, last))
        async with self.db.begin() as session:
            if who is None:
                doc = await session.get(Document, doc_id)
                if doc is None:
                    raise NotFound("no such document")
            else:
                doc = await self._doc(session, who, doc_id, kinds=kinds)
            snapshot = None
            if kinds is LOG_KINDS and after < doc.snapshot_seq:
                latest = await repo.latest_snapshot(session, doc_id)
                if latest is not None and latest.upto_seq > after:
                    snapshot = SnapshotOut(
                        latest.upto_seq,
                        latest.key_version,
                        latest.ciphertext,
                        latest.device_id,
                        latest.created_at,
                    )
                    after = latest.upto_seq
            rows = await repo.read_updates(session, doc_id, after, limit)
        return _bounded_page(snapshot, rows, after, doc.head_seq)

    async def read_log(self, doc_id: uuid.UUID, after: int, limit: int) -> list[Row]:
        """Rows after ``after``, for a subscription that was authorized already."""
        if self.engine.dialect.name == "postgresql":
            async with pooled_driver(self.engine) as driver:
                return await repo.read_rows(driver, doc_id, after, limit)
        async with self.db.begin() as session:
            return await repo.read_updates(session, doc_id, after, limit)

    async def heads(self, doc_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        async with self.db.begin() as session:
            return await repo.heads(session, doc_ids)

    # -- snapshots ----------------------------------------------------------------------

    async def put_snapshot(self, who: Principal, doc_id: uuid.UUID, body: SnapshotIn) -> DocOut:
        if len(body.ciphertext) > self.settings.max_snapshot_size:
            raise PayloadTooLarge(
                f"a snapshot may hold at most {self.settings.max_snapshot_size} bytes"
            )
        now = utcnow()
        async with self.db.begin() as session:
            # Transcripts have no snapshots: a chunk log is read whole and never compacted.
            doc = await self._doc(session, who, doc_id, lock=True, kinds=LOG_KINDS)
            if body.upto_seq > doc.head_seq:
                raise Conflict(f"upto_seq is past the head ({doc.head_seq})")
            if body.upto_seq <= doc.snapshot_seq:
                raise Conflict(f"a snapshot up to {doc.snapshot_seq} exists already")
            # No quota check: a snapshot is how a full account frees space (its pruning
            # removes more than it adds), and its size is capped above.
            covered = await repo.bytes_upto(session, doc_id, doc.snapshot_seq, body.upto_seq)
            snapshot = DocSnapshot(
                doc_id=doc_id,
                upto_seq=body.upto_seq,
                device_id=who.device_id,
                key_version=body.key_version,
                ciphertext=body.ciphertext,
                created_at=now,
                prune_after=now + timedelta(seconds=self.settings.snapshot_grace),
                pruned=False,
            )
            await repo.add_snapshot(session, doc, snapshot, covered)
            await session.flush()
            return doc_out(await self._doc(session, who, doc_id))

    async def get_snapshot(self, who: Principal, doc_id: uuid.UUID) -> SnapshotOut:
        async with self.db.begin() as session:
            await self._doc(session, who, doc_id, kinds=LOG_KINDS)
            snap = await repo.latest_snapshot(session, doc_id)
        if snap is None:
            raise NotFound("this document has no snapshot yet")
        return SnapshotOut(
            snap.upto_seq, snap.key_version, snap.ciphertext, snap.device_id, snap.created_at
        )

    async def prune_due(self, limit: int = 100) -> int:
        """Drop what snapshots past their grace period replace; the bytes freed."""
        freed = 0
        async with self.db.begin() as session:
            for snapshot in await repo.due_snapshots(session, utcnow(), limit):
                freed += await repo.prune(session, snapshot)
        return freed

    # -- settings -----------------------------------------------------------------------

    async def settings_list(self, who: Principal) -> SettingList:
        async with self.db.begin() as session:
            return SettingList(
                [setting_out(r) for r in await repo.settings_of(session, who.user_id)]
            )

    async def put_setting(self, who: Principal, key: str, body: SettingIn) -> SettingWrite:
        """Last write wins by (hlc, device id); a stale write answers the winner."""
        if not SETTING_KEY.fullmatch(key):
            raise ValidationFailed("a setting key is 1-128 of A-Z a-z 0-9 . _ -")
        if len(body.ciphertext) > self.settings.max_setting_size:
            raise PayloadTooLarge(
                f"a setting may hold at most {self.settings.max_setting_size} bytes"
            )
        candidate = SettingRegister(
            user_id=who.user_id,
            key=key,
            hlc=body.hlc,
            device_id=who.device_id,
            key_version=body.key_version,
            ciphertext=body.ciphertext,
            updated_at=utcnow(),
        )
        async with self.db.begin() as session:
            current = await repo.setting(session, who.user_id, key, lock=True)
            if current is None and await repo.count_settings(session, who.user_id) >= (
                limit := self.settings.max_settings
            ):
                raise QuotaExceeded(f"at most {limit} settings")
            if current is None and await repo.insert_setting(session, candidate):
                return SettingWrite(True, setting_out(candidate))
            current = current or await repo.setting(session, who.user_id, key, lock=True)
            if current is None:
                raise Conflict("the setting changed concurrently; retry")
            if (body.hlc, str(who.device_id)) <= (current.hlc, str(current.device_id)):
                return SettingWrite(False, setting_out(current))
            for field in ("hlc", "device_id", "key_version", "ciphertext", "updated_at"):
                setattr(current, field, getattr(candidate, field))
            return SettingWrite(True, setting_out(current))

    # -- helpers ------------------------------------------------------------------------

    async def _doc(
        self,
        session: AsyncSession,
        who: Principal,
        doc_id: uuid.UUID,
        *,
        lock: bool = False,
        kinds: frozenset[str] | None = None,
    ) -> Document:
        doc = await repo.owned_doc(session, who.user_id, doc_id, lock=lock)
        if doc is None or (kinds is not None and doc.kind not in kinds):
            raise NotFound("no such document")
        return doc


_ciphertext = operator.attrgetter("ciphertext")


def _bounded_page(
    snapshot: SnapshotOut | None, rows: list[UpdateOut], after: int, head: int
) -> UpdatePage:
    """A page stops near PAGE_BYTES, so that no answer holds gigabytes."""
    updates = rows
    if sum(map(len, map(_ciphertext, rows))) > PAGE_BYTES:  # C loops: the common case
        updates, size = [], 0
        for r in rows:
            if updates and size + len(r.ciphertext) > PAGE_BYTES:
                break
            size += len(r.ciphertext)
            updates.append(r)
    last = updates[-1].seq if updates else after
    return UpdatePage(snapshot, updates, head, last < head)
