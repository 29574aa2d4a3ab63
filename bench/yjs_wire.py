"""Yjs updates and the Hocuspocus wire protocol, by hand, so that one Python load generator
can drive both servers with byte-identical updates.

A writer is a Yjs client that keeps setting one key of the root map ``m`` to a fresh binary
value (a canvas node being dragged: the newest position wins, the old value is deleted). Each
update is one Yjs v1 update: one struct (a ``ContentBinary`` item) and, after the first, a
delete set naming the item it replaces. Encoding one costs a few hundred nanoseconds, so the
load generator can make them on the fly; ``bench/check_yjs_wire.py`` checks them against
pycrdt (the Yrs implementation).

For our server the same bytes travel as opaque ciphertext; for Hocuspocus they are real Yjs
updates that it applies to its in-memory document and rebroadcasts. Both directions carry the
writer's Yjs client id and clock in the first bytes, which is how a reader finds out which
update arrived (``update_id``), whatever the server did to the rest of the bytes.
"""

from __future__ import annotations

# Hocuspocus message types (@hocuspocus/server 3.x, MessageType and AuthMessageType).
HP_SYNC, HP_AWARENESS, HP_AUTH, HP_SYNC_REPLY, HP_SYNC_STATUS = 0, 1, 2, 4, 8
HP_AUTH_TOKEN, HP_AUTH_DENIED, HP_AUTH_OK = 0, 1, 2
# y-protocols sync message types.
Y_STEP1, Y_STEP2, Y_UPDATE = 0, 1, 2

CONTENT_BINARY = 3
BIT8_ORIGIN, BIT6_PARENT_SUB = 0x80, 0x20


def varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def varbytes(b: bytes) -> bytes:
    return varuint(len(b)) + b


def varstring(s: str) -> bytes:
    return varbytes(s.encode())


def read_varuint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def read_varbytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_varuint(buf, pos)
    return buf[pos : pos + n], pos + n


class MapWriter:
    """One Yjs client setting ``root map "m"[key]`` to binary values, one update each."""

    def __init__(self, client_id: int, key: str, root: str = "m") -> None:
        self.client, self.key, self.root = client_id, key, root
        self.clock = 0  # the clock of the next item

    def next(self, value: bytes) -> bytes:
        clock, client = self.clock, self.client
        head = b"\x01\x01" + varuint(client) + varuint(clock)  # 1 client, 1 struct
        if clock == 0:
            item = (
                bytes([CONTENT_BINARY | BIT6_PARENT_SUB])
                + varuint(1)  # parent is a root type, by name
                + varstring(self.root)
                + varstring(self.key)
            )
            deletes = b"\x00"
        else:
            # The left origin is the value it replaces; the parent comes from it.
            item = bytes([CONTENT_BINARY | BIT6_PARENT_SUB | BIT8_ORIGIN]) + varuint(client)
            item += varuint(clock - 1)
            deletes = b"\x01" + varuint(client) + b"\x01" + varuint(clock - 1) + b"\x01"
        self.clock += 1
        return head + item + varbytes(value) + deletes


def update_id(update: bytes) -> tuple[int, int]:
    """(client, clock) of the first struct of a one-client update (as MapWriter makes)."""
    _, pos = read_varuint(update, 0)  # clients
    _, pos = read_varuint(update, pos)  # structs
    client, pos = read_varuint(update, pos)
    clock, _ = read_varuint(update, pos)
    return client, clock


# -- the Hocuspocus protocol ------------------------------------------------------------


def hp_auth(doc: str, token: str) -> bytes:
    return varstring(doc) + bytes([HP_AUTH, HP_AUTH_TOKEN]) + varstring(token)


def hp_sync_step1(doc: str, state_vector: bytes = b"\x00") -> bytes:
    return varstring(doc) + bytes([HP_SYNC, Y_STEP1]) + varbytes(state_vector)


def hp_update(doc: str, update: bytes) -> bytes:
    return varstring(doc) + bytes([HP_SYNC, Y_UPDATE]) + varbytes(update)


def hp_update_prefix(doc: str) -> bytes:
    return varstring(doc) + bytes([HP_SYNC, Y_UPDATE])


def hp_parse(message: bytes) -> tuple[int, int, bytes]:
    """(message type, sub type or -1, payload) of a server message; the document name is
    skipped (each benchmark socket is on one document)."""
    _, pos = read_varbytes(message, 0)
    kind, pos = read_varuint(message, pos)
    if kind in (HP_SYNC, HP_SYNC_REPLY):
        sub, pos = read_varuint(message, pos)
        payload, _ = read_varbytes(message, pos)
        return kind, sub, payload
    if kind in (HP_AUTH, HP_SYNC_STATUS):
        sub, pos = read_varuint(message, pos)
        return kind, sub, message[pos:]
    return kind, -1, message[pos:]
