"""Workspaces as an operator sees them: usage, and deletion (`python -m service workspace list|delete`).

Deleting a workspace takes it out of service and erases its secrets, keeping what retention needs:

1. refuses while accounts are connected, unless forced;
2. revokes every API secret and marks the workspace deleted (auth.py: no call authenticates again);
3. disconnects every connected account through accounts.py — stored credentials erased,
   `connected=false`, `customer_disabled` with its `account.monitoring_status.updated` event;
4. erases the other sealed secrets: the full allocations of link tokens, sessions' MFA state and
   chosen allocations, jobs' parameters (switch targets), and stored idempotent responses.

Accounts, jobs, stored data and the outbox stay (history, replay window; personal data is erased
per end user, not here). Each step is done by the module that owns the table. Running it again
finishes an interrupted deletion.
"""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg

from service import accounts, auth, errors, idempotency, link_tokens, queue, session_store, tracing, uow
from service.deps import Deps

_USAGE = """
SELECT w.id, w.name, w.sandbox, w.created_at, w.deleted_at,
       (SELECT count(*) FROM api_secrets s WHERE s.workspace_id = w.id AND s.revoked_at IS NULL) AS secrets,
       (SELECT count(*) FROM accounts a WHERE a.workspace_id = w.id) AS accounts,
       (SELECT count(*) FROM accounts a WHERE a.workspace_id = w.id AND a.connected) AS connected,
       (SELECT count(*) FROM jobs j WHERE j.workspace_id = w.id) AS jobs
FROM workspaces w {where} ORDER BY w.created_at
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    id: uuid.UUID
    name: str
    sandbox: bool
    deleted: bool
    secrets: int  # active API secrets
    accounts: int
    connected: int
    jobs: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Usage:
        return cls(
            row["id"],
            row["name"],
            row["sandbox"],
            row["deleted_at"] is not None,
            row["secrets"],
            row["accounts"],
            row["connected"],
            row["jobs"],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    usage: Usage  # before deletion
    secrets_revoked: int
    accounts_disconnected: int
    secrets_erased: int  # sealed values erased (allocations, MFA state, job parameters, idempotent replies)


def _count(status: str) -> int:
    """The row count of a command status such as "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])


async def usage(deps: Deps, workspace_id: uuid.UUID | None = None) -> list[Usage]:
    """Every workspace (or one) with its usage, oldest first."""
    where, args = ("WHERE w.id = $1", [workspace_id]) if workspace_id else ("", [])
    return [Usage.from_row(r) for r in await deps.pool.fetch(_USAGE.format(where=where), *args)]


async def delete(deps: Deps, workspace_id: uuid.UUID, *, force: bool = False) -> Deleted:
    """Deletes a workspace (see the module doc). NotFound; FailedPrecondition while accounts are
    connected and not `force`."""
    found = await usage(deps, workspace_id)
    if not found:
        raise errors.not_found("workspace", str(workspace_id))
    before = found[0]
    if before.connected and not force:
        raise errors.failed_precondition(
            "ACCOUNTS_CONNECTED",
            f"workspace {workspace_id} has {before.connected} connected accounts; disconnect them or"
            " delete with --force (which disconnects them)",
        )
    # The events of this deletion carry one request id, quoted in the command's output.
    with tracing.request(f"workspace-delete-{uuid.uuid4().hex[:12]}"):
        async with deps.pool.acquire() as conn, conn.transaction():
            revoked = await auth.retire_workspace(conn, workspace_id)
        disconnected = 0
        for account_id in await accounts.connected_ids(deps.pool, workspace_id):
            async with uow.begin(deps) as work:
                await accounts.disconnect(work, workspace_id, str(account_id), api_version="")
            disconnected += 1
        async with deps.pool.acquire() as conn, conn.transaction():
            erased = await link_tokens.erase_sealed(conn, workspace_id)
            erased += await session_store.erase_sealed(conn, workspace_id)
            # Jobs keep their outcome; their parameters (switch targets, sealed or masked) go.
            owned = await conn.fetch("SELECT id FROM accounts WHERE workspace_id = $1", workspace_id)
            erased += await queue.scrub_params(conn, [r["id"] for r in owned])
            erased += await idempotency.erase(conn, workspace_id)
    return Deleted(before, revoked, disconnected, erased)
