"""Secrets never land anywhere we can read, in clear or encoded (base64 at any offset, hex): every
text/bytea value of every table, the logs (records and their JSON form, of this test and of the
whole run, and the stderr of every subprocess the tests started: CLI commands, servers, grpcurl),
and every event consumed from Kafka. The API secrets looked for are every one a test client was
given. Marked `runs_last` (tests/conftest.py orders it after every other test) so it also scans what
the whole suite left behind. The fault tests' process logs get the same scan
(tests/faults/test_zz_secrets_in_logs.py)."""

from __future__ import annotations

import base64
import logging
import re
import sys

import pytest
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2, link_pb2, link_token_pb2

from service import runtime
from service.logs import JsonFormatter
from service.validation import aba_checksum_ok
from tests import secret_scan
from tests.conftest import SESSION_LOG
from tests.harness import (
    TEST_ALLOCATION,
    Client,
    EventLog,
    link_account,
    start_session,
    unique_events,
    wait_event_ids,
    wait_job,
)

pytestmark = pytest.mark.runs_last

SECOND_ACCOUNT_NUMBER = "98765432101"
WRONG_PASSWORD = "Tr0ub4dor-wrong-pw"
WRONG_ANSWER = "elm street wrong answer"
NEEDLES = (
    "pass_good",
    "mfa_code",
    "pinwheel drive",
    "123456789012",
    SECOND_ACCOUNT_NUMBER,
    WRONG_PASSWORD.casefold(),
    WRONG_ANSWER,
)
# A 9-digit run (optionally dashed like an SSN) not glued to other letters or digits (so not part of
# a UUID, hash or phone number).
SSN = re.compile(r"(?<![0-9A-Za-z-])(\d{3}-\d{2}-\d{4}|\d{9})(?![0-9A-Za-z-])")


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw.decode("latin-1") + "\n" + raw.decode("utf-8", errors="ignore")
    return str(value)


_scanner: list[secret_scan.Scanner] = []


def _encoded_scan(where: str, text: str) -> list[str]:
    if not _scanner:  # built once, after every test of the run registered its clients
        forms = {form: f"{needle!r}" for needle in NEEDLES for form in secret_scan.encoded_forms(needle)}
        _scanner.append(secret_scan.Scanner({**forms, **secret_scan.secret_forms()}))
    return _scanner[0].scan(where, text)


def _ssn_like(where: str, text: str) -> list[str]:
    found = []
    for match in SSN.finditer(text):
        digits = match.group(1)
        if "-" in digits or not aba_checksum_ok(digits):  # valid ABA routing numbers are not secret
            found.append(f"{where}: SSN-like {digits!r}")
    return found


def _hits(where: str, text: str) -> list[str]:
    folded = text.casefold()
    found = [f"{where}: {needle!r}" for needle in NEEDLES if needle in folded]
    found += _encoded_scan(where, text)
    return found + _ssn_like(where, text)


_fixed_scanner: list[secret_scan.Scanner] = []


def looks_secret(text: str) -> bool:
    """Whether this scan flags `text` whatever API secrets the run handed out: a needle in clear (any
    case) or encoded, anything shaped like an unredacted API secret, an SSN-like number. The fuzz test
    keeps its generated strings clear of it: Hypothesis also draws literals from the code (the sandbox's
    password, a test's sample API secret), and a fuzzed value stored or logged would read as a leak."""
    if not _fixed_scanner:
        _fixed_scanner.append(
            secret_scan.Scanner({form: repr(n) for n in NEEDLES for form in secret_scan.encoded_forms(n)})
        )
    folded = text.casefold()
    return (
        any(needle in folded for needle in NEEDLES)
        or bool(_fixed_scanner[0].scan("", text))
        or bool(_ssn_like("", text))
    )


