"""All SQL of the sync core. Every query on a document goes through ``owned_doc`` (or takes
a document the caller got from it), so that another owner's id is simply not found."""

from __future__ import annotations

import operator
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from server.db.dialect import insert_or_ignore
from server.db.engine import pooled_driver
from server.db.models import DocSnapshot, Document, DocUpdate, SettingRegister
from server.sync.schemas import UpdateOut

# One stored update, as the log hands it out: the API's own struct, so that catch-up builds
# each row once (a msgspec struct costs a tenth of a dataclass to create).
Row = UpdateOut
# A row as a tuple, in C: the compact catch-up form and the bells carry rows as arrays.
row_fields = operator.attrgetter("seq", "device_id", "key_version", "ciphertext")


# -- documents --------------------------------------------------------------------------


class Owned(Protocol):
    owner_user_id: uuid.UUID


@dataclass(slots=True)
class LockedDoc:
    """A document row under its lock, as a group commit advances it."""

    id: uuid.UUID
    owner_user_id: uuid.UUID
    kind: str
    head_seq: int
    updates_since_snapshot: int
    bytes_since_snapshot: int
    lease_until: datetime | None  # of the snapshot lease
    owner_bytes: int  # stored by the owner in all their documents, for the quota
    start_seq: int = 0
    added_bytes: int = 0


def writable_by(doc: Owned, user_id: uuid.UUID) -> bool:
    """The one rule of who may read and write a document (teams will extend it here)."""
    return doc.owner_user_id == user_id


async def owned_doc(
    session: AsyncSession, user_id: uuid.UUID, doc_id: uuid.UUID, *, lock: bool = False
) -> Document | None:
    """The tenant-scoping helper: the document if ``user_id`` may use it. ``lock`` takes the
    row lock that orders writers of the document until the transaction ends."""
    doc = await (locked_doc(session, doc_id) if lock else session.get(Document, doc_id))
    return doc if doc is not None and writable_by(doc, user_id) else None


async def locked_doc(session: AsyncSession, doc_id: uuid.UUID) -> Document | None:
    """The document under its row lock, whoever owns it: the caller checks ``writable_by``."""
    query = select(Document).where(Document.id == doc_id).with_for_update()
    return await session.scalar(query.execution_options(populate_existing=True))


async def add_doc(
    session: AsyncSession, doc_id: uuid.UUID, user_id: uuid.UUID, kind: str, now: datetime
) -> bool:
    """Create the document; False if the id exists already (whoever owns it)."""
    result = await session.execute(
        insert_or_ignore(
            session,
            Document.__table__,
            id=doc_id,
            owner_user_id=user_id,
            kind=kind,
            created_at=now,
            head_seq=0,
            bytes_total=0,
            bytes_since_snapshot=0,
            updates_since_snapshot=0,
            snapshot_seq=0,
        )
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def doc_exists(session: AsyncSession, doc_id: uuid.UUID) -> bool:
    return (await session.scalar(select(Document.id).where(Document.id == doc_id))) is not None


async def list_docs(session: AsyncSession, user_id: uuid.UUID) -> Sequence[Document]:
    result = await session.scalars(
        select(Document).where(Document.owner_user_id == user_id).order_by(Document.created_at)
    )
    return result.all()


async def usage(session: AsyncSession, user_id: uuid.UUID) -> tuple[int, int]:
    """(documents, bytes stored) of a user."""
    count, total = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Document.bytes_total), 0)).where(
                Document.owner_user_id == user_id
            )
        )
    ).one()
    return int(count), int(total)


async def delete_doc(session: AsyncSession, doc: Document) -> None:
    await session.execute(delete(DocUpdate).where(DocUpdate.doc_id == doc.id))
    await session.execute(delete(DocSnapshot).where(DocSnapshot.doc_id == doc.id))
    await session.execute(delete(Document).where(Document.id == doc.id))


