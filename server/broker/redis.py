"""Redis pub/sub: one subscriber connection per replica, routed to local handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
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
        self.redis: Redis = Redis.from_url(url, health_check_interval=10)
        self._pubsub: PubSub | None = None
        self._handlers: defaultdict[str, set[_RedisSubscription]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None

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
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    async def publish(self, channel: str, message: bytes) -> None:
        await self.redis.publish(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> _RedisSubscription:
        sub = _RedisSubscription(self, channel, handler)
        first = not self._handlers[channel]
        self._handlers[channel].add(sub)
        if first and self._pubsub is not None:
            await self._pubsub.subscribe(channel)
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
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError):
                log.warning("redis pub/sub connection lost; reconnecting")
                await asyncio.sleep(self.RETRY_SECONDS)
                continue
            if message is not None and message["type"] == "message":
                await self._dispatch(message["channel"].decode(), message["data"])

    async def _dispatch(self, channel: str, data: bytes) -> None:
        for sub in list(self._handlers.get(channel, ())):
            try:
                await sub.handler(channel, data)
            except Exception:
                log.exception("broker handler failed", extra={"channel": channel})
