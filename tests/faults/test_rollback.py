"""No event exists for a rolled-back change (docs/reliability.md, "Delivery: nothing lost"). A
deferred constraint trigger makes the commit of a login's outcome fail after every statement of it
ran (the account, its credentials, its jobs and the `account.added` outbox row): nothing of it
stays, no event reaches the outbox or Kafka. The session, committed AUTHENTICATING before the
platform call (issue 10), is then ended by its login lease (LOGIN_INTERRUPTED, with its
`link_session.failed`: its only event). With the trigger gone, a new session's login commits with
exactly one `account.added` event."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2

from tests.faults.cluster import Deployment, read_log, wait_until
from tests.harness import rpc_error, start_session

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

FAIL_AT_COMMIT = """
CREATE FUNCTION test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'forced rollback (test)'; END $$;
CREATE CONSTRAINT TRIGGER test_fail_commit AFTER INSERT ON accounts
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_commit();
"""


async def test_rolled_back_login_leaves_no_event(
    deployment: Deployment, figures: Callable[..., None]
) -> None:
    dep = deployment
    await dep.spawn("api", login_lease_seconds=2)
    await dep.spawn("relay")
    client = await dep.new_client()
    token = await client.token([c.JOB_NAME_IDENTITY])
    session = await start_session(client, token.token)
    request = link_pb2.SubmitCredentialsRequest(
        session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
    )
    before = await dep.fetchval("SELECT count(*) FROM outbox")

    assert dep.pool is not None
    await dep.pool.execute(FAIL_AT_COMMIT)
    exc = await rpc_error(client.link.SubmitCredentials(request, metadata=client.md(), timeout=20))
    assert exc.code() != grpc.StatusCode.OK
    # The commit failed after every statement ran: nothing of the transaction stays.
    assert await dep.fetchval("SELECT count(*) FROM accounts") == 0
    assert await dep.fetchval("SELECT count(*) FROM account_credentials") == 0
    assert await dep.fetchval("SELECT count(*) FROM jobs") == 0
    assert await dep.fetchval("SELECT count(*) FROM outbox") == before

    # The outcome was not saved: the session stays AUTHENTICATING until its lease runs out, then
    # ends LOGIN_INTERRUPTED; its link_session.failed is the one event of all this.
    async def interrupted() -> bool:
        got = await client.link.GetSession(
            link_pb2.GetSessionRequest(session_id=session.id), metadata=client.md()
        )
        assert not got.account_id
        return got.failure_reason == link_pb2.LINK_SESSION_FAILURE_REASON_LOGIN_INTERRUPTED

    await wait_until(interrupted, 60, "the session whose outcome was rolled back ended by its lease")
    rows = await dep.fetch("SELECT event_type, account_id FROM outbox ORDER BY id OFFSET $1", before)
    assert [(r["event_type"], str(r["account_id"])) for r in rows] == [("link_session.failed", session.id)]

    await dep.pool.execute("DROP TRIGGER test_fail_commit ON accounts; DROP FUNCTION test_fail_commit()")
    session = await start_session(client, (await client.token([c.JOB_NAME_IDENTITY])).token)
    request = link_pb2.SubmitCredentialsRequest(
        session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
    )
    linked = await client.link.SubmitCredentials(request, metadata=client.md(), timeout=20)
    assert linked.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    await dep.wait_outbox_published(within=60)
    added = await dep.fetch("SELECT event_id, account_id FROM outbox WHERE event_type = 'account.added'")
    assert [str(r["account_id"]) for r in added] == [linked.account_id]

    # Kafka holds the committed account's event once, and nothing else of this account's name.
    await dep.wait_consumed({str(r["event_id"]) for r in added}, within=60)
    log = await read_log(dep.stack.bootstrap, dep.prefix)
    assert [r.event.account_id for r in log if r.event.event == "account.added"] == [linked.account_id]
    figures(rolled_back_events=0, committed_account_added=1)
