-- An event marked published (or unpublished) by hand keeps its `outbox_pending` row right, whatever
-- schema the session says it knows.
--
-- Migration 0175's trigger kept `outbox_pending` in step only for sessions that say a schema before
-- 0175: this release's code writes the pending rows itself. An operator's session that says
-- `paylink.schema` 0175 or later (as the release guard asks of a session that writes jobs by hand:
-- docs/operations.md, The release guard) and ran `UPDATE outbox SET published_at = now() …` left the
-- event's pending row in place, and the relay sent the event again; one that set `published_at`
-- back to NULL (to send an event again) gave it no pending row, and nothing was sent.
--
-- The change of `published_at` between NULL and not NULL is now followed for every session that does
-- not say it keeps the pending rows itself: paylink's own connections say so from this release on
-- (`paylink.keeps_outbox_pending`, sent at connection start by service/db.py: set at all, whatever
-- its value); the previous release's do not (its relay's mark is followed as before), nor does an
-- operator's session. The WHEN tests that one setting first (a NULL test, no comparison), so for
-- the relay's mark it costs one setting read per event, less than 0175's WHEN did
-- (bench/relay_mark_trigger.py; bench/NOTES.md, refactor (session 24)).
-- The INSERT side is unchanged: a session that inserts outbox rows by hand and says 0175 or later
-- writes their pending rows itself (docs/operations.md, Upgrading).
CREATE OR REPLACE TRIGGER outbox_pending_follow_previous_release
    AFTER INSERT ON outbox
    FOR EACH ROW WHEN (lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000175')
    EXECUTE FUNCTION outbox_pending_follow_previous_release();

CREATE TRIGGER outbox_pending_follow_mark
    AFTER UPDATE OF published_at ON outbox
    FOR EACH ROW WHEN (
        current_setting('paylink.keeps_outbox_pending', true) IS NULL
        AND (OLD.published_at IS NULL) <> (NEW.published_at IS NULL))
    EXECUTE FUNCTION outbox_pending_follow_previous_release();
