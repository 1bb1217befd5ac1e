"""The PostgreSQL pool: one small asyncpg pool per process, and the connection types code accepts."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service import migrate
from service.config import Settings

# A connection inside a transaction: a plain connection or one borrowed from the pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
# Anything that can run a single statement: a connection or the pool itself.
Executor: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record] | asyncpg.Pool[asyncpg.Record]"
)
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A row as read from the database, or one assembled from several (read by column name).
Row: TypeAlias = "asyncpg.Record | Mapping[str, Any]"

# What a long-running loop (worker, relay) treats as "the database went away": reconnect and go on.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# What an RPC answers UNAVAILABLE for (api/interceptor.py) instead of INTERNAL: the database cannot be
# reached, is restarting or shutting down (its sessions are terminated: 57P01/57P02), or is failing
# over. During a failover the old primary refuses connections and the standby is not promoted yet, so
# with a multi-host DSN no host accepts writes (TargetServerAttributeNotMatched, an
# InternalClientError; so is a pooled connection the server just terminated); a session that reached
# a server after it turned read-only fails with 25006. Each of these is worth a retry.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InternalClientError,  # includes TargetServerAttributeNotMatched
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


# The release guard (migration 0174): every connection this code opens says which schema it was
# written for, in a custom setting sent at connection start. A trigger on `jobs` refuses to queue a job
# or change a job's status, lease or run_at from a connection not marked with at least the schema
# floor (0173: the first release that writes `job_queue` with `jobs`), so a process of an older
# release fails with STALE_RELEASE instead of running a job twice or queueing one no worker claims.
# An operator's psql session marks itself the same way (docs/operations.md, Upgrading).
SCHEMA_SETTING = "paylink.schema"
# The SQLSTATE of the refusal (class PL: paylink's own; PostgreSQL uses no such class).
STALE_RELEASE = "PL001"
# This code writes an event's `outbox_pending` row with the event and deletes it in the relay's mark
# (service/outbox.py): migration 0176's trigger, which keeps the pending rows right for a session that
# marks events published (or unpublished) by hand, stays out of the way of a connection that says so.
# One setting read per marked event; an operator's session never sets it (docs/operations.md).
KEEPS_OUTBOX_PENDING = "paylink.keeps_outbox_pending"


def server_settings() -> dict[str, str]:
    """What every connection sends at start: its name, the newest migration this code knows, and that
    it keeps `outbox_pending` itself."""
    return {
        "application_name": "paylink",
        SCHEMA_SETTING: f"{migrate.newest():04d}",
        KEEPS_OUTBOX_PENDING: "on",
    }


async def connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """A dedicated connection (LISTEN, advisory locks, migrations, tests), marked like the pool's."""
    return await asyncpg.connect(dsn, server_settings=server_settings())


# How a pooled query is kept from hanging forever, without a client timer per query (asyncpg's
# `command_timeout` arms and cancels a loop timer, and reads the clock four times, on every query:
# ~15 µs of client CPU a query on this box). Instead:
# - PostgreSQL bounds every statement a pooled connection runs, lock waits included
#   (`statement_timeout`, Settings.database_statement_timeout_seconds): it answers 57014, which an
#   RPC answers DEADLINE_EXCEEDED (api/interceptor.py) and a loop treats like any database error;
# - a server or network that goes silent is noticed by TCP (keepalive probes on an idle connection,
#   TCP_USER_TIMEOUT on unacknowledged data) and the connection drops: ConnectionDoesNotExistError,
#   UNAVAILABLE to an RPC, CONNECTION_LOST to a loop;
# - and every RPC's queries stay bounded by the caller's deadline (api/interceptor.py).
# tests/integration/test_statement_timeout.py proves the first two on a real hang.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3
TCP_USER_TIMEOUT_MS = 30_000


class PooledConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset query, on a socket with TCP keepalive.

    The default reset (RESET ALL, advisory unlock, CLOSE ALL, UNLISTEN *) costs a round trip on every
    release. Pooled connections here never SET session state, take advisory locks, hold cursors or
    LISTEN — the relay and workers do those on dedicated connections — and asyncpg still rolls back
    any open transaction on release.
    """

    def __init__(
        self,
        protocol: Any,
        transport: Any,
        loop: Any,
        addr: Any,
        config: Any,
        params: Any,
    ) -> None:
        super().__init__(protocol, transport, loop, addr, config, params)
        keepalive(transport.get_extra_info("socket"))

    def get_reset_query(self) -> str:
        return ""


def keepalive(sock: Any) -> None:
    """Lets TCP notice a silent PostgreSQL (or network) on this connection's socket (TCP only)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


async def create_pool(settings: Settings, *, size: int | None = None) -> Pool:
    pool_size = size or settings.database_pool_size
    statement_timeout = f"{max(1, round(settings.database_statement_timeout_seconds * 1000))}ms"
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min(2, pool_size),
        max_size=pool_size,
        max_inactive_connection_lifetime=300,
        server_settings={**server_settings(), "statement_timeout": statement_timeout},
        connection_class=PooledConnection,
    )
    return pool
