"""bench/queue_core.py, the queue core `make bench` sets beside PgQueuer and procrastinate: driven as
the worker drives `service.queue` (slots freed at hand-over, outcomes batched per transaction), it
runs every job exactly once, to success, and leaves no queue row behind, in both of its modes."""

from __future__ import annotations

import pytest

from bench import queue_core
from service.db import connect as db_connect
from tests.harness import base_settings, create_test_database, drop_database


@pytest.mark.parametrize("mode", ["drain", "e2e"])
async def test_the_bench_queue_core_runs_every_job_once_to_success(mode: str) -> None:
    admin = base_settings().database_url
    url = await create_test_database(admin)  # its own database: no other worker claims its jobs
    try:
        result = await queue_core.run(mode, 300, url, batched=True)
        assert result["jobs"] == 300 and not result["capped"]
        assert (
            isinstance(result["jobs_per_commit"], float) and result["jobs_per_commit"] > 1
        )  # outcomes were written many to a transaction
        conn = await db_connect(url)
        try:
            rows = await conn.fetch("SELECT status, attempts, locked_by FROM jobs")
            assert len(rows) == 300
            assert {(r["status"], r["attempts"], r["locked_by"]) for r in rows} == {("success", 1, None)}
            assert await conn.fetchval("SELECT count(*) FROM job_queue") == 0
        finally:
            await conn.close()
    finally:
        await drop_database(admin, url)
