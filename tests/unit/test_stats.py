"""The sync path's counters and their Prometheus form."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.ops.metrics import SyncCollector
from server.sync.protocol import CloseCode
from server.sync.stats import SyncStats


def exported(stats: SyncStats) -> dict[tuple[str, ...], float]:
    registry = CollectorRegistry()
    registry.register(SyncCollector(stats, lambda: 3, lambda: 2))
    return {
        (sample.name, *(f"{k}={v}" for k, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_commit_durations_land_in_cumulative_le_buckets() -> None:
    stats = SyncStats()
    for seconds in (0.0004, 0.001, 0.0011, 0.03, 7.0):  # 0.001 is "le 0.001"
        stats.committed(seconds, pushes=2)
    m = exported(stats)
    bucket = "session_sync_group_commit_seconds_bucket"
    assert m[(bucket, "le=0.001")] == 2
    assert m[(bucket, "le=0.0025")] == 3
    assert m[(bucket, "le=0.025")] == 3
    assert m[(bucket, "le=0.05")] == 4
    assert m[(bucket, "le=2.5")] == 4
    assert m[(bucket, "le=+Inf")] == m[("session_sync_group_commit_seconds_count",)] == 5
    assert abs(m[("session_sync_group_commit_seconds_sum",)] - 7.0325) < 1e-9
    assert m[("session_sync_pushes_total",)] == 10


def test_live_counts_bells_and_closes_are_exported() -> None:
    stats = SyncStats()
    stats.bells["rung"] += 4
    stats.bells["heard"] += 1
    stats.closes[CloseCode.TOO_SLOW] += 2
    m = exported(stats)
    assert m[("session_sync_websockets",)] == 3
    assert m[("session_sync_documents_subscribed",)] == 2
    assert m[("session_sync_bells_total", "outcome=rung")] == 4
    assert m[("session_sync_bells_total", "outcome=heard")] == 1
    assert m[("session_sync_bells_total", "outcome=failed")] == 0
    assert m[("session_sync_websocket_closes_total", "code=4009", "name=too_slow")] == 2
