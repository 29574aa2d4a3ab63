"""The one typed Settings object; nothing else in the server reads the environment.

Every field is documented in ``docs/configuration.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import secrets
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Placeholder values that must never be used as the secret outside development mode.
WEAK_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development"})
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


class Settings(BaseSettings):
    """Server configuration, read from ``SESSION_SYNC_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SESSION_SYNC_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses to start with a missing or weak secret key and "
        "with one-time codes printed to the log.",
    )
    data_dir: Path = Field(
        Path("./data"),
        description="Where the embedded default keeps its SQLite file and generated secret.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. `postgresql+asyncpg://user:pw@host/db`. "
        "Unset: an embedded SQLite file in the data directory.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for fan-out and rate-limit counters, e.g. `redis://host:6379/0`. "
        "Unset: an in-process broker (one replica only).",
    )
    smtp_url: str | None = Field(
        None,
        description="`smtp://[user:pw@]host[:port]` (STARTTLS when offered; add "
        "`?starttls=require` to insist), `smtps://...` (implicit TLS) or "
        "`smtp+plain://...` (never TLS: a mail catcher on a private network). "
        "Add `?verify=false` to accept a self-signed certificate. Unset: codes go to the log "
        "(development mode).",
    )
    smtp_from: str = Field(
        "Session <no-reply@localhost>", description="The From header of one-time-code mail."
    )
    smtp_timeout: float = Field(10.0, description="Seconds for one SMTP delivery.")
    public_url: str = Field(
        "http://localhost:8000",
        description="The URL clients reach this server at; the issuer of its tokens.",
    )
    secret_key: str | None = Field(
        None,
        description="At least 32 characters. Keys the HMACs of stored codes and tokens and "
        "derives the token-signing keys. Unset in development: generated once and kept in "
        "the data directory.",
    )
    jwt_key_generation: int = Field(
        1,
        ge=1,
        description="Which signing key derived from the secret signs new access tokens. "
        "Raise it by one to rotate; the previous generation still verifies.",
    )
    access_token_ttl: int = Field(600, ge=60, description="Access-token lifetime, seconds.")
    refresh_token_ttl: int = Field(
        60 * 60 * 24 * 60, ge=3600, description="Refresh-token lifetime, seconds (60 days)."
    )
    refresh_reuse_grace: int = Field(
        10,
        ge=0,
        le=300,
        description="Seconds after its use in which a refresh token is exchanged again instead "
        "of being taken for stolen (a lost answer, two tabs). 0: never.",
    )
    otp_ttl: int = Field(600, ge=60, description="One-time-code lifetime, seconds.")
    otp_max_attempts: int = Field(5, ge=1, description="Wrong tries before a code is burnt.")
    otp_daily_failures: int = Field(
        20, ge=1, description="Wrong codes per address per day before verifying is refused."
    )
    otp_resend_interval: int = Field(60, ge=1, description="Seconds between mails per address.")
    otp_ip_limit: int = Field(30, ge=1, description="Code requests per client address per window.")
    otp_ip_window: int = Field(600, ge=1, description="That window, seconds.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "`X-Forwarded-For` is believed. Empty: the socket's peer is the client.",
    )
    max_body_size: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body accepted, bytes."
    )
    migrate_on_start: bool | None = Field(
        None,
        description="Run migrations when `serve` starts. Unset: yes on the embedded SQLite "
        "default, no on an external database (run `session-sync migrate`).",
    )
    # -- the sync log ---------------------------------------------------------------------
    max_update_size: int = Field(
        1024 * 1024, ge=64, description="Largest encrypted update, bytes (after base64 decoding)."
    )
    max_snapshot_size: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest encrypted snapshot, bytes."
    )
    max_chunk_size: int = Field(
        1024 * 1024, ge=64, description="Largest encrypted transcript chunk, bytes."
    )
    max_batch: int = Field(1000, ge=1, description="Most updates in one push.")
    max_setting_size: int = Field(
        64 * 1024, ge=64, description="Largest encrypted settings value, bytes."
    )
    max_settings: int = Field(1000, ge=1, description="Settings registers one user may keep.")
    storage_quota: int = Field(
        1024**3, ge=1024, description="Bytes of updates and snapshots one user may store."
    )
    max_docs_per_user: int = Field(10_000, ge=1, description="Documents one user may own.")
    push_rate: float = Field(200.0, gt=0, description="Updates per second one device may push.")
    push_burst: int = Field(1000, ge=1, description="Burst allowance above that rate.")
    snapshot_after_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="Ask a device for a snapshot once this many update bytes follow the last.",
    )
    snapshot_after_updates: int = Field(
        5000, ge=1, description="... or once this many updates follow the last snapshot."
    )
    snapshot_lease: int = Field(
        60, ge=1, description="Seconds one device has to write a requested snapshot."
    )
    snapshot_grace: int = Field(
        600,
        ge=0,
        description="Seconds before the updates a snapshot covers are pruned, so that a "
        "device in the middle of catching up is not cut off.",
    )
    ws_max_frame: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest websocket frame accepted, bytes."
    )
    ws_send_queue: int = Field(
        1024,
        ge=8,
        description="Frames queued for one socket; a client that falls further behind is "
        "disconnected (close code 4009) and catches up when it reconnects.",
    )
    ws_heartbeat: int = Field(
        25, ge=1, description="Seconds between heartbeats; silence for two is a dead socket."
    )
    presence_interval: float = Field(
        0.05, gt=0, description="Presence is relayed at most once per this many seconds."
    )
    sweep_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between checks of subscribed documents' heads against the "
        "database, which catches bells lost with a Redis outage.",
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field("text", description="Log line format.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_form(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in {"smtp", "smtps", "smtp+plain"} or not parts.hostname:
                raise ValueError("must look like smtp://[user:pw@]host[:port] (or smtps://)")
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def embedded(self) -> bool:
        """True when running on the embedded SQLite default."""
        return self.database_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'session-sync.db').resolve()}"
        url = self.database_url
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url

    @property
    def should_migrate_on_start(self) -> bool:
        return self.embedded if self.migrate_on_start is None else self.migrate_on_start

    @cached_property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        try:
            return tuple(ip_network(entry, strict=False) for entry in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"SESSION_SYNC_TRUSTED_PROXIES: {exc}") from exc

    def resolved_secret(self) -> str:
        """The secret key, generating and keeping one in the data directory in development."""
        if self.secret_key is not None:
            if self.secret_key in WEAK_SECRETS or len(self.secret_key) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"SESSION_SYNC_SECRET_KEY is a placeholder or shorter than "
                    f"{MIN_SECRET_LENGTH} characters; generate one with `openssl rand -hex 32`"
                )
            return self.secret_key
        if self.is_production:
            raise ConfigError(
                "SESSION_SYNC_SECRET_KEY must be set in production "
                "(generate one with `openssl rand -hex 32`)"
            )
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        path.touch(mode=0o600)
        path.write_text(value)
        return value

    def check(self) -> None:
        """Raise ConfigError for a configuration the server must refuse to start with."""
        self.resolved_secret()
        _ = self.proxy_networks
        if self.push_burst < self.max_batch:
            raise ConfigError(
                "SESSION_SYNC_PUSH_BURST must be at least SESSION_SYNC_MAX_BATCH: a batch "
                "larger than the burst could never be pushed"
            )
        if self.is_production and self.smtp_url is None:
            raise ConfigError(
                "SESSION_SYNC_SMTP_URL must be set in production: without it one-time "
                "codes are written to the log"
            )
