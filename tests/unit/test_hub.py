"""Bells between replicas: what one replica commits reaches the others' listeners once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from server.broker.memory import MemoryBroker
from server.sync.hub import Hub
from server.sync.repository import Row


class Heard:
    def __init__(self) -> None:
        self.offers: list[tuple[int, list[Row]]] = []

    def offer(self, head: int, rows: Sequence[Row]) -> None:
        self.offers.append((head, list(rows)))

    def gone(self) -> None:
        raise AssertionError("not deleted")

    def presence(self, device: uuid.UUID, data: bytes) -> None:
        raise AssertionError("no presence")


async def test_a_bell_carries_the_rows_to_other_replicas_and_not_back():
    broker = MemoryBroker()  # shared, as Redis is: every replica hears every bell
    here, there = Hub(broker, _no_heads, 60), Hub(broker, _no_heads, 60)
    for hub in (here, there):
        await hub.start()
    doc = uuid.uuid4()
    mine, theirs = Heard(), Heard()
    await here.join(doc, mine)
    await there.join(doc, theirs)
    rows = [Row(7, uuid.uuid4(), 2, b"\x00ct"), Row(8, uuid.uuid4(), 2, b"")]
    await here.committed(doc, 8, rows)
    for _ in range(10):  # the bell goes out from the ringer task
        await asyncio.sleep(0)
    assert mine.offers == [(8, rows)]  # delivered here once: its own bell is dropped
    assert theirs.offers == [(8, rows)]  # the other replica reads the rows off the bell
    for hub in (here, there):
        await hub.close()


async def _no_heads(_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    return {}
