"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from server.errors import ServiceUnavailable

READY_TIMEOUT = 2.0


class OpsController(Controller):
    include_in_schema = True
    tags = ["operations"]

    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, state: State) -> dict[str, Any]:
        """The database and the broker answer; a load balancer should route here only then."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT), state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = type(exc).__name__
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await state.broker.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = type(exc).__name__
        if any(v != "ok" for v in checks.values()):
            raise ServiceUnavailable("not ready", checks=checks)
        return {"status": "ok", "checks": checks}

    @get("/metrics", include_in_schema=False)
    async def metrics(self, state: State) -> Response[bytes]:
        state.metrics.mail_queue.set(state.outbox.pending)
        # CONTENT_TYPE_LATEST carries its charset already; litestar must not add another.
        return Response(
            generate_latest(state.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
            media_type=None,
        )
