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
from collections.abc import Callable

from service import db, errors, ids


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    id: uuid.UUID
    name: str
    sandbox: bool


class Authenticator:
    """Validates API secrets, caching each valid one for `cache_ttl` seconds (`clock`: monotonic)."""

    def __init__(
        self, pool: db.Pool, cache_ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pool = pool
        self._ttl = cache_ttl
        self.clock = clock  # what cache expiries are read against (service/api/callers.py too)
        self._cache: dict[bytes, tuple[float, Workspace]] = {}

    def now(self) -> float:
        """The clock cache expiries are read against."""
        return self.clock()

    async def authenticate(self, secret: str | None) -> Workspace:
        return (await self.validated(secret))[0]

    async def validated(self, secret: str | None) -> tuple[Workspace, float]:
        """The secret's workspace, and the clock time until which that answer may be reused: what
        is derived from it (service/api/callers.py) expires with it, so a revoked secret stops
        working within `cache_ttl` of its last validation, however it is cached."""
        if not secret:
            raise errors.unauthenticated("missing x-api-secret metadata")
        digest = ids.sha256(secret)
        cached = self._cache.get(digest)
        now = self.clock()
        if cached and cached[0] > now:
            return cached[1], cached[0]
        key_id = ids.key_id_of_secret(secret)
        if key_id is None:
            raise errors.unauthenticated("invalid API secret")
        row = await self._pool.fetchrow(
            "SELECT s.secret_hash, w.id, w.name, w.sandbox FROM api_secrets s"
            " JOIN workspaces w ON w.id = s.workspace_id"
            " WHERE s.key_id = $1 AND s.revoked_at IS NULL AND w.deleted_at IS NULL",
            key_id,
        )
        if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), digest):
            self._cache.pop(digest, None)
            raise errors.unauthenticated("invalid API secret")
        workspace = Workspace(row["id"], row["name"], row["sandbox"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        expires = now + self._ttl
        self._cache[digest] = (expires, workspace)
        return workspace, expires


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
    if not await conn.fetchval(
        "SELECT true FROM workspaces WHERE id = $1 AND deleted_at IS NULL", workspace_id
    ):
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


async def retire_workspace(conn: db.Conn, workspace_id: uuid.UUID) -> int:
    """Marks a workspace deleted and revokes its secrets (workspace delete); returns how many."""
    await conn.execute(
        "UPDATE workspaces SET deleted_at = coalesce(deleted_at, now()) WHERE id = $1", workspace_id
    )
    result: str = await conn.execute(
        "UPDATE api_secrets SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL",
        workspace_id,
    )
    return int(result.rsplit(" ", 1)[-1])
