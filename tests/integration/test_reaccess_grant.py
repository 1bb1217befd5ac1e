"""A bound On Demand Updates session that re-accesses the platform with the stored grant stores the
grant it gets back only if the stored grant is still the one it started from (grants.
store_unless_changed): a sandbox ChangeAllocation committed while the session waited on the platform
(sandbox_slow: each call takes the settings' sandbox_slow_latency_seconds) or for its MFA answer is
newer, and survives, byte for byte. Credentials the user types on a bound session still win: a real
login is the user's explicit re-link (docs/architecture.md, "Grants")."""

from __future__ import annotations

import asyncio
import time
import uuid

from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2, sandbox_pb2

from service import grants, runtime
from tests.harness import TEST_TARGET, Client, link_account, start_session, stored_grant

S = link_pb2
IDENTITY = [c.JOB_NAME_IDENTITY]


async def _blob(app: runtime.Running, account_id: str) -> bytes:
    return await stored_grant(app.deps.pool, account_id)


async def _in_mfa_round(client: Client, username: str) -> tuple[str, link_pb2.LinkSession]:
    """A linked account (its id) and a bound session of it whose re-access asks for MFA."""
    _, first = await link_account(client, username)
    bound = await client.token(IDENTITY, account_id=first.account_id)
    asked = await start_session(client, bound.token)
    assert asked.state == S.LINK_SESSION_STATE_MFA_REQUIRED and asked.mfa.type == "code"
    return first.account_id, asked


async def _answer_mfa(client: Client, asked: link_pb2.LinkSession) -> None:
    answered = await client.link.SubmitMfa(
        S.SubmitMfaRequest(session_id=asked.id, answer="mfa_code"), metadata=client.md()
    )
    assert answered.state == S.LINK_SESSION_STATE_JOBS_RUNNING


async def _change_allocation(client: Client, account_id: str) -> None:
    await client.sandbox.ChangeAllocation(
        sandbox_pb2.ChangeAllocationRequest(account_id=account_id, target=TEST_TARGET), metadata=client.md()
    )


async def _authenticating(app: runtime.Running, token_id: str) -> None:
    """Waits until the token's session is in its re-access platform call."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = await app.deps.pool.fetchrow(
            "SELECT state, login_kind FROM link_sessions WHERE link_token_id = $1", uuid.UUID(token_id)
        )
        if row is not None and row["state"] == "AUTHENTICATING" and row["login_kind"] == "reaccess":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the session never began its re-access")


async def test_a_grant_changed_while_the_session_re_accesses_survives(
    app: runtime.Running, client: Client
) -> None:
    _, first = await link_account(client, "user_good+odu_cas", platform_id="sandbox_slow")
    account_id = first.account_id
    bound = await client.token(IDENTITY, account_id=account_id)
    before = await _blob(app, account_id)

    session = asyncio.create_task(start_session(client, bound.token))
    await _authenticating(app, bound.id)
    await _change_allocation(client, account_id)  # commits while the re-access waits on the platform
    changed = await _blob(app, account_id)
    assert changed != before
    assert not session.done()  # the interleaving really happened: the platform call still runs

    done = await session
    assert done.state == S.LINK_SESSION_STATE_JOBS_RUNNING and done.account_id == account_id
    assert await _blob(app, account_id) == changed  # the newer grant survived the session's outcome
    await client.wait_session(done.id, S.LINK_SESSION_STATE_COMPLETED)


async def test_a_grant_changed_during_the_re_access_mfa_round_survives(
    app: runtime.Running, client: Client
) -> None:
    account_id, asked = await _in_mfa_round(client, "user_reauth_mfa+odu_cas")
    kept = await app.deps.pool.fetchval(
        "SELECT reaccess_grant_digest FROM link_sessions WHERE id = $1::uuid", asked.id
    )
    assert kept is not None and bytes(kept) not in await _blob(app, account_id)  # a digest, not the blob

    await _change_allocation(client, account_id)
    changed = await _blob(app, account_id)
    await _answer_mfa(client, asked)
    assert await _blob(app, account_id) == changed
    assert (
        await app.deps.pool.fetchval(
            "SELECT reaccess_grant_digest FROM link_sessions WHERE id = $1::uuid", asked.id
        )
        is None
    )


async def test_an_unchanged_grant_is_replaced_by_the_re_access(app: runtime.Running, client: Client) -> None:
    _, first = await link_account(client, "user_good+odu_same")
    account_id = first.account_id
    before = await _blob(app, account_id)
    bound = await client.token(IDENTITY, account_id=account_id)
    done = await start_session(client, bound.token)
    assert done.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    assert await _blob(app, account_id) != before  # the re-access's refreshed grant is stored


async def test_credentials_typed_on_a_bound_session_win(app: runtime.Running, client: Client) -> None:
    _, first = await link_account(client, "user_good+odu_typed")
    account_id = first.account_id
    await client.sandbox.ExpireCredentials(
        sandbox_pb2.ExpireCredentialsRequest(account_id=account_id), metadata=client.md()
    )
    bound = await client.token(IDENTITY, account_id=account_id)
    session = await start_session(client, bound.token)
    assert session.state == S.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    await _change_allocation(client, account_id)  # stored before the user's login: it still loses
    changed = await _blob(app, account_id)
    relinked = await client.link.SubmitCredentials(
        S.SubmitCredentialsRequest(
            session_id=session.id, username="user_good+odu_typed", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert relinked.state == S.LINK_SESSION_STATE_JOBS_RUNNING
    assert await _blob(app, account_id) != changed  # the user's new login replaced the stored grant


async def test_a_grant_only_resealed_during_the_mfa_round_is_still_replaced(
    app: runtime.Running, client: Client
) -> None:
    """`vault reencrypt` puts the same grant in a new blob: the digest is of the opened grant."""
    account_id, asked = await _in_mfa_round(client, "user_reauth_mfa+odu_reseal")
    account = uuid.UUID(account_id)
    async with app.deps.pool.acquire() as conn:
        same = await grants.load(app.deps, conn, account)
        assert same is not None
        await grants.store(app.deps, conn, account, same)  # a new blob (new nonce), the same grant
    resealed = await _blob(app, account_id)
    await _answer_mfa(client, asked)
    after = await _blob(app, account_id)
    assert after != resealed
    async with app.deps.pool.acquire() as conn:
        assert await grants.load(app.deps, conn, account) != same  # the re-access's refreshed grant
