"""Group commit of the audited reads (service/audit_commit.py) against the real database: reads that
wait together share one transaction, each is recorded exactly once and answered only after the
commit; a read whose own statement fails fails alone (the others go again); a lost connection fails
every read of its batch and leaves no record of any; a batch of reads of one statement is one
pipelined round trip, each read getting its own rows, with the same failure rules; and through the
API, concurrent reads of personal data are each recorded exactly once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from paylink.v1 import account_pb2, common_pb2

from service import audit, audit_commit, db, runtime
from tests.harness import Client, link_account

# A read of one row that records itself (like result_reads._RESULT): account and end user from the row.
_READ = audit.attach(
    "SELECT $1::uuid AS account_id, 'eu-group'::text AS end_user_id, $2::int AS n",
    2,
    subject="SELECT account_id, end_user_id FROM target",
)


def _who(workspace: uuid.UUID, n: int) -> audit.Who:
    return audit.Who(workspace, "svc-group", "0123456789abcdef", "GetIdentity", f"req-group-{n}")


def _record(workspace: uuid.UUID, n: int) -> list[object]:
    return audit.Record(_who(workspace, n), audit.READ, 1).args(from_subject=True)


def _args(workspace: uuid.UUID, account: uuid.UUID, n: int) -> tuple[object, ...]:
    return (account, n, *_record(workspace, n))


async def _recorded(pool: db.Pool, workspace: uuid.UUID) -> collections.Counter[str]:
    rows = await pool.fetch("SELECT request_id FROM audit_records WHERE workspace_id = $1", workspace)
    return collections.Counter(r["request_id"] for r in rows)


async def test_concurrent_reads_share_a_commit_and_each_is_recorded_once(app: runtime.Running) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool)
    workspace, account = uuid.uuid4(), uuid.uuid4()
    reads = 40
    rows = await asyncio.gather(
        *(commit.fetchrow(_READ, *_args(workspace, account, n)) for n in range(reads))
    )
    assert [r["n"] for r in rows if r is not None] == list(range(reads))  # each caller gets its own rows
    # All 40 were waiting when the first batch started: one transaction, one durable commit.
    assert commit.batches == 1
    recorded = await _recorded(pool, workspace)
    assert recorded == {f"req-group-{n}": 1 for n in range(reads)}


async def test_waves_of_reads_each_recorded_once_and_answered_after_their_commit(
    app: runtime.Running,
) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool, max_batch=8)
    workspace, account = uuid.uuid4(), uuid.uuid4()

    async def read(n: int) -> None:
        row = await commit.fetchrow(_READ, *_args(workspace, account, n))
        assert row is not None and row["n"] == n
        # Answered only once its record is committed: another connection sees it.
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM audit_records WHERE workspace_id = $1 AND request_id = $2",
                workspace,
                f"req-group-{n}",
            )
            == 1
        )

    await asyncio.gather(*(read(n) for n in range(100)))
    assert 100 / 8 <= commit.batches < 100
    assert await _recorded(pool, workspace) == {f"req-group-{n}": 1 for n in range(100)}


async def _reads_and_one_odd(
    commit: audit_commit.GroupCommit, workspace: uuid.UUID, account: uuid.UUID, reads: int, odd: str
) -> list[object]:
    """The outcomes of `reads` audited reads with the `odd` statement third among them, all waiting
    together (one batch)."""
    calls = [commit.fetchrow(_READ, *_args(workspace, account, n)) for n in range(reads)]
    calls.insert(2, commit.fetchrow(odd))
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_a_read_whose_statement_fails_fails_alone(app: runtime.Running) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool)
    workspace, account = uuid.uuid4(), uuid.uuid4()
    outcomes = await _reads_and_one_odd(commit, workspace, account, 5, "SELECT 1 / 0")
    assert isinstance(outcomes[2], asyncpg.DivisionByZeroError)
    ok = [o for i, o in enumerate(outcomes) if i != 2]
    assert [o["n"] for o in ok if isinstance(o, asyncpg.Record)] == list(range(5))
    # The batch was rolled back and the others went again: each recorded exactly once.
    assert await _recorded(pool, workspace) == {f"req-group-{n}": 1 for n in range(5)}


async def test_a_lost_connection_fails_every_read_of_its_batch_and_records_none(app: runtime.Running) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool)
    workspace, account = uuid.uuid4(), uuid.uuid4()
    outcomes = await _reads_and_one_odd(
        commit, workspace, account, 4, "SELECT pg_terminate_backend(pg_backend_pid())"
    )
    assert all(isinstance(o, db.UNAVAILABLE) for o in outcomes), outcomes  # the API answers UNAVAILABLE
    assert await _recorded(pool, workspace) == {}  # no data released, no record committed
    # The next reads go on as usual.
    assert await commit.fetchrow(_READ, *_args(workspace, account, 9)) is not None
    assert await _recorded(pool, workspace) == {"req-group-9": 1}


# Reads of one statement built by `audit.attach`: a batch of them is one pipelined round trip
# (`fetchmany`, one implicit transaction committed at its end); each row carries its read's position.
_PAGE = audit.attach(
    "SELECT $1::uuid AS account_id, 'eu-group'::text AS end_user_id, $2::int AS n, g AS item"
    " FROM generate_series(1, $3::int) AS g",
    3,
    subject="SELECT DISTINCT account_id, end_user_id FROM target",
)
# One row, or a division by zero when $2 is 0.
_DIVIDE = audit.attach(
    "SELECT $1::uuid AS account_id, 'eu-group'::text AS end_user_id, 100 / $2::int AS n",
    2,
    subject="SELECT account_id, end_user_id FROM target",
)
# One row, or the statement ends its own connection when $2 is 2.
_TERMINATE = audit.attach(
    "SELECT $1::uuid AS account_id, 'eu-group'::text AS end_user_id, $2::int AS n,"
    " CASE WHEN $2::int = 2 THEN pg_terminate_backend(pg_backend_pid()) END AS gone",
    2,
    subject="SELECT account_id, end_user_id FROM target",
)


class _CountingPool:
    """The real pool, counting the statements its connections are sent by kind."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool
        self.calls: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_CountingConnection]:
        async with self.pool.acquire() as conn:
            yield _CountingConnection(conn, self.calls)


