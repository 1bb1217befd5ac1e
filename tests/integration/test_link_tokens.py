"""LinkTokenService: api-version gating, validation, idempotency, disconnected accounts and token use
(StartSession with unknown, spent, expired and concurrently used tokens)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from paylink.v1 import account_pb2, catalog_pb2, link_pb2, link_token_pb2
from paylink.v1 import common_pb2 as c

from service import runtime
from tests.harness import (
    TEST_ALLOCATION,
    Client,
    error_reason,
    link_account,
    rpc_error,
    start_session,
    violation_fields,
)

IDENTITY = [c.JOB_NAME_IDENTITY]


# --- api-version gating --------------------------------------------------------------------------


async def test_latest_version_binds_the_token_to_the_account(client: Client) -> None:
    _, session = await link_account(client, "user_good+bind")
    account_id = session.account_id
    token = await client.token([], account_id=account_id, api_version="2021-07-28")
    assert token.bound_account_id == account_id
    assert token.api_version == "2021-07-28"
    account = await client.accounts.GetAccount(
        account_pb2.GetAccountRequest(account_id=account_id), metadata=client.md()
    )
    assert token.end_user_id == account.end_user_id  # taken from the account
    assert token.platform_id == "sandbox_adp"


@pytest.mark.parametrize("version", ["2021-04-29", None])
async def test_older_or_missing_version_ignores_account_id(client: Client, version: str | None) -> None:
    _, session = await link_account(client, "user_good+old")
    account_id = session.account_id
    token = await client.token(IDENTITY, account_id=account_id, end_user_id="eu-older", api_version=version)
    assert token.bound_account_id == ""
    assert token.end_user_id == "eu-older"
    assert token.api_version == (version or "")
    # Standard token: its session asks for credentials and creates a new account.
    started = await client.link.StartSession(
        link_pb2.StartSessionRequest(token=token.token), metadata=client.md(version)
    )
    assert started.state == link_pb2.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    assert not started.on_demand_update and started.account_id == ""

    # Without end_user_id the token is a standard one, which needs end_user_id.
    exc = await rpc_error(
        client.tokens.CreateLinkToken(
            link_token_pb2.CreateLinkTokenRequest(
                org_name="Acme Bank", required_jobs=IDENTITY, account_id=account_id
            ),
            metadata=client.md(version),
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["end_user_id"]


@pytest.mark.parametrize("version", ["2021-05-05", "2020-01-01", "yesterday", "2021-7-28", "2021-02-30"])
async def test_unknown_or_malformed_version_is_invalid(client: Client, version: str) -> None:
    exc = await rpc_error(client.token(IDENTITY, api_version=version))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["api-version"]
    # Every call is gated, not only CreateLinkToken.
    exc = await rpc_error(
        client.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=client.md(version))
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["api-version"]


# --- validation ----------------------------------------------------------------------------------


async def test_every_invalid_field_is_reported_at_once(client: Client) -> None:
    bad_target = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="021000022", account_number="1234"
    )
    request = link_token_pb2.CreateLinkTokenRequest(
        org_name="Ac",
        required_jobs=[],
        end_user_id="eu-1",
        allocation=c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=10_000, targets=[bad_target]),
        tags={"": "empty key", "ok": "fine"},
    )
    exc = await rpc_error(client.tokens.CreateLinkToken(request, metadata=client.md()))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violation_fields(exc)
    assert set(fields) == {
        "org_name",
        "required_jobs",
        "allocation.targets[0].routing_number",
        "allocation.targets[0].account_number",
        "tags[]",
    }
    assert len(fields) == 5

    # A switch without any allocation target, with more bad fields alongside.
    request = link_token_pb2.CreateLinkTokenRequest(
        org_name="x" * 31,
        required_jobs=[c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        end_user_id="  ",
        tags={"k" * 65: "v"},
    )
    exc = await rpc_error(client.tokens.CreateLinkToken(request, metadata=client.md()))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violation_fields(exc)) == {
        "org_name",
        "end_user_id",
        "allocation.targets",
        "tags[" + "k" * 64 + "]",
    }


async def test_every_optional_field_is_answered_and_stored_and_defaults_stay_unset(client: Client) -> None:
    """CreateLinkToken sets only the fields that differ from their defaults (service/link_tokens.py):
    each optional one set is answered and read back; left out, it stays at its default."""
    found = await client.catalog.SearchEmployers(
        catalog_pb2.SearchEmployersRequest(query="bluebird"), metadata=client.md()
    )
    employer = found.employers[0]
    token = await client.token(
        IDENTITY,
        employer_id=f"  {employer.id} ",
        disable_direct_deposit_splitting=True,
        skip_intro_screen=True,
        tags={"team": "growth", "tier": ""},
    )
    assert token.employer_id == employer.id and token.platform_id == employer.platform_id
    assert token.disable_direct_deposit_splitting and token.skip_intro_screen
    assert dict(token.tags) == {"team": "growth", "tier": ""}
    got = await client.tokens.GetLinkToken(
        link_token_pb2.GetLinkTokenRequest(link_token_id=token.id), metadata=client.md()
    )
    token.token = ""
    assert got == token

    plain = await client.token(IDENTITY)
    assert plain.language == link_token_pb2.LANGUAGE_EN and list(plain.required_jobs) == IDENTITY
    assert plain.employer_id == plain.platform_id == plain.bound_account_id == ""
    assert not plain.HasField("allocation") and not plain.HasField("used_at")
    assert not plain.disable_direct_deposit_splitting and not plain.skip_intro_screen and not plain.tags
    got = await client.tokens.GetLinkToken(
        link_token_pb2.GetLinkTokenRequest(link_token_id=plain.id), metadata=client.md()
    )
    plain.token = ""
    assert got == plain


async def test_valid_token_fields_round_trip_without_the_secret(client: Client, other_client: Client) -> None:
    token = await client.token(
        [c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        end_user_id="  eu-trim  ",
        allocation=TEST_ALLOCATION,
        platform_id="sandbox_workday",
        language=link_token_pb2.LANGUAGE_ES,
        tags={"team": "growth"},
    )
    assert token.token and token.id and token.end_user_id == "eu-trim"
    assert token.mode == link_token_pb2.WORKSPACE_MODE_SANDBOX
    assert token.expires_at.seconds - token.created_at.seconds == 15 * 60
    assert token.allocation.targets[0].account_number == ""
    assert token.allocation.targets[0].account_number_last_four == "9012"

    got = await client.tokens.GetLinkToken(
        link_token_pb2.GetLinkTokenRequest(link_token_id=token.id), metadata=client.md()
    )
    assert got.token == ""
    assert got.id == token.id and got.end_user_id == "eu-trim" and got.platform_id == "sandbox_workday"
    assert list(got.required_jobs) == [c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH]
    assert got.language == link_token_pb2.LANGUAGE_ES and dict(got.tags) == {"team": "growth"}
    assert got.allocation.targets[0].account_number == ""
    assert not got.HasField("used_at")

    await start_session(client, token.token)
    used = await client.tokens.GetLinkToken(
        link_token_pb2.GetLinkTokenRequest(link_token_id=token.id), metadata=client.md()
    )
    assert used.HasField("used_at") and used.token == ""

    exc = await rpc_error(
        other_client.tokens.GetLinkToken(
            link_token_pb2.GetLinkTokenRequest(link_token_id=token.id), metadata=other_client.md()
        )
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_and_disconnected_accounts(client: Client) -> None:
    exc = await rpc_error(client.token([], account_id="7b0c8a37-4a8b-4d63-9c52-6d3f0b8f9e11"))
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    exc = await rpc_error(client.token([], account_id="not-a-uuid"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["account_id"]

    _, session = await link_account(client, "user_good+disc")
    account = await client.accounts.DisconnectAccount(
        account_pb2.DisconnectAccountRequest(account_id=session.account_id), metadata=client.md()
    )
    assert not account.connected
    exc = await rpc_error(client.token([c.JOB_NAME_IDENTITY], account_id=session.account_id))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc) == "ACCOUNT_DISCONNECTED"


# --- idempotency ---------------------------------------------------------------------------------


def _request(request_id: str, org_name: str = "Acme Bank") -> link_token_pb2.CreateLinkTokenRequest:
    return link_token_pb2.CreateLinkTokenRequest(
        org_name=org_name, required_jobs=IDENTITY, end_user_id="eu-idem", request_id=request_id
    )


async def test_request_id_replays_the_first_token(client: Client, other_client: Client) -> None:
    first = await client.tokens.CreateLinkToken(_request("req-1"), metadata=client.md())
    again = await client.tokens.CreateLinkToken(_request("req-1"), metadata=client.md())
    assert again.id == first.id and again.token == first.token and again.expires_at == first.expires_at

    exc = await rpc_error(
        client.tokens.CreateLinkToken(_request("req-1", "Other Bank"), metadata=client.md())
    )
    assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(exc) == "REQUEST_ID_REUSED"

    # The api-version changes what the body means (account_id binds or not): same id, other version.
    exc = await rpc_error(client.tokens.CreateLinkToken(_request("req-1"), metadata=client.md("2021-04-29")))
    assert exc.code() == grpc.StatusCode.ALREADY_EXISTS

    # Another request id, or another workspace with the same id: new tokens.
    other = await client.tokens.CreateLinkToken(_request("req-2"), metadata=client.md())
    elsewhere = await other_client.tokens.CreateLinkToken(_request("req-1"), metadata=other_client.md())
    assert len({first.id, other.id, elsewhere.id}) == 3


async def test_concurrent_duplicates_create_one_token(client: Client, app: runtime.Running) -> None:
    results = await asyncio.gather(
        *(client.tokens.CreateLinkToken(_request("req-concurrent"), metadata=client.md()) for _ in range(10))
    )
    assert len({t.id for t in results}) == 1
    assert len({t.token for t in results}) == 1
    rows = await app.deps.pool.fetchval("SELECT count(*) FROM link_tokens WHERE id = $1::uuid", results[0].id)
    assert rows == 1
    ws_tokens = await app.deps.pool.fetchval(
        "SELECT count(*) FROM link_tokens WHERE workspace_id = (SELECT workspace_id FROM link_tokens"
        " WHERE id = $1::uuid)",
        results[0].id,
    )
    assert ws_tokens == 1


# --- token use -----------------------------------------------------------------------------------


async def test_start_session_token_states(client: Client, other_client: Client, app: runtime.Running) -> None:
    exc = await rpc_error(start_session(client, "lt_this-token-does-not-exist"))
    assert exc.code() == grpc.StatusCode.NOT_FOUND

    token = await client.token(IDENTITY)
    # Another workspace cannot start it.
    exc = await rpc_error(start_session(other_client, token.token))
    assert exc.code() == grpc.StatusCode.NOT_FOUND

    session = await start_session(client, token.token)
    assert session.state == link_pb2.LINK_SESSION_STATE_CREDENTIALS_REQUIRED
    assert session.link_token_id == token.id and list(session.required_jobs) == IDENTITY
    # Idempotent per token (issue 10): a retry returns the same session, not LINK_TOKEN_USED.
    again = await start_session(client, token.token)
    assert again.id == session.id

    expired = await client.token(IDENTITY)
    await app.deps.pool.execute(
        "UPDATE link_tokens SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", expired.id
    )
    exc = await rpc_error(start_session(client, expired.token))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc) == "LINK_TOKEN_EXPIRED"


async def test_concurrent_start_session_only_one_wins(client: Client) -> None:
    token = await client.token(IDENTITY)
    results = await asyncio.gather(
        *(start_session(client, token.token) for _ in range(2)), return_exceptions=True
    )
    # One session is created; both callers get it (StartSession is idempotent per token, issue 10).
    sessions = [r for r in results if isinstance(r, link_pb2.LinkSession)]
    assert len(sessions) == 2 and sessions[0].id == sessions[1].id
