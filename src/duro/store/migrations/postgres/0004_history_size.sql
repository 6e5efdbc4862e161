-- Bytes of history (event attributes as stored JSON), kept up to date by every append, so that
-- workflow.info().history_size and "continue-as-new suggested" cost nothing to compute.
ALTER TABLE executions ADD COLUMN history_size BIGINT NOT NULL DEFAULT 0;
