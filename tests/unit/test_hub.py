"""Bells between replicas: what one replica commits reaches the others' listeners once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from server.broker.memory import MemoryBroker
from server.sync import hub as hub_module
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
    here.committed(doc, 8, rows)
    for _ in range(10):  # the bell goes out from the ringer task
        await asyncio.sleep(0)
    assert mine.offers == [(8, rows)]  # delivered here once: its own bell is dropped
    assert theirs.offers == [(8, rows)]  # the other replica reads the rows off the bell
    for hub in (here, there):
        await hub.close()


async def _no_heads(_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    return {}


async def test_rows_past_a_gap_wait_for_the_bell_that_fills_it(monkeypatch):
    """Two replicas commit one document in turns and their bells cross: a third delivers the
    rows in seq order as soon as the gap is filled, without sending anyone to the database."""
    broker = MemoryBroker()
    here, one, two = (Hub(broker, _no_heads, 60) for _ in range(3))
    for hub in (here, one, two):
        await hub.start()
    doc, device = uuid.uuid4(), uuid.uuid4()
    rows = {seq: Row(seq, device, 1, bytes([seq])) for seq in range(1, 30)}
    heard = Heard()
    await here.join(doc, heard)
    one.committed(doc, 9, [rows[9]])
    await _rung()
    two.committed(doc, 14, [rows[13], rows[14]])  # 10-12 are on their way
    await _rung()
    assert heard.offers == [(9, [rows[9]])]
    one.committed(doc, 12, [rows[10], rows[11], rows[12]])
    await _rung()
    assert heard.offers[1:] == [(14, [rows[s] for s in range(10, 15)])]
    one.committed(doc, 12, [rows[12]])  # heard again (a sweep, a resend): once
    await _rung()
    assert len(heard.offers) == 2
    # A gap that no bell fills (one lost in a Redis restart): after GAP_WAIT the listeners
    # are told the head with no rows, and read what they lack from the database.
    monkeypatch.setattr(hub_module, "GAP_WAIT", 0.01)
    two.committed(doc, 21, [rows[20], rows[21]])
    await _rung()
    assert len(heard.offers) == 2
    await asyncio.sleep(0.05)
    assert heard.offers[2:] == [(21, [])]
    one.committed(doc, 22, [rows[22]])  # and then on as before
    await _rung()
    assert heard.offers[3:] == [(22, [rows[22]])]
    for hub in (here, one, two):
        await hub.close()


async def _rung() -> None:
    """Let the bell of a commit travel (the ringer task publishes it)."""
    for _ in range(10):
        await asyncio.sleep(0)
