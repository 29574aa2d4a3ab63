"""The protocol every broker implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[None]]


class Subscription(Protocol):
    async def close(self) -> None: ...


class Broker(Protocol):
    async def start(self) -> None:
        """Connect; called once at application startup."""

    async def close(self) -> None:
        """Disconnect and stop every subscription."""

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def publish(self, channel: str, message: bytes) -> None:
        """Send a message to every subscriber of the channel, on every replica."""

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Send several messages, in order, at the cost of one round trip."""

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` after the broker was down and is back: messages may be lost."""

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler(channel, message)`` for each message until the subscription closes."""
