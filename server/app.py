"""create_app(settings) -> Litestar: the only place the application is assembled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from server import SPEC_VERSION, __version__
from server.auth.controllers import AuthController, MeController, WellKnownController
from server.auth.service import AuthService
from server.broker import Broker, MemoryBroker, RedisBroker
from server.config import Settings
from server.db.engine import create_engine, session_factory
from server.errors import EXCEPTION_HANDLERS
from server.kit.crypto import Keyring
from server.kit.ephemeral import Ephemeral, MemoryEphemeral, RedisEphemeral
from server.kit.jwt import JWTKeys
from server.kit.mail import Outbox, transport_for
from server.kit.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from server.ops.controllers import OpsController
from server.ops.logs import configure_logging
from server.ops.metrics import Metrics, SyncCollector
from server.ops.openapi import CompleteJsonRenderPlugin
from server.sync.controllers import (
    DocsController,
    SettingsController,
    SyncController,
    TranscriptsController,
)
from server.sync.hub import Hub
from server.sync.maintenance import Sockets
from server.sync.service import SyncService
from server.sync.tickets import Tickets


def _broker(settings: Settings) -> tuple[Broker, Limiter, Ephemeral]:
    if settings.redis_url is None:
        return MemoryBroker(), MemoryLimiter(), MemoryEphemeral()
    broker = RedisBroker(settings.redis_url)
    return broker, RedisLimiter(broker.redis), RedisEphemeral(broker.redis)


def build_state(settings: Settings) -> State:
    """Every long-lived object of one replica, built from its settings."""
    settings.check()
    engine = create_engine(settings)
    db = session_factory(engine)
    keyring = Keyring(settings.resolved_secret())
    jwt_keys = JWTKeys(keyring, settings.jwt_key_generation, settings.public_url)
    broker, limiter, ephemeral = _broker(settings)
    outbox = Outbox(transport_for(settings.smtp_url, settings.smtp_from, settings.smtp_timeout))
    auth = AuthService(db, settings, keyring, jwt_keys, limiter, outbox)
    sync: SyncService
    hub = Hub(broker, lambda ids: sync.heads(ids), settings.sweep_interval)
    sync = SyncService(engine, settings, hub)
    sockets = Sockets(auth, sync, settings.ws_heartbeat)
    metrics = Metrics()
    metrics.registry.register(SyncCollector(hub.stats, lambda: len(sockets), lambda: hub.documents))
    return State(
        {
            "settings": settings,
            "engine": engine,
            "broker": broker,
            "outbox": outbox,
            "jwt": jwt_keys,
            "metrics": metrics,
            "auth": auth,
            "sync": sync,
            "hub": hub,
            "tickets": Tickets(ephemeral, keyring, auth),
            "sockets": sockets,
        }
    )


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    state = app.state
    await state.broker.start()
    await state.outbox.start()
    await state.hub.start()
    await state.sockets.start()
    try:
        yield
    finally:
        await state.sockets.close()
        await state.hub.close()
        await state.outbox.close()
        await state.broker.close()
        await state.engine.dispose()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    state = build_state(settings)
    return Litestar(
        route_handlers=[
            OpsController,
            WellKnownController,
            AuthController,
            MeController,
            DocsController,
            TranscriptsController,
            SettingsController,
            SyncController,
        ],
        state=state,
        lifespan=[_lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[state.metrics.middleware],
        request_max_body_size=settings.max_body_size,
        openapi_config=OpenAPIConfig(
            title="Session sync server",
            version=SPEC_VERSION,
            description=f"The Session sync spec {SPEC_VERSION}, served by session-sync "
            f"{__version__}. See docs/spec/ in the repository.",
            path="/schema",
            render_plugins=[CompleteJsonRenderPlugin()],
        ),
    )
