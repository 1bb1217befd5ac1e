-- Link sessions that hold up against slow platforms (issue 10).
-- A login runs with no connection held: the session is AUTHENTICATING (committed first) while a
-- process holds its login lease; a lease that runs out means that process died mid-login.
ALTER TABLE link_sessions ADD COLUMN login_kind text;                -- credentials | mfa | reaccess
ALTER TABLE link_sessions ADD COLUMN login_lease_expires_at timestamptz;
ALTER TABLE link_sessions ADD COLUMN login_owner text;               -- process that runs the login
-- Sessions expire (PAYLINK_LINK_SESSION_TTL_SECONDS); existing ones get the default from now.
ALTER TABLE link_sessions ADD COLUMN expires_at timestamptz NOT NULL DEFAULT now() + interval '30 minutes';
-- A token starts one live session; a session that EXPIRED (failure_reason 5) gives its token back.
ALTER TABLE link_sessions DROP CONSTRAINT link_sessions_link_token_id_key;
CREATE UNIQUE INDEX link_sessions_token ON link_sessions (link_token_id) WHERE failure_reason <> 5;
CREATE INDEX link_sessions_token_all ON link_sessions (link_token_id, created_at DESC);
CREATE INDEX link_sessions_login_lease ON link_sessions (login_lease_expires_at) WHERE state = 'AUTHENTICATING';
CREATE INDEX link_sessions_expiring ON link_sessions (expires_at)
  WHERE state IN ('CREDENTIALS_REQUIRED', 'MFA_REQUIRED', 'CONNECTED');
