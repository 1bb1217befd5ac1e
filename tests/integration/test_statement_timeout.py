"""A pooled query cannot hang forever, without a client timer per query (service/db.py): PostgreSQL
cancels a statement at the pool's statement timeout, lock waits included, and an RPC whose statement
was cancelled answers DEADLINE_EXCEEDED (never INTERNAL/UNKNOWN), even when its caller set no
deadline; the pool's sockets carry TCP keepalive so a silent server or network drops the connection.

Each hang here is real (pg_sleep, a held table lock); the tests' own `asyncio.wait_for` guards only
turn a regression into a failure instead of a stuck run, they assert no timing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from paylink.v1 import common_pb2

from service import db, runtime
from service.config import Settings
from tests.conftest import new_client
from tests.harness import rpc_error

IDENTITY = [common_pb2.JOB_NAME_IDENTITY]
TIMEOUT = 0.3  # the statement timeout these tests' pools and server run with
GUARD = 20.0  # far beyond it: reaching this means the hang was not bounded


@pytest.fixture
def short(settings: Settings) -> Settings:
    return settings.model_copy(update={"database_statement_timeout_seconds": TIMEOUT})


@pytest.fixture
async def api(short: Settings) -> AsyncIterator[runtime.Running]:
    """An API server alone (no worker or relay) whose pool has the short statement timeout."""
    running = await runtime.start(short, worker=False, relay=False, run_migrations=False)
    yield running
    await running.stop()


async def test_a_sleeping_statement_is_cancelled_by_the_server(short: Settings) -> None:
    pool = await db.create_pool(short, size=1)
    try:
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await asyncio.wait_for(pool.fetchval("SELECT pg_sleep(60)"), GUARD)
        assert await pool.fetchval("SHOW statement_timeout") == f"{round(TIMEOUT * 1000)}ms"
        assert await pool.fetchval("SELECT 1") == 1  # the connection is still usable
    finally:
        await pool.close()


async def test_the_default_statement_timeout_is_thirty_seconds(settings: Settings) -> None:
    pool = await db.create_pool(
        settings.model_copy(update={"database_statement_timeout_seconds": 30}), size=1
    )
    try:
        assert await pool.fetchval("SHOW statement_timeout") == "30s"
    finally:
        await pool.close()


async def test_an_rpc_stuck_on_a_lock_answers_deadline_exceeded(
    api: runtime.Running, database_url: str
) -> None:
    assert api.api is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.api.port}") as channel:
        client = await new_client(api, channel)
        await client.token(IDENTITY)  # authenticated and warmed: only the INSERT below can wait
        holder = await db.connect(database_url)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE link_tokens IN ACCESS EXCLUSIVE MODE")
                # No gRPC deadline on this call: only the statement timeout can end the wait.
                exc = await asyncio.wait_for(rpc_error(client.token(IDENTITY)), GUARD)
        finally:
            await holder.close()
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not answer in time" in (exc.details() or "")
        assert (await client.token(IDENTITY)).token  # the lock gone, the same server answers again


async def test_pooled_connections_have_tcp_keepalive(settings: Settings) -> None:
    pool = await db.create_pool(settings, size=1)
    try:
        async with pool.acquire() as conn:
            raw: Any = getattr(conn, "_con", conn)  # the proxy's connection
            sock = raw._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == db.KEEPALIVE_IDLE_SECONDS
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == db.TCP_USER_TIMEOUT_MS
    finally:
        await pool.close()
