"""CreateJob's group commit (service/job_intake.py): concurrent refreshes share one INSERT and one
commit, with their accounts' checks (each caller its own refusal, as CreateJob answered it after a read
of its own); a refresh already in flight (or earlier in the same statement) is the answer as with one
INSERT per call, and a statement that fails is split so one bad refresh fails only its caller."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
from paylink.v1 import common_pb2 as c
from paylink.v1 import job_pb2

from service import queue, runtime
from service.job_intake import STATEMENTS, Intake
from tests.harness import Client, link_account, new_refresh

NAMES = [c.JOB_NAME_IDENTITY, c.JOB_NAME_EMPLOYMENT, c.JOB_NAME_INCOME]
SUPPORTED = [f"sandbox_adp:{name}" for name in [*NAMES, c.JOB_NAME_PAYSTUBS]]


async def _accounts(
    app: runtime.Running, client: Client, n: int, prefix: str
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(workspace id, account id) of `n` linked accounts, their link jobs finished."""
    linked = await asyncio.gather(*(link_account(client, f"user_good+{prefix}{i}") for i in range(n)))
    account_ids = [uuid.UUID(session.account_id) for _, session in linked]
    rows = await app.deps.pool.fetch(
        "SELECT id, workspace_id FROM accounts WHERE id = ANY($1::uuid[])", account_ids
    )
    workspace = {r["id"]: r["workspace_id"] for r in rows}
    return [(workspace[a], a) for a in account_ids]


async def test_one_statement_skips_a_refresh_in_flight_earlier_in_the_list(
    app: runtime.Running, client: Client
) -> None:
    [(workspace, account)] = await _accounts(app, client, 1, "intake-dup")
    first, again, other = (
        new_refresh(workspace, account, c.JOB_NAME_IDENTITY),
        new_refresh(workspace, account, c.JOB_NAME_IDENTITY),
        new_refresh(workspace, account, c.JOB_NAME_EMPLOYMENT),
    )
    rows = await queue.enqueue_refreshes(app.deps.pool, [first, again, other])
    assert rows[0] is not None and rows[0]["id"] == first.job_id
    assert rows[1] is None  # the same account and job type, earlier in the same statement
    assert rows[2] is not None and rows[2]["id"] == other.job_id
    stored = await app.deps.pool.fetch(
        "SELECT id FROM jobs WHERE account_id = $1 AND origin = $2", account, c.JOB_ORIGIN_REFRESH
    )
    assert {r["id"] for r in stored} == {first.job_id, other.job_id}


async def test_concurrent_refreshes_share_statements_and_a_bad_one_fails_alone(
    app: runtime.Running, client: Client
) -> None:
    accounts = await _accounts(app, client, 4, "intake-many")
    intake = Intake()  # its own, so the count of statements is this test's
    good = [new_refresh(w, a, name) for w, a in accounts for name in NAMES]
    created = await asyncio.gather(*(intake.enqueue(app.deps.pool, r, SUPPORTED) for r in good))
    assert [(a.refused, a.platform_id) for a in created] == [(None, "sandbox_adp")] * len(good)
    assert [a.row["id"] for a in created if a.row is not None] == [r.job_id for r in good]
    # 12 callers gathered at once: the first STATEMENTS alone, the rest in one statement.
    assert intake.batches <= STATEMENTS + 1
    committed = await app.deps.pool.fetch(
        "SELECT id FROM jobs WHERE id = ANY($1::uuid[])", [r.job_id for r in good]
    )
    assert len(committed) == len(good)

    # A statement holding a refresh that cannot be inserted (a NUL in its text: PostgreSQL refuses the
    # statement) is split: that caller gets the error, the others their rows.
    more = [new_refresh(w, a, c.JOB_NAME_PAYSTUBS) for w, a in accounts]
    bad = dataclasses.replace(
        new_refresh(accounts[0][0], accounts[0][1], c.JOB_NAME_INCOME), request_id="\x00"
    )
    before = intake.batches
    answers = await asyncio.gather(
        *(intake.enqueue(app.deps.pool, r, SUPPORTED) for r in [*more[:3], bad, *more[3:]]),
        return_exceptions=True,
    )
    failed = answers.pop(3)
    assert isinstance(failed, asyncpg.PostgresError), failed
    assert [a.row["id"] for a in answers if isinstance(a, queue.Created) and a.row] == [
        r.job_id for r in more
    ]
    # The first STATEMENTS alone, then the failed group split: one statement per good refresh.
    assert intake.batches - before == len(more)


