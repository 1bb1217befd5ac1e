-- Which platform login an account belongs to: sha256(platform_id NUL username). A bound (On Demand
-- Updates) session that has to ask for credentials again may only re-link the same login; other
-- credentials would attach someone else's payroll account to this account id.
ALTER TABLE accounts ADD COLUMN login_fingerprint bytea;
ALTER TABLE link_sessions ADD COLUMN login_fingerprint bytea;
