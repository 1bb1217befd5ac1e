"""`python -m service workspace list|delete` against the real stack (subprocesses, real PostgreSQL and
Kafka): usage is listed; delete refuses while accounts are connected; --force revokes the secrets,
disconnects every account with its event on Kafka, erases every sealed secret, keeps the history,
and can run again."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import grpc
from paylink.v1 import account_pb2
from paylink.v1 import common_pb2 as c

from service import runtime
from service.config import Settings
from tests.cli.util import fields, run, service_env
from tests.harness import TEST_ALLOCATION, Client, EventLog, Received, link_account


def _listed(out: str, workspace_id: str) -> dict[str, str]:
    line = next(line for line in out.splitlines() if line.startswith(workspace_id))
    parts = line.split()
    return {"state": parts[2], **dict(p.split("=", 1) for p in parts if "=" in p)}


async def test_workspace_list_and_delete(
    app: runtime.Running, channel: grpc.aio.Channel, events: EventLog, settings: Settings
) -> None:
    env = service_env(settings)
    created = fields((await run(["workspace", "create", "to-delete"], env)).out)
    workspace_id = created["workspace_id"]
    client = Client(channel, created["api_secret"])
    # Two accounts: one with a switch (sealed allocation and job parameters), one with an
    # idempotent token (a stored, sealed response).
    _, switched = await link_account(
        client, "user_good", [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH], allocation=TEST_ALLOCATION
    )
    _, plain = await link_account(client, "user_good+2", [c.JOB_NAME_IDENTITY], request_id="ws-delete-1")
    accounts = [switched.account_id, plain.account_id]

    listed = await run(["workspace", "list"], env)
    assert listed.code == 0, listed.err
    usage = _listed(listed.out, workspace_id)
    assert usage["state"] == "active" and usage["secrets"] == "1"
    assert (usage["accounts"], usage["connected"]) == ("2", "2") and int(usage["jobs"]) >= 2

    refused = await run(["workspace", "delete", workspace_id], env)
    assert refused.code == 1 and "2 connected accounts" in refused.err and "--force" in refused.err
    await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=accounts[0]), metadata=client.md()
    )

    deleted = await run(["workspace", "delete", workspace_id, "--force"], env)
    assert deleted.code == 0, deleted.err
    report = fields(deleted.out)
    assert report["secrets_revoked"] == "1" and report["accounts_disconnected"] == "2"
    assert int(report["sealed_values_erased"]) >= 3  # token allocation, switch parameters, idempotent reply

    # Each account was disconnected with its event, on the real broker, under the command's request id.
    for account_id in accounts:

        def status_updated(r: Received, a: str = account_id) -> bool:
            return r.event.account_id == a and r.event.event == "account.monitoring_status.updated"

        (update,) = [r for r in await events.wait_for(status_updated)]
        payload = update.event.monitoring_status_updated
        assert (payload.monitoring_status, payload.reason) == (
            c.MONITORING_STATUS_CUSTOMER_DISABLED,
            "customer_disconnected",
        )
        assert update.headers["x-request-id"].startswith("workspace-delete-")

    # The secret stops working (the API caches a valid secret for up to 5 s).
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.accounts.GetAccount(
                account_pb2.GetAccountRequest(account_id=accounts[0]), metadata=client.md()
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() < deadline, "the deleted workspace's secret still works"
        await asyncio.sleep(0.2)

    conn = await asyncpg.connect(settings.database_url)
    try:
        ws = workspace_id
        sealed_left = await conn.fetchval(
            """SELECT (SELECT count(*) FROM account_credentials c JOIN accounts a ON a.id = c.account_id
                        WHERE a.workspace_id = $1)
                    + (SELECT count(*) FROM link_tokens WHERE workspace_id = $1 AND allocation_sealed IS NOT NULL)
                    + (SELECT count(*) FROM link_sessions WHERE workspace_id = $1
                        AND (mfa_state_sealed IS NOT NULL OR chosen_allocation_sealed IS NOT NULL))
                    + (SELECT count(*) FROM jobs WHERE workspace_id = $1 AND params_sealed IS NOT NULL)
                    + (SELECT count(*) FROM idempotency_keys WHERE workspace_id = $1)""",
            uuid.UUID(ws),
        )
        assert sealed_left == 0
        kept = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM accounts WHERE workspace_id = $1 AND NOT connected) AS accounts,
                      (SELECT count(*) FROM jobs WHERE workspace_id = $1) AS jobs,
                      (SELECT count(*) FROM outbox WHERE workspace_id = $1) AS events,
                      (SELECT count(*) FROM api_secrets WHERE workspace_id = $1 AND revoked_at IS NULL) AS secrets""",
            uuid.UUID(ws),
        )
        assert kept is not None
        assert (kept["accounts"], kept["secrets"]) == (2, 0) and kept["jobs"] >= 2 and kept["events"] >= 6
    finally:
        await conn.close()

    usage = _listed((await run(["workspace", "list"], env)).out, workspace_id)
    assert usage["state"] == "deleted" and (usage["secrets"], usage["connected"]) == ("0", "0")
    assert usage["accounts"] == "2"
    # No new secret for a deleted workspace; a second delete finds nothing left to do.
    assert (await run(["secret", "create", workspace_id], env)).code == 1
    again = await run(["workspace", "delete", workspace_id], env)
    assert again.code == 0, again.err
    assert fields(again.out)["accounts_disconnected"] == "0"
    # An unknown workspace is an error, not a silent success.
    missing = await run(["workspace", "delete", "00000000-0000-4000-8000-000000000000"], env)
    assert missing.code == 1 and "not found" in missing.err
