-- Issue 14 (the pipeline's round trips per job): CreateJob's grouped refreshes read their accounts in
-- the statement that queues them.
--
-- CreateJob without a request_id read its account with the other CreateJobs' (accounts_by_ids, one
-- statement for the callers that gathered meanwhile: about 4 in the saturated pipeline), checked it in
-- Python (this workspace's, connected, its platform supports the job), then queued its refresh with
-- theirs (jobs_enqueue_refreshes, about 9 a statement): the read was a third of the pipeline's
-- statements, 0.245 a job (bench/NOTES.md, claims session 30). jobs_create_refreshes does both: it
-- reads each refresh's account by key in the workspace it was asked in, refuses the refreshes whose
-- account is not found there ('not_found'), not connected ('disconnected'), or whose platform does not
-- support the job ('not_supported': `supported` lists the pairs 'platform_id:name' the drivers
-- support), and queues the others as jobs_enqueue_refreshes does (a refresh in flight for its account
-- and job type, or earlier in the arrays, is skipped). One row per refresh, in the given order: its
-- ordinal, what refused it, the account's platform, and the job queued (NULL: refused or skipped).
--
-- One cached generic plan per connection that reaches every table by key (0179's reasons and settings).
-- Additive for a running fleet: the previous release does not call it.
CREATE FUNCTION jobs_create_refreshes(
  job_ids uuid[], batch_ids uuid[], workspace_ids uuid[], account_ids uuid[], names smallint[],
  job_params bytea[], api_versions text[], traceparents text[], request_ids text[], supported text[],
  refresh_origin smallint
) RETURNS TABLE (ordinal bigint, refused text, account_platform_id text, job jobs)
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
    SELECT * FROM unnest(job_ids, batch_ids, workspace_ids, account_ids, names, job_params, api_versions,
                         traceparents, request_ids)
                  WITH ORDINALITY AS u(i, b, w, a, n, params, v, tp, rq, o)),
  checked AS MATERIALIZED (
    SELECT u.*, acc.platform_id AS p, acc.tags,
           CASE WHEN acc.id IS NULL THEN 'not_found'
                WHEN NOT acc.connected THEN 'disconnected'
                WHEN acc.platform_id || ':' || u.n <> ALL(supported) THEN 'not_supported' END AS why
    FROM u LEFT JOIN accounts acc ON acc.id = u.a AND acc.workspace_id = u.w),
  queued AS (
    INSERT INTO job_queue (id, run_at, platform_id, account_id, name, refresh)
    SELECT ch.i, now(), ch.p, ch.a, ch.n, true FROM checked ch WHERE ch.why IS NULL ORDER BY ch.o
    ON CONFLICT (account_id, name) WHERE refresh DO NOTHING
    RETURNING job_queue.id),
  added AS (
    INSERT INTO jobs (id, batch_id, workspace_id, account_id, platform_id, name, origin, params,
                      api_version, tags, traceparent, request_id)
    SELECT ch.i, ch.b, ch.w, ch.a, ch.p, ch.n, refresh_origin, ch.params, ch.v, ch.tags, ch.tp, ch.rq
    FROM checked ch JOIN queued ON queued.id = ch.i
    ORDER BY ch.o
    RETURNING *)
  SELECT ch.o, ch.why, ch.p, CASE WHEN added.id IS NULL THEN NULL ELSE added::jobs END
  FROM checked ch LEFT JOIN added ON added.id = ch.i
  ORDER BY ch.o;
END $$;
