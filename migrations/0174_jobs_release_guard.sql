-- Issue 14, after 0173: the release guard. A process of the release before 0173 reads and writes the
-- queue on `jobs` alone: beside the current release it would claim jobs from `jobs` that a current
-- worker claims from `job_queue` (the job runs twice: a direct deposit switch among them), and its
-- api would insert jobs with no `job_queue` row (a job no current worker ever claims). It cannot be
-- changed, so the database refuses it instead.
--
-- Every connection the current code opens sends `paylink.schema` = the newest migration it knows
-- (service/db.py: server_settings, for the pool and db.connect alike; 0174 and later). The triggers
-- below refuse, with SQLSTATE PL001 and a message that says what to do, an INSERT into `jobs`, and an
-- UPDATE that sets a job's status, lease or run_at, from a connection marked with less than the
-- schema floor, or not marked at all: the release before 0173, or an operator's psql session that
-- has not said which schema it knows (docs/operations.md, The release guard). Everything else on
-- `jobs` (reads, DELETE, an erasure's scrub of params) is left alone.
--
-- They are statement triggers: the WHEN clause (the session's setting against the floor) is
-- evaluated once per statement, not per row, and the PL/pgSQL function runs only to refuse. Row
-- triggers would cost every claim and completion per job (a BEFORE UPDATE row trigger also locks
-- each old row before its WHEN is evaluated; bench/NOTES.md has the figures), and would let an idle
-- worker of the old release poll an empty queue unnoticed; these refuse its first claim, rows or not,
-- before any row is touched.
--
-- The floor is a general mechanism: the oldest schema whose code is safe against this database. It
-- is 0173 here (the first code that writes `job_queue` with `jobs`); a later contract migration, one
-- that the code before it would misuse, raises it with CREATE OR REPLACE TRIGGER (the constant in
-- both WHEN clauses and the function's argument), and may guard another table with the same
-- `paylink_schema() < floor` condition. Idempotent (CREATE OR REPLACE), forward-only.

-- The schema generation this session's code knows (paylink.schema), 0 when it does not say.
CREATE OR REPLACE FUNCTION paylink_schema() RETURNS integer LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN current_setting('paylink.schema', true) ~ '^[0-9]{1,9}$'
              THEN current_setting('paylink.schema', true)::integer ELSE 0 END
$$;

-- Raised only: the WHEN clauses decide. TG_ARGV[0]: the floor.
CREATE OR REPLACE FUNCTION jobs_refuse_stale_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'paylink release guard: % on jobs refused: this connection (application_name "%") says paylink.schema = "%", and this database needs % or later. Is a process of an older paylink release still running? Stop it (docs/operations.md, Upgrading)',
      TG_OP, current_setting('application_name'), coalesce(current_setting('paylink.schema', true), ''),
      TG_ARGV[0]
    USING ERRCODE = 'PL001',
          HINT = 'An operator''s session that means to write jobs says which schema it knows first: SET paylink.schema = ''' || TG_ARGV[0] || ''' (or later).';
END $$;

CREATE OR REPLACE TRIGGER jobs_release_guard_insert BEFORE INSERT ON jobs
    FOR EACH STATEMENT WHEN (paylink_schema() < 173)
    EXECUTE FUNCTION jobs_refuse_stale_release('0173');
CREATE OR REPLACE TRIGGER jobs_release_guard_update
    BEFORE UPDATE OF status, locked_by, lease_expires_at, run_at ON jobs
    FOR EACH STATEMENT WHEN (paylink_schema() < 173)
    EXECUTE FUNCTION jobs_refuse_stale_release('0173');
