"""The server run inside a tool's own process (gc_server.py, profiled_server.py)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


def serve(finish: Callable[..., None]) -> None:
    """Run ``session-sync`` with this process's arguments; ``finish`` on SIGTERM or return
    (it writes the tool's report and ends the process)."""
    # uvicorn restores this handler after its graceful shutdown and raises SIGTERM again.
    signal.signal(signal.SIGTERM, finish)
    from server.__main__ import main

    try:
        main(sys.argv[1:])
    finally:
        finish()
