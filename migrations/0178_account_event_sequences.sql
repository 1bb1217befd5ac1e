-- Issue 14 (one owner per table; the pipeline's cost per event): the per-account event sequence moves
-- from `accounts.event_sequence` to a narrow table of its own, written only by service/outbox.py.
--
-- `account_event_sequences` holds one row per account: the last event sequence handed out for it.
-- The outbox reserves a transaction's sequences by updating that row (which it then holds locked
-- until COMMIT, so an account's sequences and outbox ids follow commit order, as the account row's
-- lock did); a batch of job outcomes reads and locks it together with the account row
-- (service/queue.py, lock_for_outcomes). The row is narrow, has no index but its key and leaves half
-- of each page free: the bump is a HOT update of a ~40-byte row, not a new version of the account's
-- wide row, and `accounts` is no longer written by every event.
--
-- Every account has its row from the statement that creates it on (the INSERT trigger below, for
-- any session, this release's or an older one's), so readers join it and never find it missing;
-- the rows of the accounts that exist are copied here with their sequences.
--
-- Additive for a running fleet ("contracts evolve by adding"): `accounts.event_sequence` stays, and
-- the release before this one (paylink.schema 0177 or less, or a session that says no schema: an
-- operator's psql) still reads and writes it. The triggers below keep the two in step for such a
-- session: its write of `accounts.event_sequence` is carried over to this table, under this table's
-- row lock, when the value it started from is this table's (nothing was handed out since by this
-- release). When this release has handed out sequences for that account since (this release never
-- writes `accounts.event_sequence`), the older session's sequences would repeat numbers already
-- handed out: its write of the sequence, or of an event of that account (the previous release's
-- batch of outcomes writes both in one statement, in no fixed order), is refused with the release
-- guard's SQLSTATE PL001, so its transaction (its change and its events) rolls back whole. The release before this
-- one treats PL001 as the guard's refusal: its api answers UNAVAILABLE `RELEASE_REFUSED` (the
-- caller retries, on a process of this release), its completer keeps the outcome and backs off
-- (docs/operations.md, The release guard). So no sequence is ever handed out twice or skipped, and
-- the older release keeps working for every account this release has not yet written events for:
-- roll its processes promptly (docs/operations.md, Upgrading).
--
-- Nothing is lost at the switch: writers of `accounts` (an event being written, an account being
-- created) commit first, or wait for this migration, while the sequences are copied over; reads,
-- and row locks taken by SELECT ... FOR UPDATE, go on (such a transaction's later write sees the
-- copied value, so it is in step).
LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE account_event_sequences (
    account_id uuid PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    sequence   bigint NOT NULL   -- the last event sequence handed out for the account (0: none yet)
) WITH (fillfactor = 50);

INSERT INTO account_event_sequences (account_id, sequence) SELECT id, event_sequence FROM accounts;

-- Every new account gets its row in the statement that inserts it (one INSERT per statement).
CREATE FUNCTION account_event_sequences_create() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO account_event_sequences (account_id, sequence) SELECT id, event_sequence FROM created;
  RETURN NULL;
END $$;

CREATE TRIGGER account_event_sequences_create
    AFTER INSERT ON accounts REFERENCING NEW TABLE AS created
    FOR EACH STATEMENT EXECUTE FUNCTION account_event_sequences_create();

-- An older session's write of accounts.event_sequence, carried over (or refused, see above).
CREATE FUNCTION account_event_sequences_follow_previous_release() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  handed_out bigint;
BEGIN
  SELECT sequence INTO handed_out FROM account_event_sequences WHERE account_id = NEW.id FOR UPDATE;
  IF handed_out IS DISTINCT FROM OLD.event_sequence THEN
    RAISE EXCEPTION 'paylink release guard: the events of account % refused: a newer release has written its events since (sequence % where this connection read %); this connection (application_name "%") says paylink.schema = "%", and the event sequences are account_event_sequences''s from 0178. Is a process of an older paylink release still running? Stop it (docs/operations.md, Upgrading)',
        NEW.id, handed_out, OLD.event_sequence, current_setting('application_name'),
        coalesce(current_setting('paylink.schema', true), '')
      USING ERRCODE = 'PL001',
            HINT = 'An operator''s session sets an account''s event sequence in account_event_sequences (docs/operations.md, Backups and restore).';
  END IF;
  UPDATE account_event_sequences SET sequence = NEW.event_sequence WHERE account_id = NEW.id;
  RETURN NEW;
END $$;

-- The WHEN is "schema before 0178" spelled as 0175's (a zero-padded text comparison, no function
-- call), and only for a change of the value; this release never updates the column.
CREATE TRIGGER account_event_sequences_follow_previous_release
    BEFORE UPDATE OF event_sequence ON accounts
    FOR EACH ROW WHEN (
        lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000178'
        AND NEW.event_sequence IS DISTINCT FROM OLD.event_sequence)
    EXECUTE FUNCTION account_event_sequences_follow_previous_release();

-- An older session's event of an account: refused (PL001) while the account's two sequences differ,
-- as they do once this release has handed out sequences for it that the older session's
-- `accounts.event_sequence` does not know. Either this transaction already carried its own write
-- over (the two are then equal again), or it has not written the sequence yet (the previous release's
-- batch of outcomes, whose INSERT may run before its UPDATE): then they are equal exactly when the
-- sequences it computed are the next ones. The sequence row is locked first, so this release cannot
-- hand one out in between. An event with no account (a Link session's, keyed by the session) has
-- no sequence row and is left alone.
CREATE FUNCTION outbox_sequence_follow_previous_release() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  handed_out bigint;
  known bigint;
BEGIN
  SELECT sequence INTO handed_out FROM account_event_sequences WHERE account_id = NEW.account_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NEW;
  END IF;
  SELECT event_sequence INTO known FROM accounts WHERE id = NEW.account_id;
  IF known IS DISTINCT FROM handed_out THEN
    RAISE EXCEPTION 'paylink release guard: the events of account % refused: a newer release has written its events since (sequence % where this connection read %); this connection (application_name "%") says paylink.schema = "%", and the event sequences are account_event_sequences''s from 0178. Is a process of an older paylink release still running? Stop it (docs/operations.md, Upgrading)',
        NEW.account_id, handed_out, known, current_setting('application_name'),
        coalesce(current_setting('paylink.schema', true), '')
      USING ERRCODE = 'PL001',
            HINT = 'An operator''s session that writes events by hand says which schema it knows first: SET paylink.schema = ''0178'' (or later), and takes the sequences from account_event_sequences.';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER outbox_sequence_follow_previous_release
    BEFORE INSERT ON outbox
    FOR EACH ROW WHEN (lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000178')
    EXECUTE FUNCTION outbox_sequence_follow_previous_release();
