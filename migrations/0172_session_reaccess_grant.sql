-- A bound On Demand Updates session that re-accesses the platform with the account's stored grant
-- stores the grant it gets back only if the stored one is still the one it started with
-- (service/grants.py: store_unless_changed). It keeps here, through a possible MFA round, the keyed
-- digest (Vault.digest, HMAC-SHA256 under a key derived from the vault key) of the grant it loaded:
-- never the grant, nor anything that tests a guess of it without the vault keys.
ALTER TABLE link_sessions ADD COLUMN reaccess_grant_digest bytea;
