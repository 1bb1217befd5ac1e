"""Applies migrations/NNNN_name.sql in order, once each, under an advisory lock.

Safe to run twice and from two processes at once: the second waits for the lock, then finds every
version recorded and does nothing.
"""

from __future__ import annotations

import functools
import pathlib
import re

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x7061796C696E6B  # "paylink"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def discover(folder: pathlib.Path = MIGRATIONS) -> list[tuple[int, str, str]]:
    """(version, file name, sql) for every migration file, in version order."""
    found = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name, path.read_text()))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {folder}")
    return found


@functools.cache
def newest() -> int:
    """The newest migration this code knows: what its connections mark themselves with (db.py)."""
    return discover()[-1][0]


async def migrate(dsn: str, folder: pathlib.Path = MIGRATIONS) -> list[str]:
    """Applies what is missing; returns the names applied now."""
    from service import db  # here: db imports this module

    conn = await db.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, name, sql in discover(folder):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                    )
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
