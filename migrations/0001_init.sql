-- paylink schema v1: workspaces, secrets, link tokens, sessions, accounts, credentials, jobs,
-- job results, idempotency records and the event outbox.
-- Secrets are never stored in clear: API secrets and link tokens as SHA-256 hashes, platform
-- grants, pending MFA state and full deposit account numbers sealed with the vault (AES-256-GCM).

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    sandbox     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_secrets (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id),
    key_id        text NOT NULL UNIQUE,           -- public part of the secret, used for lookup
    secret_hash   bytea NOT NULL,                 -- sha256 of the whole secret
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_secrets_workspace ON api_secrets (workspace_id);

CREATE TABLE accounts (
    id                 uuid PRIMARY KEY,
    workspace_id       uuid NOT NULL REFERENCES workspaces (id),
    end_user_id        text NOT NULL,
    platform_id        text NOT NULL,
    link_token_id      uuid NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    connected          boolean NOT NULL DEFAULT true,
    monitoring_status  text NOT NULL DEFAULT 'active',
    event_sequence     bigint NOT NULL DEFAULT 0   -- last per-account event sequence handed out
);
CREATE INDEX accounts_list ON accounts (workspace_id, created_at DESC, id DESC);
CREATE INDEX accounts_end_user ON accounts (workspace_id, end_user_id, created_at DESC, id DESC);

-- What re-access needs (driver-private grant: credentials and/or platform session), sealed.
CREATE TABLE account_credentials (
    account_id  uuid PRIMARY KEY REFERENCES accounts (id),
    key_id      text NOT NULL,
    sealed      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE link_tokens (
    id                 uuid PRIMARY KEY,
    workspace_id       uuid NOT NULL REFERENCES workspaces (id),
    token_hash         bytea NOT NULL UNIQUE,
    api_version        text NOT NULL DEFAULT '',
    org_name           text NOT NULL,
    required_jobs      smallint[] NOT NULL,
    end_user_id        text NOT NULL,
    bound_account_id   uuid REFERENCES accounts (id),
    platform_id        text NOT NULL DEFAULT '',
    employer_id        text NOT NULL DEFAULT '',
    allocation         bytea,                     -- paylink.v1.Allocation, account numbers masked
    allocation_sealed  bytea,                     -- the same with full account numbers, sealed
    options            bytea NOT NULL,            -- paylink.v1.LinkToken with display options
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    used_at            timestamptz
);
CREATE INDEX link_tokens_workspace ON link_tokens (workspace_id, created_at DESC);

CREATE TABLE link_sessions (
    id                 uuid PRIMARY KEY,
    workspace_id       uuid NOT NULL REFERENCES workspaces (id),
    link_token_id      uuid NOT NULL UNIQUE REFERENCES link_tokens (id),  -- single use
    state              text NOT NULL,
    platform_id        text NOT NULL DEFAULT '',
    account_id         uuid REFERENCES accounts (id),
    on_demand          boolean NOT NULL DEFAULT false,
    failed_attempts    integer NOT NULL DEFAULT 0,
    last_error         smallint NOT NULL DEFAULT 0,
    failure_reason     smallint NOT NULL DEFAULT 0,
    mfa_type           text NOT NULL DEFAULT '',
    mfa_prompt         text NOT NULL DEFAULT '',
    mfa_state_sealed   bytea,                     -- driver state while waiting for MFA, sealed
    mfa_reaccess       boolean NOT NULL DEFAULT false,
    chosen_allocation_sealed bytea,               -- ChooseAllocation result, sealed
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz
);
CREATE INDEX link_sessions_account ON link_sessions (account_id);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    account_id       uuid NOT NULL REFERENCES accounts (id),
    link_token_id    uuid REFERENCES link_tokens (id),
    link_session_id  uuid REFERENCES link_sessions (id),
    batch_id         uuid NOT NULL,               -- session id, or the refresh's own id
    name             smallint NOT NULL,
    origin           smallint NOT NULL,
    platform_id      text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'pending', 'success', 'error')),
    outcome          smallint NOT NULL DEFAULT 0,
    error_type       smallint NOT NULL DEFAULT 0,
    error_code       smallint NOT NULL DEFAULT 0,
    error_message    text NOT NULL DEFAULT '',
    params           bytea NOT NULL,              -- paylink.v1.JobParams, masked
    params_sealed    bytea,                       -- full switch target, sealed
    attempts         integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    lease_expires_at timestamptz,
    pending_since    timestamptz,
    api_version      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
-- The claim query: runnable jobs in run_at order.
CREATE INDEX jobs_runnable ON jobs (run_at) WHERE status IN ('queued', 'pending');
-- Rescue of jobs whose worker died.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_list ON jobs (workspace_id, created_at DESC, id DESC);
CREATE INDEX jobs_account ON jobs (account_id, created_at DESC, id DESC);
CREATE INDEX jobs_link_token ON jobs (link_token_id, created_at DESC, id DESC);
CREATE INDEX jobs_batch ON jobs (batch_id);

-- Latest data per account and data type (identity, employment, income, allocations, paystubs).
CREATE TABLE job_results (
    account_id    uuid NOT NULL REFERENCES accounts (id),
    name          smallint NOT NULL,
    data          bytea,                          -- serialized data message (not for paystubs)
    content_hash  bytea NOT NULL,
    refreshed_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE paystubs (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts (id),
    external_id  text NOT NULL,
    pay_date     date NOT NULL,
    data         bytea NOT NULL,                  -- paylink.v1.Paystub
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, external_id)
);
CREATE INDEX paystubs_list ON paystubs (account_id, pay_date DESC, id DESC);

CREATE TABLE idempotency_keys (
    workspace_id  uuid NOT NULL,
    method        text NOT NULL,
    request_id    text NOT NULL,
    request_hash  bytea NOT NULL,
    response      bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, method, request_id)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    event_type    text NOT NULL,
    workspace_id  uuid NOT NULL,
    account_id    uuid NOT NULL,
    sequence      bigint NOT NULL,
    payload       bytea NOT NULL,                 -- serialized paylink.v1.Event
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    UNIQUE (account_id, sequence)
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_created ON outbox (created_at);
