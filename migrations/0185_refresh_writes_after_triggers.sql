-- Issue 14 (the pipeline's PostgreSQL cost per job): 0184's two row triggers that refuse a change of a
-- job's account or of an account's key fire AFTER the update instead of BEFORE it.
--
-- A table with any BEFORE UPDATE row trigger has each row that an UPDATE changes locked first, before
-- the trigger's column list and WHEN are even looked at (PostgreSQL's ExecBRUpdateTriggers fetches the
-- row for the trigger with a tuple lock): a Heap/LOCK WAL record per row. With 0184's
-- `jobs_account_unchanged`, every claim and every completion wrote one more record per job (the
-- completion 2.30 -> 3.30 a job by bench/complete_wal.py; bench/NOTES.md, queue session 29). An AFTER
-- row trigger with the same column list and WHEN is queued only for a row that matches, and takes no
-- lock. It refuses the same updates (the statement fails, nothing of it stays).
-- tests/integration/test_refresh_writes.py::test_no_before_update_row_trigger_on_jobs.
DROP TRIGGER jobs_account_unchanged ON jobs;
CREATE TRIGGER jobs_account_unchanged AFTER UPDATE OF account_id, workspace_id ON jobs
    FOR EACH ROW WHEN (OLD.account_id <> NEW.account_id OR OLD.workspace_id <> NEW.workspace_id)
    EXECUTE FUNCTION jobs_refuse_account_change();
DROP TRIGGER accounts_key_unchanged ON accounts;
CREATE TRIGGER accounts_key_unchanged AFTER UPDATE OF id, workspace_id ON accounts
    FOR EACH ROW WHEN (OLD.id <> NEW.id OR OLD.workspace_id <> NEW.workspace_id)
    EXECUTE FUNCTION accounts_keep_jobs_accounts();