async def heads(session: AsyncSession, doc_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(Document.id, Document.head_seq).where(Document.id.in_(doc_ids))
    )
    return {doc_id: int(head) for doc_id, head in rows}


# -- the update log ---------------------------------------------------------------------


class AlreadyStored(Exception):
    """A client update id of the group is in the log already: a retry of a committed push."""


class Rerun(Exception):
    """The group's one statement (``PgLog.append_at_once``) found what needs the full
    transaction, and undid itself: a client update id stored already, or an owner whose
    documents would pass the quota. The group runs again with the lookup under its locks."""


# What sync_group_conflict() raises (migration 3c1d6a0e5b27) to void the one statement.
CONFLICT_SQLSTATE = "SS409"


@dataclass(frozen=True, slots=True)
class Advanced:
    """A document as the one statement left it: its head before the group (the group's
    seqs follow it), and its counters after."""

    base: int
    updates_since_snapshot: int
    bytes_since_snapshot: int
    lease_until: datetime | None


class GroupLog(Protocol):
    """The statements of one group commit, inside its transaction."""

    async def lock_docs(self, doc_ids: list[uuid.UUID]) -> dict[uuid.UUID, LockedDoc]:
        """Lock the documents' rows in id order (so that concurrent groups never deadlock),
        with what their owners store in all their documents."""

    async def seqs_for(
        self, pairs: list[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], int]:
        """The seqs already stored under these (document, client update id) pairs."""

    async def append_rows(self, rows: list[dict[str, Any]], docs: list[LockedDoc]) -> None:
        """Insert the rows and raise each document's head and counters; AlreadyStored if a
        (document, client update id) is in the log already (the transaction is then void)."""

    async def lease_snapshot(
        self, doc_id: uuid.UUID, device_id: uuid.UUID, now: datetime, until: datetime
    ) -> bool:
        """Give the device the job of writing the next snapshot, unless another holds it."""


@asynccontextmanager
async def group_transaction(engine: AsyncEngine) -> AsyncIterator[GroupLog]:
    """One group commit's transaction. On Postgres it runs on asyncpg directly, with arrays
    where SQLAlchemy would expand IN lists and multi-row VALUES: the same few prepared
    statements for every group size, and none of the statement building that cost most of
    a push's server CPU (bench/durable_append.py with BENCH_PROFILE)."""
    if engine.dialect.name == "postgresql":
        async with pooled_driver(engine) as driver, driver.transaction():
            yield PgLog(driver)
    else:
        async with engine.begin() as conn:
            yield _CoreGroupLog(conn)


@asynccontextmanager
async def statements(engine: AsyncEngine) -> AsyncIterator[PgLog]:
    """Postgres only: the group statements on one connection, each its own transaction."""
    async with pooled_driver(engine) as driver:
        yield PgLog(driver)


def _locked(row: Sequence[Any]) -> LockedDoc:
    head = int(row[3])
    return LockedDoc(
        row[0], row[1], row[2], head, int(row[4]), int(row[5]), row[6], int(row[7]), head
    )


_ROW_COLUMNS = ("doc_id", "seq", "client_update_id", "device_id", "key_version", "ciphertext")


