-- Per-namespace settings. A namespace without a row uses the defaults (30 days' retention).
CREATE TABLE namespaces (
    namespace          TEXT PRIMARY KEY,
    retention_seconds  DOUBLE PRECISION NOT NULL,
    archive_dir        TEXT,           -- export closed runs here (JSONL) before deleting them
    updated_at         DOUBLE PRECISION NOT NULL
);
-- Retention sweep: the oldest closed runs of a namespace.
CREATE INDEX executions_by_close ON executions (namespace, close_time) WHERE close_time IS NOT NULL;
