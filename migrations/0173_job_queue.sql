-- Issue 14 (the queue core's drain): the queue's working set moves to a narrow table of its own, so
-- that a claim or a completion changes no indexed column of `jobs` and can be a HOT update there.
--
-- `job_queue` holds one row per job not final yet (queued, running or pending): what a claim, the
-- rescue of expired leases, the scheduler's refreshes-in-flight bound and the one-refresh-in-flight
-- rule of 0120 need. `jobs` stays every job's truth (status, lease, run_at, attempts, outcome: what
-- GetJob and ListJobs read); service/queue.py writes both in the same statement, and deletes the
-- queue row when the job becomes final. The partial indexes on `jobs` whose predicate named `status`
-- (0001's jobs_runnable and jobs_leased, 0012's jobs_refresh_in_flight, 0120's unique
-- jobs_one_refresh_in_flight) are replaced by the ones below, on the small table. (Numbered after
-- 0172 so that it applies last on fresh and existing databases alike.)
--
-- Releases before this one neither read nor write `job_queue`: stop their api and worker processes
-- before migrating (docs/operations.md, Upgrading). A job still leased by a live worker stops it here.
LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at > now()) THEN
    RAISE EXCEPTION '0173_job_queue: workers of the previous release still hold jobs; stop every api and worker process first (docs/operations.md, Upgrading), or wait for their leases to run out';
  END IF;
END $$;

CREATE TABLE job_queue (
    id               uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    run_at           timestamptz NOT NULL,   -- claimable from then on (infinity: held)
    locked_by        text,                   -- the worker holding the lease: the job is running
    lease_expires_at timestamptz,
    platform_id      text NOT NULL,
    account_id       uuid NOT NULL,
    name             smallint NOT NULL,
    refresh          boolean NOT NULL        -- origin is JOB_ORIGIN_REFRESH
);
-- The claim: waiting jobs in run_at order.
CREATE INDEX job_queue_runnable ON job_queue (run_at) WHERE locked_by IS NULL;
-- Rescue of jobs whose worker died.
CREATE INDEX job_queue_leased ON job_queue (lease_expires_at) WHERE locked_by IS NOT NULL;
-- At most one refresh in flight per account and job type (0120's rule), and the refreshes in flight
-- per platform (the scheduler's concurrency bound).
CREATE UNIQUE INDEX job_queue_one_refresh ON job_queue (account_id, name) WHERE refresh;
CREATE INDEX job_queue_refreshes ON job_queue (platform_id) WHERE refresh;

INSERT INTO job_queue (id, run_at, locked_by, lease_expires_at, platform_id, account_id, name, refresh)
SELECT id, run_at,
       CASE WHEN status = 'running' THEN locked_by END,
       CASE WHEN status = 'running' THEN coalesce(lease_expires_at, now()) END,
       platform_id, account_id, name, origin = 2
FROM jobs WHERE status IN ('queued', 'running', 'pending');

DROP INDEX jobs_runnable, jobs_leased, jobs_refresh_in_flight, jobs_one_refresh_in_flight;
-- Room on each page for a job's next versions (claim, completion) next to it: HOT updates.
ALTER TABLE jobs SET (fillfactor = 70);
