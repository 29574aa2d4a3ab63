"""Redis pub/sub: one subscriber connection per replica, routed to local handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from server.broker.base import Handler

log = logging.getLogger("session_sync.broker")


class _RedisSubscription:
    def __init__(self, broker: RedisBroker, channel: str, handler: Handler) -> None:
        self._broker, self.channel, self.handler = broker, channel, handler

    async def close(self) -> None:
        await self._broker._unsubscribe(self)


class RedisBroker:
    RETRY_SECONDS = 0.5

    def __init__(self, url: str) -> None:
        # Short timeouts: a write path must not hang on a Redis that has gone away.
        self.redis: Redis = Redis.from_url(
            url, health_check_interval=10, socket_connect_timeout=2, socket_timeout=5
        )
        self._pubsub: PubSub | None = None
        self._publisher: AbstractConnection | None = None
        self._handlers: defaultdict[str, set[_RedisSubscription]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._reconnected: list[Callable[[], Awaitable[None]]] = []
        self._broken = False

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self._reader = asyncio.create_task(self._read_forever(), name="redis-broker-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._publisher is not None:
            await self._publisher.disconnect()
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    async def publish(self, channel: str, message: bytes) -> None:
        await self.redis.publish(channel, message)

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """On a connection of their own, in one write and one round trip: the client's
        pipeline spent twice the CPU per batch (its retries and per-command bookkeeping)."""
        conn = self._publisher
        if conn is None:
            pool = self.redis.connection_pool
            conn = self._publisher = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(
                conn.pack_commands([("PUBLISH", channel, data) for channel, data in messages]),
                check_health=False,
            )
            for _ in messages:
                await conn.read_response()
        except BaseException:
            await conn.disconnect()  # the next batch connects again
            raise

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._reconnected.append(callback)

    async def subscribe(self, channel: str, handler: Handler) -> _RedisSubscription:
        sub = _RedisSubscription(self, channel, handler)
        first = not self._handlers[channel]
        self._handlers[channel].add(sub)
        if first and self._pubsub is not None and not self._broken:
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError):
                self._broken = True  # the reader resubscribes every channel on reconnect
        return sub

    async def _unsubscribe(self, sub: _RedisSubscription) -> None:
        handlers = self._handlers.get(sub.channel)
        if handlers is None:
            return
        handlers.discard(sub)
        if not handlers:
            del self._handlers[sub.channel]
            if self._pubsub is not None:
                with contextlib.suppress(RedisError):
                    await self._pubsub.unsubscribe(sub.channel)

    async def _read_forever(self) -> None:
        if self._pubsub is None:
            raise RuntimeError("start() the broker first")
        while True:
            try:
                if self._broken:
                    await self._resubscribe()
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                # parse_response(block=True) waits on the socket (get_message(timeout=...)
                # armed a timer per message). A message is handed on as it was read; the
                # client's handle_message (a dict and an await per message, a third of
                # the cost of a busy replica's bells) only sees the rest.
                while self._pubsub.subscribed:
                    response = await self._pubsub.parse_response(block=True)
                    if response is None:
                        continue
                    if response[0] == b"message":
                        await self._dispatch(response[1].decode(), response[2])
                    else:  # (un)subscribe confirmations, pongs
                        await self._pubsub.handle_message(response)  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                if not self._broken:
                    log.warning("redis pub/sub connection lost; reconnecting")
                self._broken = True
                await asyncio.sleep(self.RETRY_SECONDS)

    async def _resubscribe(self) -> None:
        """After an outage: subscribe again, then let listeners catch up on what they missed."""
        assert self._pubsub is not None  # noqa: S101 - only called by the reader
        if self._pubsub.connection is not None:
            await self._pubsub.connection.disconnect()
        if self._handlers:
            await self._pubsub.subscribe(*self._handlers)
        else:
            await self.redis.ping()
        self._broken = False
        log.warning("redis pub/sub reconnected")
        for callback in self._reconnected:
            try:
                await callback()
            except Exception:
                log.exception("reconnect callback failed")

    async def _dispatch(self, channel: str, data: bytes) -> None:
        for sub in list(self._handlers.get(channel, ())):
            try:
                await sub.handler(channel, data)
            except Exception:
                log.exception("broker handler failed", extra={"channel": channel})
