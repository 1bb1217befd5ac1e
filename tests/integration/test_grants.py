"""`grants.replace`, the write of the grants that jobs' re-accesses return (service/job_outcomes.py):
a job's grant replaces the stored one only if that is still the blob the job was claimed with, for a
whole batch in one compare-and-set statement. A newer grant stored meanwhile (a re-link, a sandbox
control) is kept, deleted credentials (disconnect, erasure) are not re-inserted, and a blob only
re-sealed meanwhile (`vault reencrypt`: the same grant under a new blob) is still replaced.
The interleaving through the real processes: tests/faults/test_grant_race.py."""

from __future__ import annotations

import json
import uuid

from paylink.v1 import common_pb2, job_pb2

from service import grants, runtime, sealed
from tests.harness import Client, link_account, wait_job

J = common_pb2


async def _account(client: Client, username: str) -> uuid.UUID:
    _, session = await link_account(client, username, [J.JOB_NAME_IDENTITY])
    return uuid.UUID(session.account_id)


async def _blob(app: runtime.Running, account_id: uuid.UUID) -> bytes | None:
    blob = await app.deps.pool.fetchval(
        "SELECT sealed FROM account_credentials WHERE account_id = $1", account_id
    )
    return None if blob is None else bytes(blob)


async def _replace(app: runtime.Running, new: list[grants.NewGrant]) -> tuple[set[uuid.UUID], int]:
    """Runs `grants.replace` in a transaction; returns the accounts kept and the statements it sent."""
    statements: list[str] = []
    async with app.deps.pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(lambda record: statements.append(record.query))  # BEGIN/COMMIT too
        kept = await grants.replace(app.deps, conn, new)
    return kept, len([q for q in statements if "account_credentials" in q])


async def _store(app: runtime.Running, account_id: uuid.UUID, grant: bytes) -> bytes:
    async with app.deps.pool.acquire() as conn:
        await grants.store(app.deps, conn, account_id, grant)
    blob = await _blob(app, account_id)
    assert blob is not None
    return blob


async def test_a_batch_replaces_only_the_grants_still_stored_as_claimed(
    app: runtime.Running, client: Client
) -> None:
    unchanged, relinked, disconnected = [
        await _account(client, f"user_good+grant{n}") for n in ("same", "newer", "gone")
    ]
    claimed = {a: await _store(app, a, f"claimed-{a}".encode()) for a in (unchanged, relinked, disconnected)}
    # Between the claim and the outcome: a re-link stores a newer grant, a disconnect deletes one.
    await _store(app, relinked, b"re-linked")
    async with app.deps.pool.acquire() as conn:
        assert await grants.delete(conn, [disconnected]) == 1

    kept, statements = await _replace(
        app, [grants.NewGrant(a, f"refreshed-{a}".encode(), claimed[a]) for a in claimed]
    )

    assert kept == {relinked, disconnected}
    assert statements == 1  # one compare-and-set for the whole batch
    assert await grants.load(app.deps, app.deps.pool, unchanged) == f"refreshed-{unchanged}".encode()
    assert await grants.load(app.deps, app.deps.pool, relinked) == b"re-linked"
    assert await _blob(app, disconnected) is None  # not re-inserted


async def test_a_grant_only_resealed_meanwhile_is_still_replaced(
    app: runtime.Running, client: Client
) -> None:
    account = await _account(client, "user_good+grantresealed")
    claimed = await _store(app, account, b"the grant")
    # What `vault reencrypt` does: the same grant, sealed again (a new nonce and maybe key): a new blob.
    resealed = app.deps.vault.reseal(claimed, aad=sealed.ACCOUNT_GRANT.aad(account))
    assert resealed != claimed
    await app.deps.pool.execute(
        "UPDATE account_credentials SET sealed = $2 WHERE account_id = $1", account, resealed
    )

    kept, statements = await _replace(app, [grants.NewGrant(account, b"refreshed", claimed)])

    assert kept == set()
    assert statements == 2  # the compare-and-set missed; a second one against the re-sealed blob
    assert await grants.load(app.deps, app.deps.pool, account) == b"refreshed"


async def test_no_grants_sends_nothing(app: runtime.Running) -> None:
    assert await _replace(app, []) == (set(), 0)


async def _refresh(client: Client, account: uuid.UUID) -> None:
    job = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(account_id=str(account), name=J.JOB_NAME_IDENTITY), metadata=client.md()
    )
    assert (await wait_job(client, job.id)).status == J.JOB_STATUS_SUCCESS


async def test_a_refresh_within_the_platform_session_writes_no_grant(
    app: runtime.Running, client: Client
) -> None:
    """The sandbox's session outlives a refresh (PAYLINK_SANDBOX_SESSION_SECONDS): the re-access
    returns the very grant the job was claimed with, and nothing is sealed or written; a grant whose
    session ended is renewed by the refresh and stored (by compare-and-set, as before)."""
    account = await _account(client, "user_good+grantsession")
    row = "SELECT sealed, updated_at FROM account_credentials WHERE account_id = $1"
    before = await app.deps.pool.fetchrow(row, account)
    await _refresh(client, account)
    await _refresh(client, account)
    assert await app.deps.pool.fetchrow(row, account) == before  # the same blob, never rewritten

    grant = await grants.load(app.deps, app.deps.pool, account)
    assert grant is not None
    ended = json.loads(grant) | {"session_expires": 0}  # as a grant stored before sessions had a lifetime
    ended_grant = json.dumps(ended, sort_keys=True).encode()
    stored = await _store(app, account, ended_grant)
    await _refresh(client, account)
    assert await _blob(app, account) != stored
    renewed = await grants.load(app.deps, app.deps.pool, account)
    assert renewed is not None and json.loads(renewed)["session"] != ended["session"]
    assert json.loads(renewed)["session_expires"] > 0
