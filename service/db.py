"""The PostgreSQL pool: one small asyncpg pool per process."""

from __future__ import annotations

import asyncpg

from service.config import Settings

Pool = asyncpg.Pool
Connection = asyncpg.Connection
Record = asyncpg.Record


async def create_pool(settings: Settings, *, size: int | None = None) -> asyncpg.Pool:
    pool_size = size or settings.database_pool_size
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min(2, pool_size),
        max_size=pool_size,
        command_timeout=30,
        max_inactive_connection_lifetime=300,
        server_settings={"application_name": "paylink"},
    )
    assert pool is not None
    return pool