async def _run_flows_with_secrets(client: Client, events: EventLog) -> set[str]:
    """Logins with passwords, MFA codes and answers, full account numbers; returns the accounts."""
    accounts = set()
    # A wrong password first, then the right one; a switch with a full account number.
    token = await client.tokens.CreateLinkToken(
        link_token_pb2.CreateLinkTokenRequest(
            org_name="Acme Bank",
            end_user_id="eu-secrets",
            request_id="secret-token",
            required_jobs=[c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
            allocation=TEST_ALLOCATION,
        ),
        metadata=client.md(),
    )
    session = await start_session(client, token.token)
    wrong = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id,
            platform_id="sandbox_adp",
            username="user_good+sec",
            password=WRONG_PASSWORD,
        ),
        metadata=client.md(),
    )
    assert wrong.last_error == c.JOB_ERROR_CODE_INVALID_CREDENTIALS
    ok = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=session.id, platform_id="sandbox_adp", username="user_good+sec", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert ok.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    accounts.add(ok.account_id)

    # MFA code (after a wrong answer), and the security question of the always-MFA platform.
    _, mfa = await client.connect("user_mfa+sec", [c.JOB_NAME_INCOME])
    wrong = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=mfa.id, answer=WRONG_ANSWER), metadata=client.md()
    )
    assert wrong.last_error == c.JOB_ERROR_CODE_MFA_FAILED
    ok = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=mfa.id, answer="mfa_code"), metadata=client.md()
    )
    assert ok.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    accounts.add(ok.account_id)
    _, question = await client.connect(
        "user_good+q", [c.JOB_NAME_IDENTITY], platform_id="sandbox_mfa", mfa_answer="pinwheel drive"
    )
    assert question.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    accounts.add(question.account_id)

    # Re-access with MFA, choosing between two full account numbers.
    _, reauth = await link_account(client, "user_reauth_mfa+sec")
    second = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_SAVINGS, routing_number="011000015", account_number=SECOND_ACCOUNT_NUMBER
    )
    bound = await client.token(
        [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        account_id=reauth.account_id,
        allocation=c.Allocation(
            type=c.ALLOCATION_TYPE_PERCENTAGE, value=20, targets=[TEST_ALLOCATION.targets[0], second]
        ),
    )
    started = await start_session(client, bound.token)
    assert started.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED
    await client.link.ChooseAllocation(
        link_pb2.ChooseAllocationRequest(session_id=started.id, target_index=1), metadata=client.md()
    )
    answered = await client.link.SubmitMfa(
        link_pb2.SubmitMfaRequest(session_id=started.id, answer="mfa_code"), metadata=client.md()
    )
    assert answered.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    accounts.add(reauth.account_id)

    # Stale credentials typed again, and a server-side refresh with the stored grant.
    _, expired = await link_account(client, "user_expired+sec")
    relink = await start_session(
        client, (await client.token([c.JOB_NAME_INCOME], account_id=expired.account_id)).token
    )
    relinked = await client.link.SubmitCredentials(
        link_pb2.SubmitCredentialsRequest(
            session_id=relink.id, username="user_expired+sec", password="pass_good"
        ),
        metadata=client.md(),
    )
    assert relinked.state == link_pb2.LINK_SESSION_STATE_JOBS_RUNNING
    accounts.add(expired.account_id)
    refresh = await client.jobs.CreateJob(
        job_pb2.CreateJobRequest(
            account_id=expired.account_id, name=c.JOB_NAME_IDENTITY, request_id="secret-refresh"
        ),
        metadata=client.md(),
    )
    await wait_job(client, refresh.id)

    for session_id in (mfa.id, question.id, started.id, relink.id):
        await client.wait_session(session_id, link_pb2.LINK_SESSION_STATE_COMPLETED)
    return accounts


def _collected() -> list[str]:
    """Test modules of this run (to know whether subprocess logs must exist)."""
    return [name.replace(".", "/") for name in sys.modules if name.startswith("tests.cli.test_")]


async def test_no_secret_in_database_logs_or_events(
    client: Client, events: EventLog, app: runtime.Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # The scanner itself finds what it looks for, in clear and encoded.
    assert len(_hits("self-check", 'x "PASS_GOOD" 123-45-6789 5550001112223 021000021 987654321')) == 3
    assert _hits("self-check", base64.b64encode(b"xy:pass_good;").decode())
    assert _hits("self-check", b"mfa_code".hex())
    assert _hits("self-check", client.secret.encode().hex())
    assert _hits("self-check", base64.urlsafe_b64encode(b"k=" + client.secret.encode()).decode())
    assert not _hits("self-check", client.secret.split("_")[1])  # the public key id alone is no secret
    accounts = await _run_flows_with_secrets(client, events)

    # Everything these flows published is in Kafka before we look.
    rows = await app.deps.pool.fetch(
        "SELECT event_id::text AS id FROM outbox WHERE account_id = ANY($1::uuid[])", list(accounts)
    )
    await wait_event_ids(events, {r["id"] for r in rows})

    hits: list[str] = []
    tables = await app.deps.pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    scanned = 0
    for table in tables:
        name = table["table_name"]
        for row in await app.deps.pool.fetch(f'SELECT * FROM "{name}"'):
            for column, value in row.items():
                if value is not None:
                    scanned += 1
                    hits += _hits(f"{name}.{column}", _text(value))
    assert scanned > 300
    assert {t["table_name"] for t in tables} >= {
        "accounts",
        "account_credentials",
        "link_tokens",
        "link_sessions",
        "jobs",
        "job_results",
        "paystubs",
        "idempotency_keys",
        "outbox",
    }

    formatter = JsonFormatter()
    assert caplog.records
    for record in caplog.records:
        hits += _hits(f"log {record.name}", record.getMessage() + "\n" + formatter.format(record))
    hits += _hits("log text", caplog.text)
    # And every line any test of this run logged (tests/conftest.py records them all).
    assert len(SESSION_LOG.lines) >= len(caplog.records)
    for line in SESSION_LOG.lines:
        hits += _hits("session log", line)
    # And the log output of every subprocess of the run (CLI commands, servers, grpcurl blocks).
    logs = secret_scan.process_logs()
    assert logs or not any(n.startswith("tests/cli") for n in _collected()), "no subprocess log registered"
    for name, text in logs:
        hits += _hits(f"process log {name}", text)

    mine = unique_events([r for r in events.items if r.event.account_id in accounts])
    assert len(mine) >= 20
    for received in events.items:
        raw = received.event.SerializeToString()
        hits += _hits(f"event {received.event.event}", _text(raw) + repr(received.headers) + received.key)

    assert hits == []
