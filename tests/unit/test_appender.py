"""How the group commit cuts the queue of pushes into transactions."""

from __future__ import annotations

import uuid

from server.auth.service import Principal
from server.sync import appender as appender_module
from server.sync.appender import LOG_KINDS, Appender, _Push
from server.sync.schemas import UpdateIn


def _ignore(_outcome: object) -> None:
    """A push's callback, for tests that only cut the queue into groups."""


async def test_a_group_stops_at_its_byte_bound_unless_one_push_is_bigger(monkeypatch):
    monkeypatch.setattr(appender_module, "GROUP_BYTES", 1000)
    appender = Appender(None, None, None)  # type: ignore[arg-type] - _take uses none of them
    who, doc = Principal(uuid.uuid4(), uuid.uuid4()), uuid.uuid4()
    for n, size in enumerate([300, 600, 600, 2000, 100]):
        update = UpdateIn(f"u{n}", 1, b"x" * size)
        appender._waiting.append(_Push(who, doc, [update], LOG_KINDS, _ignore))
    groups = []
    while group := appender._take():
        groups.append([len(p.updates[0].ciphertext) for p in group])
    assert groups == [[300, 600], [600], [2000], [100]]


async def test_a_group_holds_at_most_max_group_pushes():
    appender = Appender(None, None, None)  # type: ignore[arg-type]
    who = Principal(uuid.uuid4(), uuid.uuid4())
    for n in range(appender_module.MAX_GROUP + 3):
        update = UpdateIn(f"u{n}", 1, b"x")
        appender._waiting.append(_Push(who, uuid.uuid4(), [update], LOG_KINDS, _ignore))
    assert [len(appender._take()) for _ in range(3)] == [appender_module.MAX_GROUP, 3, 0]
