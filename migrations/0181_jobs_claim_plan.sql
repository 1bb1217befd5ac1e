-- Issue 14 (the pipeline's PostgreSQL CPU per job): the claim keeps one cached generic plan per
-- connection, and that plan reaches every table by key whatever the statistics say.
--
-- The claim (service/queue.py CLAIM: lease the picked queue rows, mark their jobs running, return
-- them with their accounts' grants) was one statement of three CTEs and two outer joins. As such it was
-- planned again for the first five calls on each pooled connection and after that whenever its custom plan
-- looked cheaper, and a plan made while the tables were small (a new database, statistics of a few
-- rows) joined accounts and account_credentials by reading them whole, and stayed cached so.
--
-- So it is a PL/pgSQL function, as 0179's CreateJob statements: its one statement is prepared once
-- per connection and planned generically, with sequential and bitmap scans, hash and merge joins
-- disabled, so that index probes by key in nested loops are what remains; the statement calling it
-- has nothing to cost, so PostgreSQL keeps its generic plan too. The pick itself stays 0177's
-- job_queue_pick. Same statement, same rows, same locks in the same order (job_queue, then jobs).
--
-- Additive for a running fleet: the previous release does not call it.
CREATE FUNCTION jobs_claim(worker text, lease interval, n integer, skip_platforms text[])
RETURNS TABLE (id uuid, account_id uuid, batch_id uuid, name smallint, origin smallint, platform_id text,
               params bytea, params_sealed bytea, attempts integer, pending_since timestamptz,
               traceparent text, request_id text, grant_sealed bytea)
LANGUAGE plpgsql VOLATILE ROWS 64
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH picked AS (
    UPDATE job_queue SET locked_by = worker, lease_expires_at = now() + lease
    WHERE job_queue.id = ANY(ARRAY(SELECT job_queue_pick(n, skip_platforms)))
    RETURNING job_queue.id, job_queue.lease_expires_at),
  claimed AS (
    UPDATE jobs SET status = 'running', locked_by = worker, lease_expires_at = picked.lease_expires_at,
                    attempts = jobs.attempts + 1
    FROM picked WHERE jobs.id = picked.id
    RETURNING jobs.id, jobs.account_id, jobs.batch_id, jobs.name, jobs.origin, jobs.platform_id, jobs.params,
              jobs.params_sealed, jobs.attempts, jobs.pending_since, jobs.traceparent, jobs.request_id)
  SELECT claimed.*, c.sealed
  FROM claimed LEFT JOIN accounts a ON a.id = claimed.account_id AND a.connected
       LEFT JOIN account_credentials c ON c.account_id = a.id;
END $$;
