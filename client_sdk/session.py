"""An encrypted sync session for one signed-in device: the account's keys, its canvases
(captured, batched, sealed, pushed; pulled, opened, applied), transcripts and settings."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pycrdt

from client_sdk import crypto
from client_sdk.canvas import Canvas
from client_sdk.client import AsyncClient, Page
from client_sdk.crypto import AccountKeys, KdfParams, Kind
from client_sdk.errors import Conflict, DecryptError, NotSignedIn
from client_sdk.store import LocalStore, Pending

SECRET = "account-secret"  # noqa: S105 - the keychain entry's name
PERSONAL_KEY_VERSION = 0
PUSH_BATCH = 200
Progress = Callable[[int, int], None]


class Session:
    def __init__(self, client: AsyncClient, keys: AccountKeys, store: LocalStore) -> None:
        self.client, self.keys, self.store = client, keys, store
        self._clock = Hlc()

    @classmethod
    async def open(
        cls,
        client: AsyncClient,
        recovery_code: str | None = None,
        kdf_cost: dict[str, int] | None = None,
    ) -> tuple[Session, str | None]:
        """Open the device's session. The first device of an account creates the account
        secret and returns its recovery code (show it once); a new device needs that code;
        a known device finds the secret in its keychain."""
        if client.tokens is None:
            raise NotSignedIn("sign in first")
        me = await client.me()
        stored = client.keychain.get(SECRET)
        created: str | None = None
        if recovery_code is not None:
            secret = crypto.parse_recovery_code(recovery_code)
        elif stored is not None:
            secret = base64.b64decode(stored)
        elif me.get("kdf") is None:
            secret = crypto.new_account_secret()
            created = crypto.recovery_code(secret)
        else:
            raise NotSignedIn("this account has a secret already: enter its recovery code")
        kdf = await cls._kdf(client, me, kdf_cost)
        keys = AccountKeys.derive(secret, kdf)
        client.keychain.set(SECRET, base64.b64encode(secret).decode())
        if me.get("public_key") is None or base64.b64decode(me["public_key"]) != keys.public_key():
            await client.set_public_key(keys.public_key())
        store = LocalStore(client.state_dir / "local.db")
        return cls(client, keys, store), created

    @staticmethod
    async def _kdf(
        client: AsyncClient, me: dict[str, Any], cost: dict[str, int] | None
    ) -> KdfParams:
        params = me.get("kdf")
        if params is None:
            fresh = KdfParams.fresh(**(cost or {}))
            try:
                await client.set_kdf(
                    {"alg": fresh.alg, "salt": fresh.salt, "n": fresh.n, "r": fresh.r, "p": fresh.p}
                )
                return fresh
            except Conflict:
                params = (await client.me())["kdf"]  # another first device won the race
        return KdfParams(
            salt=base64.b64decode(params["salt"]), n=params["n"], r=params["r"], p=params["p"]
        )

    def close(self) -> None:
        self.store.close()

    # -- canvases -----------------------------------------------------------------------

    async def new_canvas(self) -> CanvasSync:
        doc_id = uuid.uuid4()
        self.store.ensure_doc(doc_id, "canvas")
        await self.client.create_doc("canvas", doc_id)
        return self.canvas(doc_id)

    def canvas(self, doc_id: uuid.UUID) -> CanvasSync:
        """The local canvas, with every local change not yet sealed replayed into it."""
        self.store.ensure_doc(doc_id, "canvas")
        return CanvasSync(self, doc_id)

    # -- transcripts --------------------------------------------------------------------

    async def new_transcript(self) -> uuid.UUID:
        doc_id = uuid.uuid4()
        await self.client.create_doc("transcript", doc_id)
        return doc_id

    async def append_transcript(self, transcript_id: uuid.UUID, *texts: str) -> list[int]:
        key = self.keys.doc_key(transcript_id)
        chunks = [
            {
                "client_chunk_id": uuid.uuid4().hex,
                "key_version": PERSONAL_KEY_VERSION,
                "ciphertext": crypto.seal(
                    key,
                    text.encode(),
                    kind=Kind.CHUNK,
                    scope=transcript_id.bytes,
                    key_version=PERSONAL_KEY_VERSION,
                ),
            }
            for text in texts
        ]
        return list((await self.client.append_chunks(transcript_id, chunks))["seqs"])

    async def read_transcript(self, transcript_id: uuid.UUID) -> list[str]:
        key, texts, after = self.keys.doc_key(transcript_id), [], 0
        while True:
            page = await self.client.read_chunks(transcript_id, after)
            for chunk in page["chunks"]:
                plain = crypto.open_envelope(
                    key,
                    chunk["ciphertext"],
                    kind=Kind.CHUNK,
                    scope=transcript_id.bytes,
                    key_version=chunk["key_version"],
                )
                texts.append(plain.decode())
                after = chunk["seq"]
            if not page["has_more"]:
                return texts

    # -- settings -----------------------------------------------------------------------

    async def set_setting(self, key: str, value: Any) -> bool:
        """Last write wins across devices by hybrid logical clock; False if a newer value
        from another device is already there."""
        plain = json.dumps(value).encode()
        ct = crypto.seal(
            self.keys.settings_key(),
            plain,
            kind=Kind.SETTING,
            scope=crypto.setting_scope(key),
            key_version=PERSONAL_KEY_VERSION,
        )
        answer = await self.client.put_setting(key, self._clock.now(), PERSONAL_KEY_VERSION, ct)
        self._clock.observe(answer["setting"]["hlc"])
        return bool(answer["applied"])

    async def settings(self) -> dict[str, Any]:
        out = {}
        for setting in await self.client.list_settings():
            self._clock.observe(setting["hlc"])
            plain = crypto.open_envelope(
                self.keys.settings_key(),
                base64.b64decode(setting["ciphertext"]),
                kind=Kind.SETTING,
                scope=crypto.setting_scope(setting["key"]),
                key_version=setting["key_version"],
            )
            out[setting["key"]] = json.loads(plain)
        return out


class CanvasSync:
    """One canvas kept in sync: local changes are recorded as they happen, sealed into one
    encrypted batch per push (a Yjs update is ~30 bytes; an AEAD tag each would double the
    traffic), and remote updates are opened and applied only when all of a page opens."""

    def __init__(self, session: Session, doc_id: uuid.UUID) -> None:
        self.session, self.doc_id = session, doc_id
        self.store, self.client = session.store, session.client
        self.key = session.keys.doc_key(doc_id)
        applied, state = self.store.state(doc_id)
        self.applied_seq = applied
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        if state:
            doc.apply_update(state)
        for change in self.store.changes(doc_id):
            doc.apply_update(change)
        self.canvas = Canvas(doc)
        self._applying = False
        self._subscription = doc.observe(self._on_change)

    def _on_change(self, event: Any) -> None:
        if not self._applying:
            self.store.record_change(self.doc_id, event.update)

    # -- out ----------------------------------------------------------------------------

    def seal(self) -> Pending | None:
        """Merge the unsealed local changes into one encrypted batch in the outbox."""

        def seal(changes: list[bytes]) -> Pending:
            merged = pycrdt.merge_updates(*changes) if len(changes) > 1 else changes[0]
            ct = crypto.seal(
                self.key,
                merged,
                kind=Kind.UPDATE,
                scope=self.doc_id.bytes,
                key_version=PERSONAL_KEY_VERSION,
            )
            return Pending(uuid.uuid4().hex, PERSONAL_KEY_VERSION, ct)

        return self.store.seal(self.doc_id, seal, self.canvas.doc.get_update())

    async def push(self, progress: Progress | None = None) -> int:
        """Send the outbox in order; a batch leaves it only once acknowledged. Returns how
        many batches were sent."""
        self.seal()
        sent = 0
        total = self.store.batches(self.doc_id)
        while batch := self.store.pending(self.doc_id, PUSH_BATCH):
            answer = await self.client.push(
                self.doc_id,
                [
                    {
                        "client_update_id": p.client_update_id,
                        "key_version": p.key_version,
                        "ciphertext": p.ciphertext,
                    }
                    for p in batch
                ],
            )
            self.store.acknowledged([p.client_update_id for p in batch])
            sent += len(batch)
            if progress:
                progress(sent, total)
            if answer.get("snapshot_requested"):
                await self.pull()
                await self.snapshot()
        return sent

    # -- in -----------------------------------------------------------------------------

    async def pull(self, progress: Progress | None = None, page_size: int = 5000) -> int:
        """Catch up from the last applied seq; returns the new head. Pages come in the
        compact form, and the next one is asked for before this one is opened."""
        page = await self.client.pull_page(self.doc_id, self.applied_seq, page_size)
        while True:
            ahead = None
            if page.has_more:
                ahead = asyncio.ensure_future(
                    self.client.pull_page(self.doc_id, page.last, page_size)
                )
            try:
                self.apply(self._open_page(page), page.last)
                if progress:
                    progress(self.applied_seq, page.head)
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                raise
            if ahead is None:
                return page.head
            page = await ahead

    def _open_page(self, page: Page) -> list[bytes]:
        """Open every ciphertext of a page, or raise DecryptError having applied nothing."""
        opened = []
        if snap := page.snapshot:
            opened.append(self.open(snap.ciphertext, Kind.SNAPSHOT, snap.key_version))
        for row in page.updates:
            opened.append(self.open(row.ciphertext, Kind.UPDATE, row.key_version))
        return opened

    def open(self, ciphertext: bytes, kind: Kind, key_version: int) -> bytes:
        try:
            return crypto.open_envelope(
                self.key, ciphertext, kind=kind, scope=self.doc_id.bytes, key_version=key_version
            )
        except DecryptError as exc:
            raise DecryptError(f"document {self.doc_id}: {exc}") from None

    def apply(self, updates: list[bytes], applied_seq: int) -> None:
        self._applying = True
        try:
            with self.canvas.doc.transaction():
                for update in updates:
                    self.canvas.doc.apply_update(update)
        finally:
            self._applying = False
        self.applied_seq = max(self.applied_seq, applied_seq)
        self.store.save_state(self.doc_id, self.canvas.doc.get_update(), self.applied_seq)

    async def snapshot(self) -> bool:
        """Store the whole state as a snapshot up to the applied seq (when the server asks,
        or past a local threshold); False if there is nothing new to cover."""
        if self.applied_seq == 0:
            return False
        ct = crypto.seal(
            self.key,
            self.canvas.doc.get_update(),
            kind=Kind.SNAPSHOT,
            scope=self.doc_id.bytes,
            key_version=PERSONAL_KEY_VERSION,
        )
        try:
            await self.client.put_snapshot(self.doc_id, self.applied_seq, PERSONAL_KEY_VERSION, ct)
        except Conflict:
            return False
        return True

    async def sync(self) -> None:
        await self.push()
        await self.pull()


class Hlc:
    """A hybrid logical clock: ``15-digit wall ms . 5-digit counter``, monotonic, and moved
    forward past every clock the device observes."""

    def __init__(self) -> None:
        self.ms, self.counter = 0, 0

    def now(self) -> str:
        wall = int(time.time() * 1000)
        if wall > self.ms:
            self.ms, self.counter = wall, 0
        else:
            self.counter += 1
        return f"{self.ms:015d}.{self.counter:05d}"

    def observe(self, stamp: str) -> None:
        ms, counter = (int(part) for part in stamp.split("."))
        if (ms, counter) > (self.ms, self.counter):
            self.ms, self.counter = ms, counter
