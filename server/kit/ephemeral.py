"""Short-lived values that must be taken at most once: in Redis when configured, else here."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis


class Ephemeral(Protocol):
    async def put(self, key: str, value: bytes, ttl: int) -> None: ...

    async def take(self, key: str) -> bytes | None:
        """The value, removed atomically: of many concurrent takers, one gets it."""


class MemoryEphemeral:
    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        now = time.monotonic()
        if len(self._values) >= self.MAX_KEYS:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        self._values[key] = (value, now + ttl)

    async def take(self, key: str) -> bytes | None:
        value, expires = self._values.pop(key, (None, 0.0))
        return value if expires > time.monotonic() else None


class RedisEphemeral:
    def __init__(self, redis: Redis, prefix: str = "ssync:eph:") -> None:
        self._redis, self._prefix = redis, prefix

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        await self._redis.set(self._prefix + key, value, ex=ttl)

    async def take(self, key: str) -> bytes | None:
        value = await self._redis.getdel(self._prefix + key)
        return value.encode() if isinstance(value, str) else value
