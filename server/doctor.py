"""`session-sync doctor`: each dependency checked for real, with a one-line verdict."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from server.config import Settings

Result = tuple[str, bool, str]
TIMEOUT = 5.0


async def _config(settings: Settings) -> str:
    settings.check()
    return f"{settings.environment} mode, public URL {settings.public_url}"


async def _database(settings: Settings) -> str:
    from server.db.migrate import SchemaState, schema_state

    state, current = await schema_state(settings)
    where = "embedded SQLite" if settings.embedded else "external database"
    if state is SchemaState.NEWER:
        raise RuntimeError(f"{where}: schema {sorted(current)} is newer than this server")
    if state is SchemaState.BEHIND:
        return f"{where} reachable; schema behind: run `session-sync migrate`"
    return f"{where} reachable, schema current"


async def _redis(settings: Settings) -> str:
    if settings.redis_url is None:
        return "not configured: in-process broker (one replica only)"
    from redis.asyncio import Redis

    client = Redis.from_url(settings.redis_url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return f"Redis {info.get('redis_version', '?')} reachable"


async def _smtp(settings: Settings) -> str:
    if settings.smtp_url is None:
        return "not configured: one-time codes go to the log (development mode)"
    import aiosmtplib

    from server.kit.mail import SmtpTransport

    t = SmtpTransport(settings.smtp_url, settings.smtp_from, settings.smtp_timeout)
    client = aiosmtplib.SMTP(
        hostname=t.hostname,
        port=t.port,
        use_tls=t.implicit_tls,
        start_tls=t.start_tls,
        timeout=settings.smtp_timeout,
    )
    async with client:
        if t.username and t.password:
            await client.login(t.username, t.password)
        await client.noop()
    return f"SMTP {t.hostname}:{t.port} accepts connections"


async def _xml(_settings: Settings) -> str:
    import lxml.etree
    import xmlsec

    lxml_version = lxml.etree.LIBXML_VERSION
    xmlsec_version = xmlsec.get_libxml_version()
    if tuple(lxml_version) != tuple(xmlsec_version):
        raise RuntimeError(
            f"lxml uses libxml2 {lxml_version} but xmlsec uses {xmlsec_version}; SAML "
            "signatures will fail. Reinstall both from the same source "
            "(pip install --force-reinstall --no-binary lxml,xmlsec lxml xmlsec)"
        )
    return "lxml and xmlsec share libxml2 " + ".".join(map(str, lxml_version))


CHECKS: list[tuple[str, Callable[[Settings], Awaitable[str]]]] = [
    ("configuration", _config),
    ("database", _database),
    ("redis", _redis),
    ("smtp", _smtp),
    ("saml xml libraries", _xml),
]


async def run_checks(settings: Settings) -> list[Result]:
    results: list[Result] = []
    for name, check in CHECKS:
        try:
            async with asyncio.timeout(TIMEOUT):
                results.append((name, True, await check(settings)))
        except Exception as exc:
            results.append((name, False, f"{type(exc).__name__}: {exc}"))
    return results
