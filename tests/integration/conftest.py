"""Fixtures of the integration tests (the session's app, databases and clients are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.db import connect as db_connect


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection, as the service opens one, to the test's own `fresh_database`: no worker or relay
    claims or publishes what the test writes there."""
    conn = await db_connect(fresh_database)
    try:
        yield conn
    finally:
        await conn.close()
