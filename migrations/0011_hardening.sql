-- Issue #11: at most one refresh job in flight (queued, running or pending) per account and job
-- name. CreateJob answers a second request with the job already in flight (service/queue.py
-- enqueue_refresh); a scheduled refresh skips an account that already has one. Refreshes already
-- duplicated before this migration: the later ones end as errors, so the index can be built.
UPDATE jobs SET status = 'error', outcome = 3, error_type = 4,
       error_message = 'superseded: another refresh of this job was already in flight',
       completed_at = now(), locked_by = NULL, lease_expires_at = NULL
WHERE id IN (
  SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY account_id, name ORDER BY created_at, id) AS n
    FROM jobs WHERE origin = 2 AND status IN ('queued', 'running', 'pending')) AS d
  WHERE n > 1);

CREATE UNIQUE INDEX jobs_one_refresh_in_flight ON jobs (account_id, name)
  WHERE origin = 2 AND status IN ('queued', 'running', 'pending');
