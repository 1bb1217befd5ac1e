-- Trace context and request ids carried from the call that started the work to its jobs and events
-- (issue #16; service/tracing.py). A W3C traceparent ('' when there was none) and an x-request-id.
ALTER TABLE link_tokens
  ADD COLUMN traceparent text NOT NULL DEFAULT '',
  ADD COLUMN request_id text NOT NULL DEFAULT '';
ALTER TABLE jobs
  ADD COLUMN traceparent text NOT NULL DEFAULT '',
  ADD COLUMN request_id text NOT NULL DEFAULT '';
ALTER TABLE outbox
  ADD COLUMN traceparent text NOT NULL DEFAULT '',
  ADD COLUMN request_id text NOT NULL DEFAULT '';
-- Deleted workspaces (python -m service workspace delete): kept for what retention needs, refused
-- by authentication.
ALTER TABLE workspaces ADD COLUMN deleted_at timestamptz;
