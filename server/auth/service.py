"""The rules of signing in: one-time codes, token issue and rotation, devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.auth import repository as repo
from server.auth.schemas import DeviceList, DeviceOut, KdfParams, Me, PublicKey, TokenPair
from server.config import Settings
from server.errors import (
    Conflict,
    InvalidCode,
    InvalidToken,
    NotFound,
    RateLimited,
    RefreshReused,
    ValidationFailed,
)
from server.kit.clock import utcnow
from server.kit.crypto import Keyring, numeric_code, opaque_token, same
from server.kit.jwt import JWTKeys, TokenError
from server.kit.mail import Mail, Outbox
from server.kit.ratelimit import Limiter

REFRESH_PREFIX = "ssr"
LAST_SEEN_RESOLUTION = timedelta(minutes=5)
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated subject of a request: a user on one of their devices."""

    user_id: uuid.UUID
    device_id: uuid.UUID


def normalize_email(email: str) -> str:
    return email.strip().lower()


class AuthService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        settings: Settings,
        keyring: Keyring,
        jwt_keys: JWTKeys,
        limiter: Limiter,
        outbox: Outbox,
    ) -> None:
        self.db, self.settings, self.keyring = db, settings, keyring
        self.engine: AsyncEngine = db.kw["bind"]
        self.jwt, self.limiter, self.outbox = jwt_keys, limiter, outbox

    # -- one-time codes ------------------------------------------------------------------

    async def start_email(self, email: str, client: str) -> None:
        """Send a code. Silent (still 202) when the address is throttled, so that the
        answer says nothing about the address; only the caller's own IP limit shows."""
        await self._limit_ip("otp-start", client)
        email = normalize_email(email)
        key = self._address_key(email)
        if await self.limiter.count("otp-fail:" + key) >= self.settings.otp_daily_failures:
            return
        sent = await self.limiter.hit("otp-send:" + key, 1, self.settings.otp_resend_interval)
        if not sent.allowed:
            return
        code, now = numeric_code(), utcnow()
        async with self.db.begin() as session:
            await repo.add_code(
                session,
                email,
                self.keyring.hmac("otp", email, code),
                now,
                now + timedelta(seconds=self.settings.otp_ttl),
            )
        self.outbox.enqueue(self._code_mail(email, code))

    async def verify_email(self, email: str, code: str, device_name: str, client: str) -> TokenPair:
        await self._limit_ip("otp-verify", client)
        email = normalize_email(email)
        address_key = self._address_key(email)
        fail_key = "otp-fail:" + address_key
        if await self.limiter.count(fail_key) >= self.settings.otp_daily_failures:
            raise InvalidCode("too many wrong codes for this address today; try tomorrow")
        now, max_attempts = utcnow(), self.settings.otp_max_attempts
        async with self.db.begin() as session:
            row = await repo.active_code(session, email, now, max_attempts)
            ok = row is not None and same(row.code_hash, self.keyring.hmac("otp", email, code))
            if row is not None and not ok:
                await repo.count_wrong_try(session, row.id, max_attempts)
            if row is None or not ok:
                wrong = True
            else:
                wrong = not await repo.consume_code(session, row.id, max_attempts, now)
            if not wrong:
                user = await repo.user_for_email(session, email, now)
                device = await repo.add_device(session, user.id, device_name, now)
                pair = await self._issue(session, user.id, device.id)
        if wrong:
            await self.limiter.hit(fail_key, self.settings.otp_daily_failures, DAY)
            raise InvalidCode()
        # The code reached its owner: signing in another device need not wait out the interval.
        await self.limiter.reset("otp-send:" + address_key)
        return pair

    # -- tokens --------------------------------------------------------------------------

    async def refresh(self, token: str) -> TokenPair:
        """Rotate a refresh token; presenting a spent one revokes the device's whole family,
        unless within the grace period of its use (a retry after a lost answer, or two
        refreshes racing), which gets a pair of its own."""
        now = utcnow()
        token_hash = self.keyring.hmac("refresh", token)
        async with self.db.begin() as session:
            found = await repo.find_refresh(session, token_hash)
            if found is None:
                raise InvalidToken()
            row, device = found
            if device.revoked_at is not None or row.expires_at <= now:
                raise InvalidToken()
            if row.spent_at is None and await repo.spend_refresh(session, row.id, now):
                reused = False
            else:
                spent = row.spent_at or now  # or by a refresh racing this one
                grace = self.settings.refresh_reuse_grace
                reused = not grace or (now - spent).total_seconds() > grace
            if reused:
                await repo.revoke_device(session, device.user_id, device.id, now, "refresh-reuse")
            else:
                pair = await self._issue(session, device.user_id, device.id)
        if reused:
            raise RefreshReused("the device has been signed out; sign in again")
        return pair

    async def authenticate(self, access_token: str) -> Principal:
        """Check the JWT, then that its device is still signed in (on every replica)."""
        try:
            claims = self.jwt.verify_access(access_token)
        except TokenError as exc:
            raise InvalidToken() from exc
        who = Principal(claims.user_id, claims.device_id)
        await self.check_device(who)
        return who

    async def check_device(self, who: Principal) -> None:
        """Raise InvalidToken unless the device is still signed in; note that it was seen."""
        now = utcnow()
        state = await repo.device_state(self.engine, who.user_id, who.device_id)
        if state is None or state[0] is not None:
            raise InvalidToken()
        if now - state[1] > LAST_SEEN_RESOLUTION:
            async with self.db.begin() as session:
                await repo.touch_device(session, who.device_id, now)

    async def revoked_among(self, device_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these devices have been signed out (for closing their live sockets)."""
        async with self.db.begin() as session:
            return await repo.revoked_among(session, device_ids)

    async def _issue(
        self, session: AsyncSession, user_id: uuid.UUID, device_id: uuid.UUID
    ) -> TokenPair:
        now, ttl = utcnow(), self.settings.access_token_ttl
        refresh = opaque_token(REFRESH_PREFIX)
        expires = now + timedelta(seconds=self.settings.refresh_token_ttl)
        await repo.add_refresh(
            session, device_id, self.keyring.hmac("refresh", refresh), now, expires
        )
        return TokenPair(
            access_token=self.jwt.issue_access(user_id, device_id, now, ttl),
            refresh_token=refresh,
            expires_in=ttl,
            user_id=user_id,
            device_id=device_id,
        )

    # -- the signed-in user --------------------------------------------------------------

    async def me(self, who: Principal) -> Me:
        async with self.db.begin() as session:
            user = await repo.get_user(session, who.user_id)
        if user is None:
            raise InvalidToken()
        kdf = msgspec.json.decode(user.kdf_params, type=KdfParams) if user.kdf_params else None
        return Me(user.id, user.email, user.created_at, who.device_id, kdf, user.public_key)

    async def set_kdf(self, who: Principal, params: KdfParams) -> KdfParams:
        """Record the KDF parameters once; they can never change (every key derives from
        them), so a second, different set is a conflict and the same set a no-op."""
        if params.n & (params.n - 1):
            raise ValidationFailed("n must be a power of two")
        encoded = msgspec.json.encode(params).decode()
        async with self.db.begin() as session:
            if not await repo.set_kdf_once(session, who.user_id, encoded):
                user = await repo.get_user(session, who.user_id)
                if user is None or user.kdf_params != encoded:
                    raise Conflict("the KDF parameters are set already and never change")
        return params

    async def set_public_key(self, who: Principal, key: PublicKey) -> PublicKey:
        async with self.db.begin() as session:
            await repo.set_public_key(session, who.user_id, key.public_key)
        return key

    async def devices(self, who: Principal) -> DeviceList:
        async with self.db.begin() as session:
            rows = await repo.list_devices(session, who.user_id)
        return DeviceList(
            [
                DeviceOut(d.id, d.name, d.created_at, d.last_seen_at, d.id == who.device_id)
                for d in rows
            ]
        )

    async def revoke(self, who: Principal, device_id: uuid.UUID, reason: str) -> None:
        """Sign a device out; another user's device id is indistinguishable from none."""
        async with self.db.begin() as session:
            if await repo.get_device(session, who.user_id, device_id) is None:
                raise NotFound("no such device")
            await repo.revoke_device(session, who.user_id, device_id, utcnow(), reason)

    # -- helpers -------------------------------------------------------------------------

    async def _limit_ip(self, action: str, client: str) -> None:
        hit = await self.limiter.hit(
            f"{action}:{client}", self.settings.otp_ip_limit, self.settings.otp_ip_window
        )
        if not hit.allowed:
            raise RateLimited(hit.retry_after, "too many requests from this address")

    def _address_key(self, email: str) -> str:
        # Counters in Redis are keyed by an HMAC, so Redis never holds addresses.
        return self.keyring.hmac("ratelimit", email).hex()[:32]

    def _code_mail(self, email: str, code: str) -> Mail:
        minutes = self.settings.otp_ttl // 60
        return Mail(
            to=email,
            subject=f"Your Session sign-in code: {code}",
            body=(
                f"Your Session sign-in code is {code}\n\n"
                f"It expires in {minutes} minutes and works once. If you did not ask to sign "
                f"in, ignore this mail.\n\nSent by {self.settings.public_url}\n"
            ),
        )
