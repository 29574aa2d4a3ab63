"""Where the SDK talks to and keeps its state: `SESSION_SYNC_URL` switches the desktop
between the hosted service and a self-hosted server; an explicit argument wins."""

from __future__ import annotations

import os
from pathlib import Path

HOSTED_URL = "https://sync.session.app"


def base_url(explicit: str | None = None) -> str:
    return (explicit or os.environ.get("SESSION_SYNC_URL") or HOSTED_URL).rstrip("/")


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get("SESSION_SYNC_STATE_DIR"):
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "session-sync"
