"""A grant that another process changes while a bound On Demand Updates session re-accesses the
platform survives the session's outcome (grants.store_unless_changed, a compare-and-set).

Two api processes on one database: the first's sandbox_slow calls take LATENCY seconds, so a bound
session's StartSession served by it is still in its re-access platform call when, through the second
(instant) process, a sandbox ChangeAllocation stores a newer grant. The session still reaches
JOBS_RUNNING, but the grant it got back, derived from the older one, is not stored: the newer grant
is, byte for byte, still the stored one (docs/architecture.md, "Grants"). With an unconditional store
in session_effects (the code before ae368e3) the session's grant overwrites it and this test fails."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2, sandbox_pb2

from tests.faults.cluster import Deployment, free_port, wait_until
from tests.harness import TEST_TARGET, Client, link_account, start_session, stored_grant

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

LATENCY = 4.0  # each sandbox_slow call of the api process serving the bound session


async def test_a_grant_changed_by_another_process_during_a_re_access_survives(
    deployment: Deployment,
) -> None:
    dep = deployment
    slow = await dep.spawn("api", sandbox_slow_latency_seconds=LATENCY)  # serves dep.port
    other_port = free_port()
    other = await dep.spawn("api", grpc_port=other_port, sandbox_slow_latency_seconds=0)
    worker = await dep.spawn("worker", sandbox_slow_latency_seconds=0)
    client = await dep.new_client()  # through the slow process
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{other_port}")
    try:
        fast = Client(channel, client.secret)  # the same workspace, through the other process
        # Linked (and its link job run) through the instant process; then no worker, so nothing
        # else touches the grant.
        _, first = await link_account(fast, "user_good+odu_race", platform_id="sandbox_slow")
        account_id = first.account_id
        await worker.stop()
        before = await stored_grant(dep, account_id)

        bound = await fast.token([c.JOB_NAME_IDENTITY], account_id=account_id)
        session = asyncio.create_task(start_session(client, bound.token))  # the slow process

        async def re_accessing() -> bool:
            row = await dep.fetch(
                "SELECT state, login_kind FROM link_sessions WHERE link_token_id = $1",
                uuid.UUID(bound.id),
            )
            return bool(row) and row[0]["state"] == "AUTHENTICATING" and row[0]["login_kind"] == "reaccess"

        await wait_until(re_accessing, 30, "the bound session in its re-access platform call", interval=0.02)
        await fast.sandbox.ChangeAllocation(
            sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=TEST_TARGET),
            metadata=fast.md(),
        )
        changed = await stored_grant(dep, account_id)
        assert changed != before
        assert not session.done(), "the change must commit while the re-access runs"

        done = await asyncio.wait_for(session, 60)
        assert done.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING and done.account_id == account_id
        assert await stored_grant(dep, account_id) == changed  # the newer grant survived
        assert slow.returncode is None and other.returncode is None
    finally:
        await channel.close()
