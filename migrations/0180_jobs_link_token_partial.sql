-- Issue 14 (the pipeline's PostgreSQL CPU per job): `jobs_link_token` holds only the jobs that have a
-- link token.
--
-- ListJobs filters on `link_token_id = $n` (service/jobs.py); nothing reads jobs by a NULL link token.
-- But 0001's index held every job, so each refresh (CreateJob, the scheduler: no link token) wrote
-- an entry for its NULL: one of the five index entries a job's INSERT writes, and its WAL record.
-- `link_token_id = $n` implies `link_token_id IS NOT NULL` (the operator is strict), so the partial
-- index serves the same statements, of this release and of the previous one
-- (tests/integration/test_jobs_link_token_index.py).
--
-- Built in the migration's transaction (the runner applies each file in one): writes to `jobs` wait
-- while it builds (reads go on), for as long as reading the jobs with a link token takes; the old index
-- goes after the new one is built, under a lock held only to the commit. Additive for a running
-- fleet: the previous release's statements are unchanged and keep their index.
CREATE INDEX jobs_link_token_set ON jobs (link_token_id, created_at DESC, id DESC)
    WHERE link_token_id IS NOT NULL;
DROP INDEX jobs_link_token;
ALTER INDEX jobs_link_token_set RENAME TO jobs_link_token;
