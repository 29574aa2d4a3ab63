"""All SQL of the auth domain; every device query is scoped to its user."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.db.dialect import insert_or_ignore
from server.db.engine import pooled_driver
from server.db.models import Device, EmailCode, RefreshToken, User


async def active_code(
    session: AsyncSession, email: str, now: datetime, max_attempts: int
) -> EmailCode | None:
    """The newest usable code of the address (older ones were superseded)."""
    return await session.scalar(
        select(EmailCode)
        .where(
            EmailCode.email == email,
            EmailCode.consumed_at.is_(None),
            EmailCode.attempts < max_attempts,
            EmailCode.expires_at > now,
        )
        .order_by(EmailCode.created_at.desc())
        .limit(1)
    )


async def add_code(
    session: AsyncSession, email: str, code_hash: bytes, now: datetime, expires_at: datetime
) -> None:
    # Supersede earlier codes so that only the newest one can ever be used, and forget
    # the address's codes that ended more than a day ago.
    await session.execute(
        delete(EmailCode).where(
            EmailCode.email == email, EmailCode.expires_at < now - timedelta(days=1)
        )
    )
    await session.execute(
        update(EmailCode)
        .where(EmailCode.email == email, EmailCode.consumed_at.is_(None))
        .values(consumed_at=now)
    )
    session.add(EmailCode(email=email, code_hash=code_hash, created_at=now, expires_at=expires_at))


async def count_wrong_try(session: AsyncSession, code_id: uuid.UUID, max_attempts: int) -> None:
    await session.execute(
        update(EmailCode)
        .where(EmailCode.id == code_id, EmailCode.attempts < max_attempts)
        .values(attempts=EmailCode.attempts + 1)
    )


async def consume_code(
    session: AsyncSession, code_id: uuid.UUID, max_attempts: int, now: datetime
) -> bool:
    """Mark the code used; only one of many concurrent callers gets True."""
    result = await session.execute(
        update(EmailCode)
        .where(
            EmailCode.id == code_id,
            EmailCode.consumed_at.is_(None),
            EmailCode.attempts < max_attempts,
        )
        .values(consumed_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def user_for_email(session: AsyncSession, email: str, now: datetime) -> User:
    await session.execute(
        insert_or_ignore(session, User.__table__, id=uuid.uuid4(), email=email, created_at=now)
    )
    return (await session.scalars(select(User).where(User.email == email))).one()


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def add_device(session: AsyncSession, user_id: uuid.UUID, name: str, now: datetime) -> Device:
    device = Device(user_id=user_id, name=name, created_at=now, last_seen_at=now)
    session.add(device)
    await session.flush()
    return device


async def device_state(
    engine: AsyncEngine, user_id: uuid.UUID, device_id: uuid.UUID
) -> tuple[datetime | None, datetime] | None:
    """(revoked_at, last_seen_at) of one of the user's devices, in one statement outside a
    transaction: every authenticated request asks (through the driver on Postgres)."""
    if engine.dialect.name == "postgresql":
        async with pooled_driver(engine) as driver:
            record = await driver.fetchrow(
                "SELECT revoked_at, last_seen_at FROM devices WHERE id = $1 AND user_id = $2",
                device_id,
                user_id,
            )
        return None if record is None else (record[0], record[1])
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Device.revoked_at, Device.last_seen_at).where(
                    Device.id == device_id, Device.user_id == user_id
                )
            )
        ).first()
    return None if row is None else (row[0], row[1])


async def get_device(
    session: AsyncSession, user_id: uuid.UUID, device_id: uuid.UUID
) -> Device | None:
    return await session.scalar(
        select(Device).where(Device.id == device_id, Device.user_id == user_id)
    )


async def list_devices(session: AsyncSession, user_id: uuid.UUID) -> Sequence[Device]:
    result = await session.scalars(
        select(Device)
        .where(Device.user_id == user_id, Device.revoked_at.is_(None))
        .order_by(Device.created_at)
    )
    return result.all()


async def touch_device(session: AsyncSession, device_id: uuid.UUID, now: datetime) -> None:
    await session.execute(update(Device).where(Device.id == device_id).values(last_seen_at=now))


async def revoke_device(
    session: AsyncSession, user_id: uuid.UUID, device_id: uuid.UUID, now: datetime, reason: str
) -> None:
    await session.execute(
        update(Device)
        .where(Device.id == device_id, Device.user_id == user_id, Device.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )


async def add_refresh(
    session: AsyncSession, device_id: uuid.UUID, token_hash: bytes, now: datetime, expires: datetime
) -> None:
    session.add(
        RefreshToken(device_id=device_id, token_hash=token_hash, created_at=now, expires_at=expires)
    )


async def find_refresh(
    session: AsyncSession, token_hash: bytes
) -> tuple[RefreshToken, Device] | None:
    row = (
        await session.execute(
            select(RefreshToken, Device)
            .join(Device, Device.id == RefreshToken.device_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def spend_refresh(session: AsyncSession, token_id: uuid.UUID, now: datetime) -> bool:
    """Mark the token spent; only one of many concurrent callers gets True."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.spent_at.is_(None))
        .values(spent_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def revoked_among(session: AsyncSession, device_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    rows = await session.scalars(
        select(Device.id).where(Device.id.in_(device_ids), Device.revoked_at.is_not(None))
    )
    return set(rows)


async def set_kdf_once(session: AsyncSession, user_id: uuid.UUID, params: str) -> bool:
    result = await session.execute(
        update(User).where(User.id == user_id, User.kdf_params.is_(None)).values(kdf_params=params)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def set_public_key(session: AsyncSession, user_id: uuid.UUID, key: bytes) -> None:
    await session.execute(update(User).where(User.id == user_id).values(public_key=key))