async def test_each_caller_gets_its_own_account_s_answer_from_one_statement(
    app: runtime.Running, client: Client
) -> None:
    """The accounts' checks in the statement that queues the refreshes (migration 0186): each caller
    gets what CreateJob answered after reading its account alone: NOT_FOUND for another workspace's
    account or an unknown id, its account disconnected, its platform not supporting the job."""
    (workspace, account), (_, disconnected) = await _accounts(app, client, 2, "intake-refusals")
    await app.deps.pool.execute("UPDATE accounts SET connected = false WHERE id = $1", disconnected)
    intake = Intake()
    asks = [
        new_refresh(workspace, account, c.JOB_NAME_IDENTITY),
        new_refresh(uuid.uuid4(), account, c.JOB_NAME_EMPLOYMENT),  # another workspace's account
        new_refresh(workspace, uuid.uuid4(), c.JOB_NAME_EMPLOYMENT),  # no such account
        new_refresh(workspace, disconnected, c.JOB_NAME_EMPLOYMENT),
        new_refresh(workspace, account, c.JOB_NAME_SHIFTS),  # not in SUPPORTED
        new_refresh(workspace, account, c.JOB_NAME_INCOME),
    ]
    created = await asyncio.gather(*(intake.enqueue(app.deps.pool, r, SUPPORTED) for r in asks))
    assert [a.refused for a in created] == [
        None,
        "not_found",
        "not_found",
        "disconnected",
        "not_supported",
        None,
    ]
    assert [a.platform_id for a in created] == [
        "sandbox_adp",
        None,
        None,
        "sandbox_adp",
        "sandbox_adp",
        "sandbox_adp",
    ]
    assert [a.row["id"] if a.row else None for a in created] == [
        asks[0].job_id,
        None,
        None,
        None,
        None,
        asks[5].job_id,
    ]
    assert intake.batches <= STATEMENTS  # the first alone, the rest in one statement
    queued = await app.deps.pool.fetch(
        "SELECT id FROM jobs WHERE id = ANY($1::uuid[])", [r.job_id for r in asks]
    )
    assert {r["id"] for r in queued} == {asks[0].job_id, asks[5].job_id}


async def test_create_job_without_request_id_answers_the_refresh_in_flight(client: Client) -> None:
    """Through the API: concurrent CreateJobs for the same account and job type all name one job
    while it is in flight, and distinct ones each get their own."""
    _, session = await link_account(client, "user_good+intake-api")

    async def create(name: c.JobName.ValueType) -> job_pb2.Job:
        return await client.jobs.CreateJob(
            job_pb2.CreateJobRequest(account_id=session.account_id, name=name), metadata=client.md()
        )

    jobs = await asyncio.gather(*(create(name) for name in NAMES for _ in range(3)))
    by_name: dict[int, set[str]] = {}
    for job in jobs:
        assert job.origin == c.JOB_ORIGIN_REFRESH and job.account_id == session.account_id
        by_name.setdefault(job.name, set()).add(job.id)
    assert set(by_name) == set(NAMES)
    # A refresh may finish between two callers' statements (the worker runs them at once): then the
    # later caller queued a new one. Never two in flight: every id names a real job of that name.
    for name, job_ids in by_name.items():
        for job_id in job_ids:
            got = await client.jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), metadata=client.md())
            assert got.name == name


async def test_a_lone_create_job_is_not_held_back(app: runtime.Running, client: Client) -> None:
    """With nothing else in flight a CreateJob's statement starts at once (no batching delay)."""
    [(workspace, account)] = await _accounts(app, client, 1, "intake-lone")
    intake = Intake()
    created = await asyncio.wait_for(
        intake.enqueue(app.deps.pool, new_refresh(workspace, account, NAMES[0]), SUPPORTED), 30
    )
    assert created.row is not None and intake.batches == 1
