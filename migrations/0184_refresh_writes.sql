-- Issue 14 (the pipeline's PostgreSQL cost per job): CreateJob's refresh writes three WAL records fewer
-- (12.2 -> 9.2 a job by bench/create_job_wal.py; bench/NOTES.md, queue session 29).
--
-- 1. `job_queue_refreshes` (0173: job_queue (platform_id) WHERE refresh) goes. Its one reader counts
--    the refreshes in flight per platform (service/monitoring/schedules.py), all of them at once: it
--    reads every entry of the index whichever index it reads, and `job_queue_one_refresh` (same rows)
--    serves it as well. Each refresh queued wrote an entry in both.
--
-- 2. `jobs_batch` holds only the jobs that are not refreshes (origin 2, JOB_ORIGIN_REFRESH). A refresh
--    is always the only job of its batch (CreateJob gives it a batch of its own, the scheduler its own
--    id), and nothing reads a refresh's batch by that index: the batch's reads (service/queue.py: a
--    Link session's jobs, its held jobs, whether its switch succeeded) say `origin <> 2`, and answer
--    for a refresh's batch what they did (none of it is a held job, a switch before an allocation, or
--    a Link session's job). The previous release's batch reads do not say it and read `jobs` without
--    an index while it runs beside this one: roll its processes promptly (docs/operations.md).
--
-- 3. The foreign key `jobs_account_in_workspace` (0182) becomes triggers that check the same thing
--    without locking the account row. The key's check on each job inserted locked its account's row
--    FOR KEY SHARE: a WAL record a job, the account's heap page dirtied, and a MultiXact when
--    CreateJobs of one account overlapped. What the key said, they say:
--    - a job inserted names an account of its workspace (one statement-level check of the rows a
--      statement inserted, by the accounts_id_workspace index; refused with the key's SQLSTATE and
--      name);
--    - a job's account and workspace do not change (no statement sets them);
--    - an account that jobs name is not deleted, nor its id or workspace changed (no code path
--      deletes accounts or changes those; an erasure keeps the account row, fenced).
--    What the key's lock added, and these do not: an account deleted by hand in a transaction that
--    overlaps one queuing a job of it. No code path deletes accounts; the triggers refuse the delete
--    of an account whose jobs are committed.
--
-- Writes to `jobs` wait while the new index builds (reads go on). Additive for a running fleet
-- otherwise: the previous release writes jobs as this one does, and the triggers judge its rows alike.
-- tests/integration/test_refresh_writes.py.
DROP INDEX job_queue_refreshes;

CREATE INDEX jobs_batch_not_refresh ON jobs (batch_id) WHERE origin <> 2;
DROP INDEX jobs_batch;
ALTER INDEX jobs_batch_not_refresh RENAME TO jobs_batch;

CREATE FUNCTION jobs_check_accounts() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
  bad record;
BEGIN
  SELECT j.id, j.account_id, j.workspace_id INTO bad FROM new_jobs j
  WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = j.account_id AND a.workspace_id = j.workspace_id)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'insert on table "jobs" violates jobs_account_in_workspace: job % names account %, which is no account of workspace %',
        bad.id, bad.account_id, bad.workspace_id
      USING ERRCODE = 'foreign_key_violation', TABLE = 'jobs', CONSTRAINT = 'jobs_account_in_workspace';
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION jobs_refuse_account_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'update on table "jobs" violates jobs_account_in_workspace: job %''s account and workspace do not change', OLD.id
    USING ERRCODE = 'foreign_key_violation', TABLE = 'jobs', CONSTRAINT = 'jobs_account_in_workspace';
END $$;

CREATE FUNCTION accounts_keep_jobs_accounts() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
  named uuid;
BEGIN
  IF TG_OP = 'DELETE' THEN
    SELECT g.id INTO named FROM gone g WHERE EXISTS (SELECT FROM jobs j WHERE j.account_id = g.id) LIMIT 1;
  ELSIF EXISTS (SELECT FROM jobs j WHERE j.account_id = OLD.id) THEN
    named := OLD.id;
  END IF;
  IF named IS NOT NULL THEN
    RAISE EXCEPTION '% on table "accounts" violates jobs_account_in_workspace: jobs name account %', TG_OP, named
      USING ERRCODE = 'foreign_key_violation', TABLE = 'accounts', CONSTRAINT = 'jobs_account_in_workspace';
  END IF;
  RETURN CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW END;
END $$;

ALTER TABLE jobs DROP CONSTRAINT jobs_account_in_workspace;

CREATE TRIGGER jobs_account_in_workspace AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_check_accounts();
CREATE TRIGGER jobs_account_unchanged BEFORE UPDATE OF account_id, workspace_id ON jobs
    FOR EACH ROW WHEN (OLD.account_id <> NEW.account_id OR OLD.workspace_id <> NEW.workspace_id)
    EXECUTE FUNCTION jobs_refuse_account_change();
CREATE TRIGGER accounts_deleted_keep_jobs AFTER DELETE ON accounts
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_keep_jobs_accounts();
CREATE TRIGGER accounts_key_unchanged BEFORE UPDATE OF id, workspace_id ON accounts
    FOR EACH ROW WHEN (OLD.id <> NEW.id OR OLD.workspace_id <> NEW.workspace_id)
    EXECUTE FUNCTION accounts_keep_jobs_accounts();
