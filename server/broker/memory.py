"""The in-process broker: one replica, no network, same protocol."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from server.broker.base import Handler

log = logging.getLogger("session_sync.broker")


class _MemorySubscription:
    def __init__(self, broker: MemoryBroker, channel: str, handler: Handler) -> None:
        self._broker, self.channel, self.handler = broker, channel, handler

    async def close(self) -> None:
        self._broker._subscribers[self.channel].discard(self)


class MemoryBroker:
    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[_MemorySubscription]] = defaultdict(set)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribers.clear()

    async def ping(self) -> None:
        return None

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        return None  # never disconnected

    async def publish(self, channel: str, message: bytes) -> None:
        for sub in list(self._subscribers.get(channel, ())):
            try:
                await sub.handler(channel, message)
            except Exception:
                log.exception("broker handler failed", extra={"channel": channel})

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        for channel, message in messages:
            await self.publish(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> _MemorySubscription:
        sub = _MemorySubscription(self, channel, handler)
        self._subscribers[channel].add(sub)
        return sub
