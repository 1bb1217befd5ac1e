-- Issue 14 (the pipeline's PostgreSQL CPU per job): CreateJob's two grouped statements keep one
-- cached plan per connection instead of being planned again on every call.
--
-- CreateJob without a request_id reads its account with the other CreateJobs' (service/job_intake.py,
-- `WHERE id = ANY($1)`) and queues its refresh with theirs (service/queue.py, one INSERT of many
-- rows from arrays). Both take one array element per caller, 1-10 at a time. A custom plan sees the
-- arrays' lengths and costs less than the generic plan (which assumes ten elements), so with
-- plan_cache_mode = auto PostgreSQL planned each call again: ~1,229 plans for 1,376 calls of the
-- INSERT and one plan per call of the read (bench/NOTES.md, inflight session 24), ~130 us of the
-- cluster's CPU per job. Unlike the completer's batch (SET LOCAL in its transaction), these run as
-- autocommit statements on the pool: a SET of their own would cost round trips.
--
-- So each is a PL/pgSQL function (its plan prepared once per connection and kept, as 0177's
-- job_queue_pick) planned generically, and the statement that calls it has no array of its own to
-- cost: its custom plans cost what the generic one does, so PostgreSQL keeps the generic one.
--
-- The plans do not depend on the tables' statistics (a new database has none, and a plan cached
-- while a table was small would read it whole once it is large): every table is reached by its
-- primary key or by the unique refresh index, which is what remains with sequential and bitmap
-- scans, hash and merge joins disabled.
--
-- Additive for a running fleet: the previous release does not call them.

-- The accounts of these ids (any workspace: the caller checks its own), by primary key.
CREATE FUNCTION accounts_by_ids(ids uuid[]) RETURNS SETOF accounts
LANGUAGE plpgsql STABLE ROWS 10
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
  RETURN QUERY SELECT * FROM accounts WHERE id = ANY(ids);
END $$;

-- Refreshes (origin = `refresh_origin`) queued in the given order, with their accounts' tags; one
-- already in flight for its account and job type, or earlier in the arrays, is skipped (the unique
-- index job_queue_one_refresh decides). Returns the jobs inserted. No NOTIFY (service/queue.py).
CREATE FUNCTION jobs_enqueue_refreshes(
  job_ids uuid[], batch_ids uuid[], workspace_ids uuid[], account_ids uuid[], platform_ids text[],
  names smallint[], job_params bytea[], api_versions text[], traceparents text[], request_ids text[],
  refresh_origin smallint
) RETURNS SETOF jobs
LANGUAGE plpgsql VOLATILE ROWS 10
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
  RETURN QUERY
  WITH u AS MATERIALIZED (
    SELECT * FROM unnest(job_ids, batch_ids, workspace_ids, account_ids, platform_ids, names, job_params,
                         api_versions, traceparents, request_ids)
                  WITH ORDINALITY AS u(i, b, w, a, p, n, params, v, tp, rq, o)),
  queued AS (
    INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)
    SELECT u.i, now(), u.p, u.a, u.n, true FROM u ORDER BY u.o
    ON CONFLICT (account_id, name) WHERE refresh DO NOTHING
    RETURNING job_queue.id),
  job AS (
    INSERT INTO jobs (id, batch_id, workspace_id, account_id, platform_id, name, origin, params,
                      api_version, tags, traceparent, request_id)
    SELECT u.i, u.b, u.w, u.a, u.p, u.n, refresh_origin, u.params, u.v,
           (SELECT acc.tags FROM accounts acc WHERE acc.id = u.a), u.tp, u.rq
    FROM u JOIN queued ON queued.id = u.i
    ORDER BY u.o
    RETURNING *)
  SELECT * FROM job;
END $$;
