"""What one replica's sync path has done, in plain counters: cheap enough for every group
commit, and read by ``/metrics`` when Prometheus scrapes (``server.ops.metrics``)."""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

# Seconds: a commit's fsync is well under a millisecond on a good disk; a stalled one is not.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(eq=False)
class SyncStats:
    pushes: int = 0  # answered by a group commit, whatever the outcome
    updates: int = 0  # rows appended
    failed_groups: int = 0  # a database error failed the whole group
    # Group commits by duration: counts per COMMIT_BUCKETS upper bound, the last one past
    # them all (not cumulative; the exporter sums them).
    commits: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    commit_seconds: float = 0.0
    bells: collections.Counter[str] = field(default_factory=collections.Counter)  # by outcome
    catch_ups: int = 0  # subscriptions that read the database for what bells did not bring
    closes: collections.Counter[int] = field(default_factory=collections.Counter)  # by code

    def committed(self, seconds: float, pushes: int) -> None:
        self.commits[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.commit_seconds += seconds
        self.pushes += pushes
