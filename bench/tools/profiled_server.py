"""Run ``session-sync serve`` in-process under a sampling profiler, to find where a
benchmark's server CPU goes. Not a benchmark. The benchmarks start this instead of the plain
command when BENCH_PROFILE names a directory:

    BENCH_PROFILE=bench/results/prof .venv/bin/python bench/durable_append.py --no-rest
    less bench/results/prof/server-*.txt

A SIGPROF timer samples the main thread's stack every millisecond of CPU (this also sees
SQLAlchemy's greenlets, which confuse cProfile), and the functions seen most often, by self
and by inclusive time, are written out when the server stops.
"""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path
from types import FrameType

from inprocess import serve

INTERVAL = 0.001


class Sampler:
    """SIGPROF every millisecond of process CPU; the handler runs in the main thread at the
    next bytecode boundary and counts the interrupted stack (time spent in C code, such as
    asyncpg's protocol or uvloop, lands on the Python function that called it)."""

    def __init__(self) -> None:
        self.self_counts: collections.Counter[str] = collections.Counter()
        self.incl_counts: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        self.samples += 1
        seen: set[str] = set()
        leaf = True
        while frame is not None:
            code = frame.f_code
            key = f"{_short(code.co_filename)}:{code.co_name}"
            if leaf:
                self.self_counts[key] += 1
                leaf = False
            if key not in seen:
                self.incl_counts[key] += 1
                seen.add(key)
            frame = frame.f_back

    def report(self) -> str:
        lines = ["CPU seconds by thread:"]
        for task in sorted(Path("/proc/self/task").iterdir()):
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
            lines.append(f"  {(task / 'comm').read_text().strip():<20} {cpu:8.2f}")
        lines += ["", f"{self.samples} samples, one per {INTERVAL * 1000:g} ms of CPU", "", "self:"]
        for key, n in self.self_counts.most_common(40):
            lines.append(f"{n / max(1, self.samples):7.1%}  {key}")
        lines += ["", "inclusive:"]
        for key, n in self.incl_counts.most_common(80):
            lines.append(f"{n / max(1, self.samples):7.1%}  {key}")
        return "\n".join(lines) + "\n"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    out = Path(os.environ["BENCH_PROFILE"]) / f"server-{os.getpid()}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    sampler = Sampler()
    sampler.start()

    def finish(*_: object) -> None:
        sampler.stop()
        out.write_text(sampler.report())
        os._exit(0)

    serve(finish)


if __name__ == "__main__":
    main()
