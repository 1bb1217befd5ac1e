"""A grant that changes while a refresh job is in its platform call survives the job's completion.

A refresh job is claimed with the account's sealed grant, re-accesses the platform with it and
returns a refreshed grant. Here the worker's sandbox_slow calls take LATENCY seconds each, so the job
is still in its platform calls when, through the API process (whose calls are instant), the stored
grant changes: a sandbox ChangeAllocation, or an On Demand Updates re-link with new credentials.
The job still succeeds with the data it fetched, but its grant, derived from the stale one, is not
stored (grants.replace, a compare-and-set): the newer grant is, byte for byte, still the stored one,
and the next job runs with it (docs/architecture.md, "Grants")."""

from __future__ import annotations

import pytest
from paylink.v1 import account_pb2, link_pb2, sandbox_pb2
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import Deployment, wait_until
from tests.harness import Client, start_session, stored_grant

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

LATENCY = 5.0  # each of the worker's sandbox_slow calls; a refresh makes two (re-access, fetch)
ALLOCATIONS = c.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS
TARGET = c.AllocationTarget(
    type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
    routing_number="011000015",
    account_number="5550001234",
    name="New Bank",
)


async def _start(dep: Deployment) -> Client:
    # No platform session outlives a call (PAYLINK_SANDBOX_SESSION_SECONDS=0): every re-access opens
    # a new one, so every refresh returns a new grant to store, which is what is raced here.
    # logins, re-links and controls: instant
    await dep.spawn("api", sandbox_slow_latency_seconds=0, sandbox_session_seconds=0)
    await dep.spawn("relay")
    await dep.spawn("worker", sandbox_slow_latency_seconds=LATENCY, sandbox_session_seconds=0)
    return await dep.new_client()


async def _link(dep: Deployment, client: Client, username: str, job: int) -> str:
    _, session = await client.connect(username, [job], platform_id="sandbox_slow")
    assert session.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    await dep.wait_all_jobs_final(1, within=60)
    return str(session.account_id)


async def _status(dep: Deployment, job_id: str) -> str:
    return str(await dep.fetchval("SELECT status FROM jobs WHERE id = $1::uuid", job_id))


async def _refresh_in_its_platform_call(
    dep: Deployment, client: Client, account_id: str, job: c.JobName.ValueType
) -> str:
    """Queues a refresh and waits until a worker claimed it (with the grant stored now)."""
    reply = await client.sandbox.TriggerRefreshes(
        sandbox_pb2.TriggerRefreshesRequest(account_id=account_id, names=[job]), metadata=client.md()
    )
    (job_id,) = reply.job_ids

    async def claimed() -> bool:
        return await _status(dep, job_id) == "running"

    await wait_until(claimed, 30, "the refresh claimed", interval=0.02)
    return str(job_id)


async def _finished(dep: Deployment, job_id: str) -> str:
    async def final() -> bool:
        return await _status(dep, job_id) in ("success", "error")

    await wait_until(final, 60, f"job {job_id} final")
    return await _status(dep, job_id)


async def _allocations(client: Client, account_id: str) -> list[str]:
    stored = await client.accounts.GetDirectDepositAllocations(
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id), metadata=client.md()
    )
    return [a.target.account_number_last_four for a in stored.allocations]


async def test_an_allocation_changed_during_a_refresh_is_kept_and_the_next_refresh_sees_it(
    deployment: Deployment,
) -> None:
    dep = deployment
    client = await _start(dep)
    account_id = await _link(dep, client, "user_good+grantrace", ALLOCATIONS)
    before = await _allocations(client, account_id)
    assert "1234" not in before

    job_id = await _refresh_in_its_platform_call(dep, client, account_id, ALLOCATIONS)
    await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=TARGET), metadata=client.md()
    )
    changed = await stored_grant(dep, account_id)
    assert await _status(dep, job_id) == "running", "the change must commit while the job runs"

    assert await _finished(dep, job_id) == "success"  # it succeeded with what it fetched before
    assert await _allocations(client, account_id) == before
    assert await stored_grant(dep, account_id) == changed  # its refreshed (stale) grant was not stored

    # The next refresh runs with the changed grant: the platform's new allocation comes back.
    next_id = await _refresh_in_its_platform_call(dep, client, account_id, ALLOCATIONS)
    assert await _finished(dep, next_id) == "success"
    assert await _allocations(client, account_id) == ["1234"]
    assert await stored_grant(dep, account_id) != changed  # its own refreshed grant replaced it


async def test_a_relink_with_new_credentials_during_a_refresh_is_kept(deployment: Deployment) -> None:
    dep = deployment
    client = await _start(dep)
    username = "user_good+grantrelink"
    account_id = await _link(dep, client, username, c.JOB_NAME_IDENTITY)

    job_id = await _refresh_in_its_platform_call(dep, client, account_id, c.JOB_NAME_IDENTITY)
    # The user changes the password at the platform, then logs in again through On Demand Updates.
    await client.sandbox.ExpireCredentials(
        sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=client.md()
    )
    bound = await client.token([c.JOB_NAME_EMPLOYMENT], account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == link_pb2.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    relinked = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(session_id=session.id, username=username, password="pass_good"),
        metadata=client.md(),
    )
    assert relinked.account_id == account_id
    assert relinked.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    new_login = await stored_grant(dep, account_id)
    assert await _status(dep, job_id) == "running", "the re-link must commit while the job runs"

    assert await _finished(dep, job_id) == "success"
    assert await stored_grant(dep, account_id) == new_login  # not the old login's refreshed grant

    # The next refresh was claimed with the new login's grant: its refreshed one replaced it (the
    # compare-and-set only matches the blob the job was claimed with).
    next_id = await _refresh_in_its_platform_call(dep, client, account_id, c.JOB_NAME_IDENTITY)
    assert await _finished(dep, next_id) == "success"
    assert await stored_grant(dep, account_id) != new_login
