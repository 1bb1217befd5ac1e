-- Issue 14 (the pipeline's PostgreSQL CPU per job): a job's two foreign keys to its account and to its
-- workspace become one, to the account of that workspace.
--
-- Each job's INSERT ran two foreign-key checks, one on `accounts` and one on `workspaces`, each a
-- query that locks the row it finds (FOR KEY SHARE). A workspace's row is the same for all of its
-- jobs, so concurrent CreateJobs locked it together: each new locker made a new MultiXact of all of
-- them, about one WAL record a job (bench/NOTES.md, queue session 26). A job's workspace is its
-- account's (every writer takes both from the account row or checks them against it), so
-- (account_id, workspace_id) referencing accounts (id, workspace_id) says all the two keys said (the
-- account exists; its workspace exists, by accounts' own key) and more (they agree), with one check
-- on the account row, and none on the workspace's.
--
-- Writes to `jobs` and `accounts` wait while the constraint is checked against every job (reads go
-- on). Additive for a running fleet: the previous release writes jobs with their account's workspace
-- too, and runs the same statements.
CREATE UNIQUE INDEX accounts_id_workspace ON accounts (id, workspace_id);
ALTER TABLE jobs ADD CONSTRAINT jobs_account_in_workspace FOREIGN KEY (account_id, workspace_id)
    REFERENCES accounts (id, workspace_id) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_account_in_workspace;
ALTER TABLE jobs DROP CONSTRAINT jobs_workspace_id_fkey, DROP CONSTRAINT jobs_account_id_fkey;