def _columns(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The rows as one array per column, for ``unnest``: the same prepared statement for
    every number of rows."""
    return [[r[name] for r in rows] for name in _ROW_COLUMNS]


class PgLog:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def lock_docs(self, doc_ids: list[uuid.UUID]) -> dict[uuid.UUID, LockedDoc]:
        records = await self.driver.fetch(
            "SELECT id, owner_user_id, kind, head_seq, updates_since_snapshot,"
            " bytes_since_snapshot, snapshot_lease_until, (SELECT sum(o.bytes_total)"
            " FROM documents o WHERE o.owner_user_id = d.owner_user_id)"
            " FROM documents d WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE OF d",
            doc_ids,
        )
        return {r[0]: _locked(r) for r in records}

    async def seqs_for(
        self, pairs: list[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], int]:
        # One unique-index probe per pair, whatever the plan: a prepared statement soon runs
        # a generic plan, and for `doc_id = ANY(..) AND client_update_id = ANY(..)` that one
        # walked every row of the documents, so each push cost more as the log grew.
        records = await self.driver.fetch(
            "SELECT k.d, k.c, (SELECT seq FROM doc_updates u"
            " WHERE u.doc_id = k.d AND u.client_update_id = k.c)"
            " FROM unnest($1::uuid[], $2::text[]) AS k(d, c)",
            [doc for doc, _ in pairs],
            [cid for _, cid in pairs],
        )
        return {(r[0], r[1]): r[2] for r in records if r[2] is not None}

    async def append_rows(self, rows: list[dict[str, Any]], docs: list[LockedDoc]) -> None:
        # One statement: the insert runs as a data-modifying WITH of the heads' update. A
        # repeated client update id is skipped, not an error (a retry is not worth an ERROR
        # in Postgres's log), and counted: fewer rows than sent void the transaction.
        inserted = await self.driver.fetchval(
            "WITH appended AS (INSERT INTO doc_updates"
            " (doc_id, seq, client_update_id, device_id, key_version, ciphertext, created_at)"
            " SELECT d, s, c, v, k, x, $7 FROM unnest($1::uuid[], $2::bigint[], $3::text[],"
            " $4::uuid[], $5::int[], $6::bytea[]) AS r(d, s, c, v, k, x)"
            " ON CONFLICT (doc_id, client_update_id) DO NOTHING RETURNING 1)"
            " UPDATE documents d SET head_seq = v.head,"
            " bytes_total = d.bytes_total + v.bytes,"
            " bytes_since_snapshot = d.bytes_since_snapshot + v.bytes,"
            " updates_since_snapshot = d.updates_since_snapshot + v.count"
            " FROM unnest($8::uuid[], $9::bigint[], $10::bigint[], $11::bigint[])"
            " AS v(id, head, bytes, count) WHERE d.id = v.id"
            " RETURNING (SELECT count(*) FROM appended)",
            *_columns(rows),
            rows[0]["created_at"],
            [doc.id for doc in docs],
            [doc.head_seq for doc in docs],
            [doc.added_bytes for doc in docs],
            [doc.head_seq - doc.start_seq for doc in docs],
        )
        if inserted != len(rows):
            raise AlreadyStored()

    async def append_at_once(
        self,
        rows: list[dict[str, Any]],
        docs: list[LockedDoc],
        owners: dict[uuid.UUID, int],
        quota: int,
        now: datetime,
    ) -> dict[uuid.UUID, Advanced]:
        """A whole group commit in one statement, so one round trip (a transaction of lock,
        insert and heads takes four, and as much again of the server's CPU).

        The rows carry seqs counted from 0 per document (the appender assigned them with the
        head unknown); the statement locks the documents in id order, adds each head to its
        rows' seqs, inserts them and raises the heads. A document deleted meanwhile is
        missing from the answer and its rows are not stored. Rerun, with nothing stored, when
        a client update id is in the log already (fewer rows stored than sent) or an owner's
        documents would hold more than ``quota`` (``owners``: bytes this group adds to each)."""
        try:
            records = await self.driver.fetch(
                "WITH locked AS MATERIALIZED (SELECT id, head_seq FROM documents"
                " WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE),"
                " raised AS (UPDATE documents d SET head_seq = l.head_seq + v.count,"
                " bytes_total = d.bytes_total + v.bytes,"
                " bytes_since_snapshot = d.bytes_since_snapshot + v.bytes,"
                " updates_since_snapshot = d.updates_since_snapshot + v.count"
                " FROM locked l JOIN unnest($1::uuid[], $2::bigint[], $3::bigint[])"
                " AS v(id, count, bytes) USING (id) WHERE d.id = l.id"
                " RETURNING d.id, l.head_seq, v.count, d.updates_since_snapshot,"
                " d.bytes_since_snapshot, d.snapshot_lease_until),"
                " appended AS (INSERT INTO doc_updates"
                " (doc_id, seq, client_update_id, device_id, key_version, ciphertext, created_at)"
                " SELECT r.d, l.head_seq + r.s, r.c, r.v, r.k, r.x, $10"
                " FROM unnest($4::uuid[], $5::bigint[], $6::text[], $7::uuid[], $8::int[],"
                " $9::bytea[]) AS r(d, s, c, v, k, x) JOIN locked l ON l.id = r.d"
                " ON CONFLICT (doc_id, client_update_id) DO NOTHING RETURNING 1)"
                " SELECT id, head_seq, updates_since_snapshot, bytes_since_snapshot,"
                " snapshot_lease_until FROM raised WHERE CASE"
                " WHEN (SELECT count(*) FROM appended) < (SELECT sum(count) FROM raised)"
                " THEN sync_group_conflict('a client update id is stored already')"
                " WHEN EXISTS (SELECT FROM unnest($11::uuid[], $12::bigint[]) AS q(owner, added)"
                " WHERE q.added + (SELECT coalesce(sum(o.bytes_total), 0) FROM documents o"
                " WHERE o.owner_user_id = q.owner) > $13)"
                " THEN sync_group_conflict('an owner would pass the storage quota')"
                " ELSE true END",
                [doc.id for doc in docs],
                [doc.head_seq - doc.start_seq for doc in docs],
                [doc.added_bytes for doc in docs],
                *_columns(rows),
                now,
                list(owners),
                list(owners.values()),
                quota,
            )
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == CONFLICT_SQLSTATE:
                raise Rerun(str(exc)) from exc
            raise
        return {r[0]: Advanced(int(r[1]), int(r[2]), int(r[3]), r[4]) for r in records}

    async def lease_snapshot(
        self, doc_id: uuid.UUID, device_id: uuid.UUID, now: datetime, until: datetime
    ) -> bool:
        status = await self.driver.execute(
            "UPDATE documents SET snapshot_lease_device = $2, snapshot_lease_until = $4"
            " WHERE id = $1 AND (snapshot_lease_until IS NULL OR snapshot_lease_until < $3)",
            doc_id,
            device_id,
            now,
            until,
        )
        return bool(status == "UPDATE 1")


class _CoreGroupLog:
    """SQLAlchemy Core, for the embedded SQLite database."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock_docs(self, doc_ids: list[uuid.UUID]) -> dict[uuid.UUID, LockedDoc]:
        d = Document.__table__.c
        o = Document.__table__.alias("o").c
        owner_bytes = (
            select(func.sum(o.bytes_total)).where(o.owner_user_id == d.owner_user_id)
        ).scalar_subquery()
        result = await self.conn.execute(
            select(
                d.id,
                d.owner_user_id,
                d.kind,
                d.head_seq,
                d.updates_since_snapshot,
                d.bytes_since_snapshot,
                d.snapshot_lease_until,
                owner_bytes,
            )
            .where(d.id.in_(doc_ids))
            .order_by(d.id)
            .with_for_update()
        )
        return {row[0]: _locked(row) for row in result}

    async def seqs_for(
        self, pairs: list[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], int]:
        u = DocUpdate.__table__.c
        result = await self.conn.execute(
            select(u.doc_id, u.client_update_id, u.seq).where(
                u.doc_id.in_({doc for doc, _ in pairs}),
                u.client_update_id.in_({cid for _, cid in pairs}),
            )
        )
        wanted = set(pairs)
        return {(d, c): int(s) for d, c, s in result if (d, c) in wanted}

    async def append_rows(self, rows: list[dict[str, Any]], docs: list[LockedDoc]) -> None:
        try:
            await self.conn.execute(insert(DocUpdate), rows)
        except IntegrityError as exc:
            if "client_update_id" in str(exc.orig):
                raise AlreadyStored() from exc
            raise
        d = Document.__table__
        await self.conn.execute(
            update(Document)
            .where(d.c.id == bindparam("b_id"))
            .values(
                head_seq=bindparam("b_head"),
                bytes_total=d.c.bytes_total + bindparam("b_bytes"),
                bytes_since_snapshot=d.c.bytes_since_snapshot + bindparam("b_bytes"),
                updates_since_snapshot=d.c.updates_since_snapshot + bindparam("b_count"),
            ),
            [
                {
                    "b_id": doc.id,
                    "b_head": doc.head_seq,
                    "b_bytes": doc.added_bytes,
                    "b_count": doc.head_seq - doc.start_seq,
                }
                for doc in docs
            ],
        )

    async def lease_snapshot(
        self, doc_id: uuid.UUID, device_id: uuid.UUID, now: datetime, until: datetime
    ) -> bool:
        result = await self.conn.execute(
            update(Document)
            .where(
                Document.id == doc_id,
                (Document.snapshot_lease_until.is_(None)) | (Document.snapshot_lease_until < now),
            )
            .values(snapshot_lease_device=device_id, snapshot_lease_until=until)
        )
        return bool(getattr(result, "rowcount", 0) == 1)


_READ_PG = (
    "SELECT seq, device_id, key_version, ciphertext FROM doc_updates"
    " WHERE doc_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)


@dataclass(slots=True)
class DocHead:
    """What a catch-up page needs of its document."""

    owner_user_id: uuid.UUID
    kind: str
    head_seq: int
    snapshot_seq: int


async def doc_head(driver: Any, doc_id: uuid.UUID) -> DocHead | None:
    """What a catch-up page needs of its document, through the driver (Postgres only). The
    caller applies ``writable_by``."""
    record = await driver.fetchrow(
        "SELECT owner_user_id, kind, head_seq, snapshot_seq FROM documents WHERE id = $1",
        doc_id,
    )
    return None if record is None else DocHead(*record)


async def read_updates(
    session: AsyncSession, doc_id: uuid.UUID, after: int, limit: int
) -> list[Row]:
    """Updates after a seq, in order (SQLite; Postgres reads them with ``read_rows``)."""
    result = await session.execute(
        select(DocUpdate.seq, DocUpdate.device_id, DocUpdate.key_version, DocUpdate.ciphertext)
        .where(DocUpdate.doc_id == doc_id, DocUpdate.seq > after)
        .order_by(DocUpdate.seq)
        .limit(limit)
    )
    return [Row(int(s), d, int(k), bytes(c)) for s, d, k, c in result]


async def read_rows(driver: Any, doc_id: uuid.UUID, after: int, limit: int) -> list[Row]:
    """``read_updates`` through the driver (Postgres only): SQLAlchemy's result processing
    cost 4x asyncpg's own fetch (bench/catchup.py)."""
    # asyncpg's UUIDs subclass uuid.UUID: equal, hashable, and encoded by msgspec as is.
    return [Row(s, d, k, c) for s, d, k, c in await driver.fetch(_READ_PG, doc_id, after, limit)]


# -- snapshots --------------------------------------------------------------------------


async def newest_snapshot(
    driver: Any, doc_id: uuid.UUID
) -> tuple[int, int, bytes, uuid.UUID, datetime] | None:
    """(upto_seq, key_version, ciphertext, device_id, created_at) of the newest snapshot,
    through the driver (Postgres only)."""
    record = await driver.fetchrow(
        "SELECT upto_seq, key_version, ciphertext, device_id, created_at FROM doc_snapshots"
        " WHERE doc_id = $1 ORDER BY upto_seq DESC LIMIT 1",
        doc_id,
    )
    return None if record is None else tuple(record)


async def latest_snapshot(session: AsyncSession, doc_id: uuid.UUID) -> DocSnapshot | None:
    return await session.scalar(
        select(DocSnapshot)
        .where(DocSnapshot.doc_id == doc_id)
        .order_by(DocSnapshot.upto_seq.desc())
        .limit(1)
    )


async def add_snapshot(
    session: AsyncSession, doc: Document, snapshot: DocSnapshot, covered_bytes: int
) -> None:
    session.add(snapshot)
    await session.execute(
        update(Document)
        .where(Document.id == doc.id)
        .values(
            snapshot_seq=snapshot.upto_seq,
            bytes_total=Document.bytes_total + len(snapshot.ciphertext),
            bytes_since_snapshot=Document.bytes_since_snapshot - covered_bytes,
            updates_since_snapshot=Document.head_seq - snapshot.upto_seq,
            snapshot_lease_device=None,
            snapshot_lease_until=None,
        )
    )


async def bytes_upto(session: AsyncSession, doc_id: uuid.UUID, after: int, upto: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(func.length(DocUpdate.ciphertext)), 0)).where(
            DocUpdate.doc_id == doc_id, DocUpdate.seq > after, DocUpdate.seq <= upto
        )
    )
    return int(total or 0)


async def due_snapshots(session: AsyncSession, now: datetime, limit: int) -> Sequence[DocSnapshot]:
    result = await session.scalars(
        select(DocSnapshot)
        .where(DocSnapshot.pruned.is_(False), DocSnapshot.prune_after <= now)
        .limit(limit)
    )
    return result.all()


async def prune(session: AsyncSession, snapshot: DocSnapshot) -> int:
    """Drop the updates and older snapshots a snapshot replaces; the bytes freed."""
    doc_id, upto = snapshot.doc_id, snapshot.upto_seq
    freed = await bytes_upto(session, doc_id, 0, upto)
    freed += int(
        await session.scalar(
            select(func.coalesce(func.sum(func.length(DocSnapshot.ciphertext)), 0)).where(
                DocSnapshot.doc_id == doc_id, DocSnapshot.upto_seq < upto
            )
        )
        or 0
    )
    await session.execute(
        delete(DocUpdate).where(DocUpdate.doc_id == doc_id, DocUpdate.seq <= upto)
    )
    await session.execute(
        delete(DocSnapshot).where(DocSnapshot.doc_id == doc_id, DocSnapshot.upto_seq < upto)
    )
    await session.execute(
        update(DocSnapshot)
        .where(DocSnapshot.doc_id == doc_id, DocSnapshot.upto_seq == upto)
        .values(pruned=True)
    )
    await session.execute(
        update(Document)
        .where(Document.id == doc_id)
        .values(bytes_total=Document.bytes_total - freed)
    )
    return freed


# -- settings registers -----------------------------------------------------------------


async def settings_of(session: AsyncSession, user_id: uuid.UUID) -> Sequence[SettingRegister]:
    result = await session.scalars(
        select(SettingRegister)
        .where(SettingRegister.user_id == user_id)
        .order_by(SettingRegister.key)
    )
    return result.all()


async def setting(
    session: AsyncSession, user_id: uuid.UUID, key: str, *, lock: bool = False
) -> SettingRegister | None:
    query = select(SettingRegister).where(
        SettingRegister.user_id == user_id, SettingRegister.key == key
    )
    if lock:
        query = query.with_for_update()
    return await session.scalar(query.execution_options(populate_existing=True))


async def insert_setting(session: AsyncSession, register: SettingRegister) -> bool:
    """Insert a new register; False when a concurrent writer created it first."""
    values = {c.name: getattr(register, c.key) for c in SettingRegister.__table__.columns}
    result = await session.execute(insert_or_ignore(session, SettingRegister.__table__, **values))
    return bool(getattr(result, "rowcount", 0) == 1)


async def count_settings(session: AsyncSession, user_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count()).select_from(SettingRegister).where(SettingRegister.user_id == user_id)
    )
    return int(count or 0)
