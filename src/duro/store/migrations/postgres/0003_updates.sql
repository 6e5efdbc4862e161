-- Updates ride on the query requests table: a request is validated by a worker like a query,
-- then (if accepted) becomes a history event, and its row carries the handler's result back.

ALTER TABLE queries ADD COLUMN kind TEXT NOT NULL DEFAULT 'query';  -- 'query' or 'update'
ALTER TABLE queries ADD COLUMN update_id TEXT;
-- Idempotent update requests, and finding the request when the handler's result is recorded.
CREATE UNIQUE INDEX queries_update_id ON queries (run_id, update_id) WHERE update_id IS NOT NULL;
