"""Websocket tickets: short, single-use stand-ins for an access token, minted over REST so
that no long-lived token has to travel in a websocket URL or frame a proxy might log."""

from __future__ import annotations

import uuid

from server.auth.service import AuthService, Principal
from server.errors import InvalidToken
from server.kit.crypto import Keyring, opaque_token
from server.kit.ephemeral import Ephemeral
from server.sync.schemas import Ticket

TICKET_TTL = 30


class Tickets:
    PREFIX = "sst_"

    def __init__(self, store: Ephemeral, keyring: Keyring, auth: AuthService) -> None:
        self.store, self.keyring, self.auth = store, keyring, auth

    async def mint(self, who: Principal) -> Ticket:
        ticket = opaque_token(self.PREFIX.rstrip("_"), 24)
        await self.store.put(self._key(ticket), who.user_id.bytes + who.device_id.bytes, TICKET_TTL)
        return Ticket(ticket, TICKET_TTL)

    async def redeem(self, ticket: str) -> Principal:
        raw = await self.store.take(self._key(ticket))
        if raw is None or len(raw) != 32:
            raise InvalidToken("unknown, used or expired ticket")
        who = Principal(uuid.UUID(bytes=raw[:16]), uuid.UUID(bytes=raw[16:]))
        await self.auth.check_device(who)
        return who

    def _key(self, ticket: str) -> str:
        return "ticket:" + self.keyring.hmac("ticket", ticket).hex()
