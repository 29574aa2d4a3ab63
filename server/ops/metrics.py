"""Prometheus metrics in a registry of the app's own: HTTP requests by the middleware that
fills them, and the sync path's counters read at scrape time."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from server.sync.protocol import CloseCode
from server.sync.stats import COMMIT_BUCKETS, SyncStats

log = logging.getLogger("session_sync.http")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "session_sync_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "session_sync_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.mail_queue = Gauge(
            "session_sync_mail_queue", "Mails waiting in the outbox", registry=self.registry
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                self._observe(scope, status, time.perf_counter() - started)

        return record

    def _observe(self, scope: Any, status: int, seconds: float) -> None:
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "")
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        log.info(
            "request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "ms": round(seconds * 1e3, 2),
            },
        )


class SyncCollector(Collector):
    """The sync path of this replica: sockets, group commits, bells, catch-ups and closes.
    ``sockets`` and ``documents`` are read when scraped (live counts)."""

    def __init__(
        self, stats: SyncStats, sockets: Callable[[], int], documents: Callable[[], int]
    ) -> None:
        self.stats, self.sockets, self.documents = stats, sockets, documents

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "session_sync_websockets", "Open sync websockets", value=self.sockets()
        )
        yield GaugeMetricFamily(
            "session_sync_documents_subscribed",
            "Documents with at least one subscribed socket on this replica",
            value=self.documents(),
        )
        bounds = [*map(str, COMMIT_BUCKETS), "+Inf"]
        yield HistogramMetricFamily(
            "session_sync_group_commit_seconds",
            "Group commits of the update log by duration (one commit answers many pushes)",
            buckets=list(zip(bounds, itertools.accumulate(s.commits), strict=True)),
            sum_value=s.commit_seconds,
        )
        yield CounterMetricFamily(
            "session_sync_pushes", "Pushes answered by a group commit", value=s.pushes
        )
        yield CounterMetricFamily(
            "session_sync_updates_appended", "Updates appended to the log", value=s.updates
        )
        yield CounterMetricFamily(
            "session_sync_group_commit_failures",
            "Group commits failed by a database error (their pushes were refused)",
            value=s.failed_groups,
        )
        bells = CounterMetricFamily(
            "session_sync_bells",
            "Bells rung to other replicas (rung, failed: the broker was down; dropped: the queue "
            "was full) and heard from them (heard)",
            labels=["outcome"],
        )
        for outcome in ("rung", "failed", "dropped", "heard"):
            bells.add_metric([outcome], s.bells[outcome])
        yield bells
        yield CounterMetricFamily(
            "session_sync_catch_up_reads",
            "Subscriptions that read the database for updates the bells did not bring",
            value=s.catch_ups,
        )
        closes = CounterMetricFamily(
            "session_sync_websocket_closes",
            "Sync websockets closed, by close code (docs/spec/protocol.md)",
            labels=["code", "name"],
        )
        for code, n in sorted(s.closes.items()):
            closes.add_metric([str(code), CloseCode(code).name.lower()], n)
        yield closes
