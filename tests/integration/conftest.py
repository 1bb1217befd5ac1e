"""Fixtures of the integration tests (the session's app, databases and clients are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from service import runtime
from service.db import connect as db_connect
from service.deps import Deps
from tests.harness import base_settings


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection, as the service opens one, to the test's own `fresh_database`: no worker or relay
    claims or publishes what the test writes there."""
    conn = await db_connect(fresh_database)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def deps(fresh_database: str) -> AsyncIterator[Deps]:
    """The service's dependencies (`runtime.build_deps`) on the test's own `fresh_database` with a pool
    of one connection: every statement the test runs through them is prepared, and its plan cached,
    on that one connection (what the plan tests read back from pg_prepared_statements)."""
    settings = base_settings().model_copy(update={"database_url": fresh_database, "database_pool_size": 1})
    built = await runtime.build_deps(settings)
    try:
        yield built
    finally:
        await built.pool.close()
