"""`jobs_link_token` holds only the jobs that have a link token (migration 0180): a refresh (no link
token) writes no entry into it, and ListJobs' filter on a link token still reads it, on the generic
plan its pooled connection caches."""

from __future__ import annotations

import uuid

from paylink.v1 import common_pb2, job_pb2

from service import jobs, queue
from service.deps import Deps
from tests.harness import insert_accounts, new_refresh

REFRESHES = 300
WITH_TOKEN = 3


async def _link_token(deps: Deps, workspace: uuid.UUID) -> uuid.UUID:
    token = uuid.uuid4()
    await deps.pool.execute(
        "INSERT INTO link_tokens (id, workspace_id, token_hash, org_name, required_jobs, end_user_id, options,"
        " expires_at) VALUES ($1, $2, $3, 'tests', '{}', 'tests', '', now() + interval '1 hour')",
        token,
        workspace,
        token.bytes,
    )
    return token


async def test_only_jobs_with_a_link_token_are_in_its_index_and_list_jobs_reads_it(deps: Deps) -> None:
    workspace, accounts = await insert_accounts(deps.pool, REFRESHES)
    token = await _link_token(deps, workspace)
    linked = []
    for account in accounts[:WITH_TOKEN]:
        async with deps.pool.acquire() as conn:
            row = await queue.enqueue(
                conn,
                workspace_id=workspace,
                account_id=account,
                platform_id="sandbox_adp",
                name=common_pb2.JOB_NAME_IDENTITY,
                origin=common_pb2.JOB_ORIGIN_LINK,
                batch_id=uuid.uuid4(),
                api_version="",
                params=common_pb2.JobParams(),
                link_token_id=token,
            )
        assert row is not None
        linked.append(row["id"])
    refreshes = [new_refresh(workspace, a, common_pb2.JOB_NAME_INCOME) for a in accounts]
    assert all(await queue.enqueue_refreshes(deps.pool, refreshes))
    await deps.pool.execute("ANALYZE jobs")

    # The refreshes' NULLs are not in the index: a search for them cannot use it (before: an index-only
    # scan of it found all of them); the jobs with a link token are.
    async with deps.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        for condition, found in (("IS NULL", REFRESHES), ("IS NOT NULL", WITH_TOKEN)):
            sql = f"SELECT count(*) FROM jobs WHERE link_token_id {condition}"
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}"))
            assert ("jobs_link_token" in plan) == (condition == "IS NOT NULL"), plan
            assert await conn.fetchval(sql) == found
    predicate = (
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = 'jobs_link_token'::regclass"
    )
    assert await deps.pool.fetchval(predicate) == "(link_token_id IS NOT NULL)"

    # ListJobs by link token, as the API runs it, more times than the five custom plans PostgreSQL
    # makes first: the jobs of the token, newest first...
    request = job_pb2.ListJobsRequest(link_token_id=str(token))
    for _ in range(7):
        page = await jobs.list_page(deps, workspace, request)
        assert [j.id for j in page.jobs] == [str(i) for i in reversed(linked)]
    # ...and its cached generic plan reads this index.
    [statement] = await deps.pool.fetch(
        "SELECT name, cardinality(parameter_types) AS n, generic_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%link_token_id = $2%' AND statement NOT LIKE '%pg_prepared_statements%'"
    )
    assert statement["generic_plans"] > 0
    async with deps.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        args = ", ".join(["NULL"] * statement["n"])
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE {statement['name']}({args})"))
    assert "Index Scan using jobs_link_token on jobs" in plan, plan
