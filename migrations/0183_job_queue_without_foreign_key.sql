-- Issue 14 (the pipeline's PostgreSQL cost per job): `job_queue` no longer has a foreign key to `jobs`.
--
-- The key (0173: job_queue.id REFERENCES jobs ON DELETE CASCADE) was checked on every queue row
-- inserted: a query on `jobs` that locks the row it finds (FOR KEY SHARE). That row is the job the
-- same statement has just inserted, so each job queued cost an RI query, a row lock, a dirtied page
-- and a WAL record, and proved nothing: service/queue.py is the only writer of both tables and writes
-- a job's queue row in the statement that inserts or requeues its job (enqueue, CreateJob's
-- refreshes, scheduled refreshes, an operator's retry), from that job's own values.
--
-- What the key's ON DELETE CASCADE did, two statement triggers keep doing: no code path deletes jobs
-- (an erasure and a workspace deletion scrub their parameters and keep them; the janitor prunes the
-- outbox and idempotency keys), but an operator's DELETE or TRUNCATE of jobs takes their queue rows
-- with them, so no queue row is left that a worker would claim for a job that is gone. A statement
-- trigger costs the inserts and updates of the pipeline nothing.
-- tests/integration/test_job_queue.py::test_a_job_is_queued_with_its_row_and_without_locking_it and
-- ::test_deleting_jobs_deletes_their_queue_rows prove both.
--
-- Additive for a running fleet: the previous release writes both rows as this one does.
ALTER TABLE job_queue DROP CONSTRAINT job_queue_id_fkey;

CREATE FUNCTION job_queue_drop_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM job_queue;
  ELSE
    DELETE FROM job_queue WHERE id IN (SELECT id FROM deleted_jobs);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER jobs_deleted_leave_the_queue AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_queue_drop_deleted_jobs();
CREATE TRIGGER jobs_truncated_leave_the_queue AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_queue_drop_deleted_jobs();
