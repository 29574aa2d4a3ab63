"""Check the hand-made Yjs updates of yjs_wire.py against pycrdt (Yrs): every update applies,
the map holds the newest value, and the ids read back. Run: .venv/bin/python bench/check_yjs_wire.py
"""

from __future__ import annotations

import os

from pycrdt import Doc, Map
from yjs_wire import MapWriter, update_id


def main() -> None:
    doc: Doc[Map[bytes]] = Doc()
    root = doc.get("m", type=Map)
    writers = [MapWriter(1000 + n, f"w{n}") for n in range(3)]
    for step in range(50):
        for w in writers:
            value = os.urandom(64 + step)
            update = w.next(value)
            assert update_id(update) == (w.client, w.clock - 1)
            doc.apply_update(update)
            assert root[w.key] == value, (step, w.key)
    # The same state, encoded by Yrs, applies on a fresh document too.
    fresh: Doc[Map[bytes]] = Doc()
    fresh.apply_update(doc.get_update())
    assert dict(fresh.get("m", type=Map)) == dict(root)
    print("ok: 150 hand-made Yjs updates applied by pycrdt", len(doc.get_update()), "bytes state")


if __name__ == "__main__":
    main()
