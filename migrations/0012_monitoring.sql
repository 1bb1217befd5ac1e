-- Monitoring (issue 12): scheduled refreshes per account and data job type, per-workspace settings,
-- per-platform daily budgets, the account's monitoring switch and link token tags.
-- Numbered after its issue so that migrations written in parallel do not collide.

-- The account's own monitoring switch, the run of failed refreshes that the status machine counts,
-- and the link token's tags (also copied onto the account's jobs and events).
ALTER TABLE accounts ADD COLUMN monitoring_enabled boolean NOT NULL DEFAULT true;
ALTER TABLE accounts ADD COLUMN refresh_failures integer NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN tags jsonb NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN tags jsonb NOT NULL DEFAULT '{}';
-- A refresh queued by the schedule (not by CreateJob): publishes its product event only on change.
ALTER TABLE jobs ADD COLUMN scheduled boolean NOT NULL DEFAULT false;

-- One row per account and data job type the platform supports. `active` is derived (see
-- service/monitoring/schedules.py): connected, monitoring on for the account and its workspace,
-- and a status in which paylink can reach the account without the user.
CREATE TABLE refresh_schedules (
    account_id       uuid NOT NULL REFERENCES accounts (id),
    name             smallint NOT NULL,
    workspace_id     uuid NOT NULL,
    platform_id      text NOT NULL,
    cadence          interval NOT NULL,
    next_refresh_at  timestamptz NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    last_job_id      uuid,                         -- the refresh the schedule queued last
    PRIMARY KEY (account_id, name)
);
-- The due query reads only what is due: active rows in next_refresh_at order.
CREATE INDEX refresh_schedules_due ON refresh_schedules (next_refresh_at) WHERE active;
CREATE INDEX refresh_schedules_workspace ON refresh_schedules (workspace_id);

-- Per-workspace monitoring switch and cadence overrides (job name -> seconds). No row: defaults.
CREATE TABLE monitoring_settings (
    workspace_id  uuid PRIMARY KEY REFERENCES workspaces (id),
    enabled       boolean NOT NULL DEFAULT true,
    cadences      jsonb NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Scheduled refreshes started per platform and UTC day, against PAYLINK_MONITORING_DAILY_BUDGET.
-- The row is also the lock that serializes concurrent schedulers' accounting for one platform.
CREATE TABLE platform_refresh_budget (
    platform_id  text NOT NULL,
    day          date NOT NULL,
    used         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (platform_id, day)
);

-- Refreshes in flight per account and job type (the one-in-flight rule) and per platform (the
-- scheduler's concurrency bound): small, since only unfinished refresh jobs are in it.
CREATE INDEX jobs_refresh_in_flight ON jobs (platform_id, account_id, name)
    WHERE origin = 2 AND status IN ('queued', 'running', 'pending');

-- Accounts that need their user, or that are disconnected, found without a scan.
CREATE INDEX accounts_monitoring ON accounts (workspace_id, monitoring_status, created_at DESC, id DESC);
