-- Issue 14 (the pipeline's WAL per job): the relay's working set moves to a narrow table of its own,
-- so that marking an event published changes no indexed column of `outbox` and is a HOT update there.
--
-- `outbox_pending` holds one row per event not published yet: its outbox id and creation time (what
-- the backlog gauges read, without a join). service/outbox.py writes it in the same statement as the
-- event (so in the same transaction as the change the event describes); the relay reads the first
-- pending ids in order, then their outbox rows, and marks a batch published by deleting its pending
-- rows and setting `published_at` in one statement. `outbox` stays
-- every event's truth (`published_at` keeps saying when an event reached Kafka: retention and
-- `events replay` read it). The partial index `outbox_unpublished` (0001), whose predicate named
-- `published_at` and so made every mark a full new row version plus four index entries, is dropped.
--
-- Additive for a running fleet: a process of the release before this one (paylink.schema 0174 or
-- less, or a connection that does not say its schema: an operator's psql) neither reads nor writes
-- `outbox_pending`. The trigger below keeps the pending rows in step with what such a connection
-- does to `outbox`: an event it inserts unpublished gets its pending row; a row it marks published
-- loses it (and one it sets back to unpublished gets it again). Its WHEN is evaluated per row but
-- is false for this release's connections, which write the pending rows themselves; ON CONFLICT
-- keeps a connection that does both (a test calling this code on a bare connection) correct. The
-- previous release's relay still publishes correctly beside this one (one leader at a time: the
-- same advisory lock), without its index: its select and its sampler's count read the outbox whole,
-- so roll the relays and workers promptly (docs/operations.md, Upgrading).
--
-- Nothing is lost at the switch: the outbox is locked against writers (an event being written
-- commits first, or waits for this migration) while the unpublished events are copied over.
LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE;

CREATE TABLE outbox_pending (
    id         bigint PRIMARY KEY,       -- outbox.id of an event not yet published
    created_at timestamptz NOT NULL      -- its outbox.created_at
);

INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM outbox WHERE published_at IS NULL;

CREATE OR REPLACE FUNCTION outbox_pending_follow_previous_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.published_at IS NULL THEN
    INSERT INTO outbox_pending (id, created_at) VALUES (NEW.id, NEW.created_at) ON CONFLICT DO NOTHING;
  ELSE
    DELETE FROM outbox_pending WHERE id = NEW.id;
  END IF;
  RETURN NULL;
END $$;

-- The WHEN is paylink_schema() < 175 spelled without the function: a SQL function call per row (and
-- its regular expression) costs this release's inserts and marks a few microseconds each; zero-padded
-- to nine digits, the setting compares as its number (paylink sends numbers only; one that is no
-- number, which paylink_schema() reads as 0, is left alone here).
CREATE OR REPLACE TRIGGER outbox_pending_follow_previous_release
    AFTER INSERT OR UPDATE OF published_at ON outbox
    FOR EACH ROW WHEN (lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000175')
    EXECUTE FUNCTION outbox_pending_follow_previous_release();

DROP INDEX outbox_unpublished;
-- Room on each page for an event's published version next to it (the mark): HOT updates. An event
-- is updated once, usually in the same mark as its page's other rows, so the page keeps half free.
ALTER TABLE outbox SET (fillfactor = 50);