class _CountingConnection:
    def __init__(self, conn: Any, calls: collections.Counter[str]) -> None:
        self._conn, self._calls = conn, calls

    def __getattr__(self, name: str) -> Any:
        self._calls[name] += 1
        return getattr(self._conn, name)


async def test_reads_of_one_statement_are_one_round_trip_and_each_gets_its_own_rows(
    app: runtime.Running,
) -> None:
    counting = _CountingPool(app.deps.pool)
    commit = audit_commit.GroupCommit(counting)  # type: ignore[arg-type]
    workspace, account = uuid.uuid4(), uuid.uuid4()
    reads = 30
    outcomes = await asyncio.gather(
        *(commit.fetch(_PAGE, account, n, n % 4, *_record(workspace, n)) for n in range(reads))
    )
    # Each caller gets exactly its own rows (0 to 3 of them), in order.
    assert [[(r["n"], r["item"]) for r in rows] for rows in outcomes] == [
        [(n, item) for item in range(1, n % 4 + 1)] for n in range(reads)
    ]
    assert commit.batches == 1
    assert counting.calls == {"fetchmany": 1}  # no BEGIN, no statement per read, no COMMIT
    # A record for each read that found data, none for the others.
    recorded = await _recorded(app.deps.pool, workspace)
    assert recorded == {f"req-group-{n}": 1 for n in range(reads) if n % 4}


async def test_a_failing_read_of_a_pipelined_batch_fails_alone(app: runtime.Running) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool)
    workspace, account = uuid.uuid4(), uuid.uuid4()
    divisors = [5, 4, 0, 2, 1]
    outcomes = await asyncio.gather(
        *(commit.fetchrow(_DIVIDE, account, d, *_record(workspace, i)) for i, d in enumerate(divisors)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], asyncpg.DivisionByZeroError)
    assert [o["n"] for i, o in enumerate(outcomes) if i != 2] == [20, 25, 50, 100]  # type: ignore[index]
    # The pipelined batch was rolled back; each read went again alone: each recorded exactly once.
    assert await _recorded(pool, workspace) == {f"req-group-{i}": 1 for i in (0, 1, 3, 4)}


async def test_a_lost_connection_fails_every_read_of_a_pipelined_batch_and_records_none(
    app: runtime.Running,
) -> None:
    pool = app.deps.pool
    commit = audit_commit.GroupCommit(pool)
    workspace, account = uuid.uuid4(), uuid.uuid4()
    outcomes = await asyncio.gather(
        *(commit.fetchrow(_TERMINATE, account, n, *_record(workspace, n)) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, db.UNAVAILABLE) for o in outcomes), outcomes
    assert await _recorded(pool, workspace) == {}
    assert await commit.fetchrow(_TERMINATE, account, 9, *_record(workspace, 9)) is not None
    assert await _recorded(pool, workspace) == {"req-group-9": 1}


@pytest.mark.parametrize("concurrency", [16])
async def test_concurrent_get_identity_calls_are_each_recorded_once(
    app: runtime.Running, client: Client, concurrency: int
) -> None:
    _, session = await link_account(client, "user_good", [common_pb2.JOB_NAME_IDENTITY])
    request_ids = [f"req-identity-{uuid.uuid4().hex[:8]}" for _ in range(concurrency * 3)]

    async def get(request_id: str) -> None:
        md = [*client.md(), ("x-request-id", request_id)]
        identity = await client.accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=session.account_id), metadata=md
        )
        assert identity.account_id == session.account_id

    for wave in range(3):
        await asyncio.gather(*(get(r) for r in request_ids[wave * concurrency : (wave + 1) * concurrency]))
    rows = await app.deps.pool.fetch(
        "SELECT request_id FROM audit_records WHERE request_id = ANY($1::text[])", request_ids
    )
    assert collections.Counter(r["request_id"] for r in rows) == dict.fromkeys(request_ids, 1)
