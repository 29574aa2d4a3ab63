"""Outgoing mail: a real SMTP client, or the log in development, behind a background outbox.

Requests only enqueue; a worker task delivers, so a request's latency never depends on the
mail server or on whether the address has an account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from server.config import ConfigError

log = logging.getLogger("session_sync.mail")


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Transport(Protocol):
    async def deliver(self, mail: Mail) -> None: ...


class LogTransport:
    """Development mode: the mail, code included, goes to the server's log."""

    async def deliver(self, mail: Mail) -> None:
        log.warning(
            "DEVELOPMENT MODE (no SMTP configured), mail not sent; to=%s subject=%s\n%s",
            mail.to,
            mail.subject,
            mail.body,
        )


class SmtpTransport:
    def __init__(self, url: str, sender: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps", "smtp+plain"} or not parts.hostname:
            raise ConfigError("SESSION_SYNC_SMTP_URL must look like smtp://[user:pw@]host[:port]")
        query = parse_qs(parts.query)
        self.sender = sender
        self.timeout = timeout
        self.hostname = parts.hostname
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        # smtp:// upgrades with STARTTLS when the server offers it; ?starttls=require insists.
        self.start_tls: bool | None = None
        if parts.scheme == "smtp+plain":
            self.start_tls = False
        elif query.get("starttls", [""])[0] == "require":
            self.start_tls = True
        self.verify = query.get("verify", ["true"])[0] != "false"

    async def deliver(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.implicit_tls,
            start_tls=None if self.implicit_tls else self.start_tls,
            tls_context=context,
            timeout=self.timeout,
        )


class Outbox:
    """A bounded queue drained by one worker; a failed delivery is retried a few times."""

    ATTEMPTS = 3

    def __init__(self, transport: Transport, maxsize: int = 10_000) -> None:
        self.transport = transport
        self._queue: asyncio.Queue[Mail] = asyncio.Queue(maxsize)
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def enqueue(self, mail: Mail) -> None:
        try:
            self._queue.put_nowait(mail)
        except asyncio.QueueFull:
            log.error("mail outbox full; a message was dropped")

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="mail-outbox")

    async def close(self, drain_seconds: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        while True:
            mail = await self._queue.get()
            try:
                await self._deliver(mail)
            finally:
                self._queue.task_done()

    async def _deliver(self, mail: Mail) -> None:
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                await self.transport.deliver(mail)
                return
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                log.warning("mail delivery failed (attempt %d): %s", attempt, type(exc).__name__)
                await asyncio.sleep(0.5 * 2**attempt)
        log.error("mail delivery gave up after %d attempts", self.ATTEMPTS)


def transport_for(url: str | None, sender: str, timeout: float) -> Transport:
    return LogTransport() if url is None else SmtpTransport(url, sender, timeout)
