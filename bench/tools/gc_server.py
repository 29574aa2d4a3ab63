"""Run ``session-sync serve`` in-process and record every garbage-collector pause, to tell
event-loop stalls caused by the GC from others. Not a benchmark. The benchmarks start it
instead of the plain command with BENCH_SERVER_WRAPPER:

    BENCH_SERVER_WRAPPER=bench/tools/gc_server.py .venv/bin/python bench/cross_replica.py
    cat bench/results/gc-server-*.txt

When the server stops it writes, per generation, the number of collections and the longest
and total pause, and the ten longest pauses (generation, ms, seconds after the process started).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from inprocess import serve

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main() -> None:
    pauses: list[tuple[int, float, float]] = []  # generation, ms, seconds since start
    born, started = time.perf_counter(), [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            pauses.append((info["generation"], ms, started[0] - born))

    gc.callbacks.append(on_gc)

    def finish(*_: object) -> None:
        lines = [f"objects tracked by the GC at exit: {len(gc.get_objects())}"]
        for gen in (0, 1, 2):
            ms = [p[1] for p in pauses if p[0] == gen]
            if ms:
                lines.append(
                    f"gen{gen}: {len(ms)} collections, longest {max(ms):.1f} ms, "
                    f"total {sum(ms):.0f} ms"
                )
        longest = sorted(pauses, key=lambda p: -p[1])[:10]
        lines.append(
            "longest: " + ", ".join(f"gen{g} {ms:.1f} ms at {at:.1f} s" for g, ms, at in longest)
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"gc-server-{os.getpid()}.txt").write_text("\n".join(lines) + "\n")
        os._exit(0)

    serve(finish)


if __name__ == "__main__":
    main()
