"""The device's local state in one SQLite file: each document's applied seq and CRDT state,
local changes not yet sealed, and the outbox of sealed (encrypted) batches not yet
acknowledged. Each step commits before the next acts on it, so a crash of the process
loses no edit, and a resend after a lost ack carries the same client update id."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    applied_seq INTEGER NOT NULL DEFAULT 0,
    state BLOB NOT NULL DEFAULT x''
);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    update_bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    client_update_id TEXT NOT NULL UNIQUE,
    key_version INTEGER NOT NULL,
    ciphertext BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    client_update_id: str
    key_version: int
    ciphertext: bytes


class LocalStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed change survives the process crashing (not a power
        # cut), at a fraction of FULL's cost per edit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def ensure_doc(self, doc_id: uuid.UUID, kind: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO docs (doc_id, kind) VALUES (?, ?)", (str(doc_id), kind)
            )

    def docs(self) -> list[tuple[uuid.UUID, str]]:
        with self._lock:
            rows = self._db.execute("SELECT doc_id, kind FROM docs ORDER BY doc_id").fetchall()
        return [(uuid.UUID(d), k) for d, k in rows]

    def state(self, doc_id: uuid.UUID) -> tuple[int, bytes]:
        with self._lock:
            row = self._db.execute(
                "SELECT applied_seq, state FROM docs WHERE doc_id = ?", (str(doc_id),)
            ).fetchone()
        return (0, b"") if row is None else (int(row[0]), bytes(row[1]))

    def save_state(self, doc_id: uuid.UUID, state: bytes, applied_seq: int | None = None) -> None:
        with self._lock:
            if applied_seq is None:
                self._db.execute("UPDATE docs SET state = ? WHERE doc_id = ?", (state, str(doc_id)))
            else:
                self._db.execute(
                    "UPDATE docs SET state = ?, applied_seq = max(applied_seq, ?) WHERE doc_id = ?",
                    (state, applied_seq, str(doc_id)),
                )

    def record_change(self, doc_id: uuid.UUID, update: bytes) -> None:
        """One local CRDT transaction, kept until it is sealed into a batch."""
        with self._lock:
            self._db.execute(
                "INSERT INTO changes (doc_id, update_bytes) VALUES (?, ?)", (str(doc_id), update)
            )

    def changes(self, doc_id: uuid.UUID) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT update_bytes FROM changes WHERE doc_id = ? ORDER BY id", (str(doc_id),)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def seal(
        self, doc_id: uuid.UUID, seal: Callable[[list[bytes]], Pending], state: bytes
    ) -> Pending | None:
        """Turn the unsealed changes into one outbox batch, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, update_bytes FROM changes WHERE doc_id = ? ORDER BY id",
                    (str(doc_id),),
                ).fetchall()
                if not rows:
                    self._db.execute("ROLLBACK")
                    return None
                pending = seal([bytes(r[1]) for r in rows])
                self._db.execute(
                    "INSERT INTO outbox (doc_id, client_update_id, key_version, ciphertext)"
                    " VALUES (?, ?, ?, ?)",
                    (
                        str(doc_id),
                        pending.client_update_id,
                        pending.key_version,
                        pending.ciphertext,
                    ),
                )
                self._db.execute(
                    "DELETE FROM changes WHERE doc_id = ? AND id <= ?", (str(doc_id), rows[-1][0])
                )
                self._db.execute("UPDATE docs SET state = ? WHERE doc_id = ?", (state, str(doc_id)))
                self._db.execute("COMMIT")
                return pending
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending(self, doc_id: uuid.UUID, limit: int = 500) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT client_update_id, key_version, ciphertext FROM outbox"
                " WHERE doc_id = ? ORDER BY id LIMIT ?",
                (str(doc_id), limit),
            ).fetchall()
        return [Pending(c, int(k), bytes(b)) for c, k, b in rows]

    def acknowledged(self, client_update_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany(
                "DELETE FROM outbox WHERE client_update_id = ?", [(c,) for c in client_update_ids]
            )

    def batches(self, doc_id: uuid.UUID) -> int:
        """Sealed batches of the document waiting for an ack."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM outbox WHERE doc_id = ?", (str(doc_id),)
            ).fetchone()
        return int(row[0])

    def pending_count(self) -> int:
        """Local edits not yet acknowledged by the server: unsealed changes and batches."""
        with self._lock:
            changes = self._db.execute("SELECT count(*) FROM changes").fetchone()[0]
            batches = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return int(changes) + int(batches)
