"""The server's connection pool against a real Postgres that drops its connections."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.app import create_app
from server.db.engine import create_engine, pooled_driver
from tests.conftest import app_client
from tests.helpers import sign_in


@pytest.mark.backend("postgres")
async def test_requests_survive_postgres_dropping_every_connection(make_settings, smtp):
    """A restart or a terminated backend closes the pooled connections; the pool must not
    hand them out again (it checks each one at checkout, without a round trip)."""
    settings = make_settings()
    app = create_app(settings)
    async with app_client(app) as client:
        me = await sign_in(client, smtp)
        headers = {"authorization": f"Bearer {me['access_token']}"}
        for _ in range(3):  # several pooled connections, all idle afterwards
            assert (await client.get("/v1/me", headers=headers)).status_code == 200
        admin = await asyncpg.connect(settings.database_url)
        try:
            dropped = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'session-sync' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert dropped >= 1
        await asyncio.sleep(0.2)  # the event loop reads the EOFs
        for _ in range(3):
            response = await client.get("/v1/me", headers=headers)
            assert response.status_code == 200, response.text


@pytest.mark.backend("postgres")
async def test_a_driver_connection_left_mid_statement_is_not_pooled(make_settings):
    """The hot paths borrow the asyncpg connection itself. One that reported an SQL error
    goes back to the pool; one cancelled mid-statement is thrown away, so that the next
    borrower never meets its unfinished statement."""
    engine = create_engine(make_settings())
    try:
        async with pooled_driver(engine) as driver:
            first = driver
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with pooled_driver(engine) as driver:
                await driver.fetchval("SELECT 1 / 0")
        assert driver is first  # the same connection, back in the pool after the error
        with pytest.raises(TimeoutError):
            async with pooled_driver(engine) as driver:
                async with asyncio.timeout(0.1):
                    await driver.fetchval("SELECT pg_sleep(5)")
        assert driver.is_closed()
        async with pooled_driver(engine) as driver:
            assert driver is not first and await driver.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()


@pytest.mark.backend("postgres")
async def test_the_pool_hands_out_the_connection_returned_last(make_settings):
    """The group commit runs one statement after another: it should keep one warm backend
    (statements prepared, types known) rather than walk the whole pool (oldest idle first)."""
    engine = create_engine(make_settings())
    try:
        # The second borrowed goes back first (contexts exit in reverse), the first last.
        async with pooled_driver(engine) as last_back, pooled_driver(engine) as first_back:
            assert first_back is not last_back
        for _ in range(3):
            async with pooled_driver(engine) as driver:
                assert driver is last_back
    finally:
        await engine.dispose()
