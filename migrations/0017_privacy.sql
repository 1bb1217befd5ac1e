-- Privacy (issue 17): the audit trail of who read whose personal data, and end-user erasure.
-- Numbered after its issue so that migrations written in parallel do not collide.
-- Personal data itself (job_results.data, paystubs.data) is sealed by the application (see
-- service/pii.py and docs/privacy.md); no column changes for that.

-- One row per read or export of personal data and per erasure request: who (the workspace, the
-- caller's `x-caller` name and the API secret's key id), what (action, resource), whose (account,
-- end user), and when. Append-only: see the trigger below.
CREATE TABLE audit_records (
    id            uuid PRIMARY KEY,               -- also the event_id of its audit.recorded event
    workspace_id  uuid NOT NULL,
    caller        text NOT NULL,                  -- x-caller metadata, else "key:<key id>"
    key_id        text NOT NULL DEFAULT '',       -- the API secret's public key id ('' from the CLI)
    action        smallint NOT NULL,              -- paylink.v1.AuditAction
    resource      smallint NOT NULL,              -- paylink.v1.AuditResource
    account_id    uuid,                           -- NULL for an erasure of an end user
    end_user_id   text NOT NULL DEFAULT '',
    erasure_id    uuid,                           -- for erasures
    method        text NOT NULL DEFAULT '',       -- the RPC (or CLI command) that read or erased
    request_id    text NOT NULL DEFAULT '',       -- x-request-id, or the generated one
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_records_list ON audit_records (workspace_id, recorded_at DESC, id DESC);
CREATE INDEX audit_records_account ON audit_records (account_id, recorded_at DESC, id DESC);
CREATE INDEX audit_records_end_user ON audit_records (workspace_id, end_user_id, recorded_at DESC, id DESC);
-- Retention deletes by age: a BRIN index costs next to nothing on insert for an append-ordered column.
CREATE INDEX audit_records_age ON audit_records USING brin (recorded_at);

-- Append-only, enforced by the database: UPDATE and TRUNCATE are always refused; DELETE only by the
-- retention prune, which announces its cutoff with `SET LOCAL paylink.audit_prune_before = '<ts>'`
-- and may only remove rows recorded before it, and only rows at least 30 days old.
-- (A table owner can still disable a trigger: a deployment that wants more runs paylink as a role
-- that does not own the table and grants it only SELECT, INSERT and DELETE on it.)
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff text := current_setting('paylink.audit_prune_before', true);
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> ''
       AND OLD.recorded_at < cutoff::timestamptz
       AND OLD.recorded_at < now() - interval '30 days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_records is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the retention prune deletes audit records, and only old ones';
END $$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

-- Audit records not yet exported to Kafka (paylink.audit.recorded): written with the record,
-- deleted by the exporter once the broker acknowledged them. Keeps audit_records free of updates.
CREATE TABLE audit_unexported (
    record_id  uuid PRIMARY KEY
);

-- One erasure of one end user of a workspace: the persisted plan that drives it step by step, so
-- a crash halfway is resumed (by the next call, or by the background sweep) and never leaves a
-- half-erased person without a record of it.
CREATE TABLE erasures (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id),
    end_user_id   text NOT NULL,
    state         text NOT NULL CHECK (state IN ('in_progress', 'waiting_for_jobs', 'completed')),
    step          smallint NOT NULL DEFAULT 0,    -- the next step to run (service/erasure.py STEPS)
    account_ids   uuid[] NOT NULL DEFAULT '{}',   -- the accounts it erases, fixed by its first step
    erased        jsonb NOT NULL DEFAULT '{}',    -- how many rows each step erased (the proof)
    caller        text NOT NULL,
    request_id    text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
-- At most one unfinished erasure per end user.
CREATE UNIQUE INDEX erasures_open ON erasures (workspace_id, end_user_id) WHERE state <> 'completed';
CREATE INDEX erasures_end_user ON erasures (workspace_id, end_user_id, created_at DESC);
CREATE INDEX erasures_unfinished ON erasures (updated_at) WHERE state <> 'completed';

-- The erasure that fenced the account (set by its first step), and when it finished.
ALTER TABLE accounts ADD COLUMN erasure_id uuid;
ALTER TABLE accounts ADD COLUMN erased_at timestamptz;

-- The fence, enforced by the database: once an erasure has fenced an account, no personal data or
-- credential is written for it again (a job that was already talking to the platform stores
-- nothing), and nothing connects it again (a bound Link session cannot re-link it).
CREATE FUNCTION skip_fenced_account_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id AND erasure_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER job_results_fenced BEFORE INSERT OR UPDATE ON job_results
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();
CREATE TRIGGER paystubs_fenced BEFORE INSERT OR UPDATE ON paystubs
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();
CREATE TRIGGER account_credentials_fenced BEFORE INSERT OR UPDATE ON account_credentials
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();

CREATE FUNCTION keep_fenced_account_disconnected() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.erasure_id IS NOT NULL THEN
        NEW.connected := false;
        NEW.login_fingerprint := NULL;
        NEW.erasure_id := OLD.erasure_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_fenced BEFORE UPDATE ON accounts
    FOR EACH ROW WHEN (OLD.erasure_id IS NOT NULL) EXECUTE FUNCTION keep_fenced_account_disconnected();
