"""Workspaces and API secrets: creation, revocation and authentication.

A secret is `pl_<key id>_<random>`; only its SHA-256 is stored, looked up by the public key id and
compared in constant time. Validated secrets are cached for a few seconds, so revocation takes
effect within `cache_ttl` on every process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import time
import uuid

import asyncpg

from service import db, errors, ids


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    id: uuid.UUID
    name: str
    sandbox: bool


class Authenticator:
    def __init__(self, pool: db.Pool, cache_ttl: float = 5.0) -> None:
        self._pool = pool
        self._ttl = cache_ttl
        self._cache: dict[bytes, tuple[float, Workspace]] = {}

    async def authenticate(self, secret: str | None) -> Workspace:
        if not secret:
            raise errors.unauthenticated("missing x-api-secret metadata")
        digest = ids.sha256(secret)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        key_id = ids.key_id_of_secret(secret)
        if key_id is None:
            raise errors.unauthenticated("invalid API secret")
        row = await self._pool.fetchrow(
            "SELECT s.secret_hash, w.id, w.name, w.sandbox FROM api_secrets s"
            " JOIN workspaces w ON w.id = s.workspace_id"
            " WHERE s.key_id = $1 AND s.revoked_at IS NULL",
            key_id,
        )
        if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), digest):
            raise errors.unauthenticated("invalid API secret")
        workspace = Workspace(row["id"], row["name"], row["sandbox"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, workspace)
        return workspace


async def create_workspace(pool: db.Pool, name: str, *, sandbox: bool = True) -> tuple[Workspace, str]:
    """Creates a workspace and its first API secret; the secret is returned once."""
    workspace = Workspace(ids.new_id(), name, sandbox)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO workspaces (id, name, sandbox) VALUES ($1, $2, $3)",
            workspace.id,
            name,
            sandbox,
        )
        secret = await _insert_secret(conn, workspace.id)
    return workspace, secret


async def create_secret(pool: db.Pool, workspace_id: uuid.UUID) -> str:
    """Another API secret for a workspace (rotation); NOT_FOUND for an unknown workspace."""
    async with pool.acquire() as conn:
        await _check_workspace(conn, workspace_id)
        return await _insert_secret(conn, workspace_id)


async def _check_workspace(conn: db.Executor, workspace_id: uuid.UUID) -> None:
    if not await conn.fetchval("SELECT true FROM workspaces WHERE id = $1", workspace_id):
        raise errors.not_found("workspace", str(workspace_id))


@dataclasses.dataclass(frozen=True, slots=True)
class SecretInfo:
    """An API secret as listed: its public key id and dates (the secret itself is not stored)."""

    key_id: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


async def list_secrets(pool: db.Pool, workspace_id: uuid.UUID) -> list[SecretInfo]:
    """A workspace's secrets, oldest first; NOT_FOUND for an unknown workspace."""
    async with pool.acquire() as conn:
        await _check_workspace(conn, workspace_id)
        rows = await conn.fetch(
            "SELECT key_id, created_at, revoked_at FROM api_secrets WHERE workspace_id = $1 ORDER BY created_at",
            workspace_id,
        )
    return [SecretInfo(r["key_id"], r["created_at"], r["revoked_at"]) for r in rows]


async def _insert_secret(conn: db.Conn, workspace_id: uuid.UUID) -> str:
    key_id, secret = ids.new_api_secret()
    await conn.execute(
        "INSERT INTO api_secrets (id, workspace_id, key_id, secret_hash) VALUES ($1, $2, $3, $4)",
        ids.new_id(),
        workspace_id,
        key_id,
        ids.sha256(secret),
    )
    return secret


async def revoke_secret(pool: db.Pool, secret_or_key_id: str) -> bool:
    """Revokes by key id (or the whole secret); False when no active secret matched."""
    key_id = ids.key_id_of_secret(secret_or_key_id) or secret_or_key_id
    result: str = await pool.execute(
        "UPDATE api_secrets SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return result.endswith(" 1")


async def list_workspaces(pool: db.Pool) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT w.id, w.name, w.sandbox, w.created_at,"
            " count(s.id) FILTER (WHERE s.revoked_at IS NULL) AS active_secrets"
            " FROM workspaces w LEFT JOIN api_secrets s ON s.workspace_id = w.id"
            " GROUP BY w.id ORDER BY w.created_at"
        )
    )
