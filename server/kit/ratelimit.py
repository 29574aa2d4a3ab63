"""Fixed-window counters for rate limits: in Redis when configured, else in process memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Hit:
    count: int
    allowed: bool
    retry_after: int  # seconds until the window resets


class Limiter(Protocol):
    async def hit(self, key: str, limit: int, window: int) -> Hit:
        """Count one event under ``key``; allowed while the window's count is within limit."""

    async def count(self, key: str) -> int:
        """The events counted in the current window, without counting one."""

    async def reset(self, key: str) -> None:
        """Forget the key's window."""


class MemoryLimiter:
    """For the single-process embedded default; counters die with the process."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}

    async def hit(self, key: str, limit: int, window: int) -> Hit:
        now = time.monotonic()
        count, reset = self._windows.get(key, (0, 0.0))
        if reset <= now:
            if len(self._windows) >= self.MAX_KEYS:
                self._purge(now)
            count, reset = 0, now + window
        count += 1
        self._windows[key] = (count, reset)
        return Hit(count, count <= limit, int(reset - now) + 1)

    async def count(self, key: str) -> int:
        count, reset = self._windows.get(key, (0, 0.0))
        return count if reset > time.monotonic() else 0

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def _purge(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}


class RedisLimiter:
    """Shared by every replica; a window starts with the first event under its key."""

    def __init__(self, redis: Redis, prefix: str = "ssync:rl:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, key: str, limit: int, window: int) -> Hit:
        name = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(name, 0, ex=window, nx=True)
            pipe.incr(name)
            pipe.ttl(name)
            _, count, ttl = await pipe.execute()
        return Hit(int(count), int(count) <= limit, max(int(ttl), 1))

    async def count(self, key: str) -> int:
        value = await self._redis.get(self._prefix + key)
        return int(value or 0)

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)


class TokenBuckets:
    """Per-key token buckets in this process: ``rate`` per second, up to ``burst`` saved."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens: 0.0 if granted, else the seconds until they would be."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens >= n:
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._buckets.clear()  # forgetting grants a fresh burst, never a denial
            self._buckets[key] = (tokens - n, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (n - tokens) / self.rate
