-- Flow control: concurrency and rate limits enforced across all workers, priorities, and
-- per-key concurrency of workflows.
CREATE TABLE flow_limits (
    namespace       TEXT NOT NULL,
    scope           TEXT NOT NULL,   -- 'activity_type', 'task_queue' or 'workflow_key'
    name            TEXT NOT NULL,   -- the activity type, task queue or workflow type
    max_concurrent  BIGINT,         -- NULL: no concurrency limit
    rate            DOUBLE PRECISION,            -- starts per second; NULL: no rate limit
    burst           DOUBLE PRECISION,            -- token bucket size (default: max(1, rate))
    tokens          DOUBLE PRECISION,
    refilled_at     DOUBLE PRECISION,
    PRIMARY KEY (namespace, scope, name)
);
ALTER TABLE tasks ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
-- Polls take higher priorities first, then the oldest.
DROP INDEX tasks_poll;
CREATE INDEX tasks_poll ON tasks (kind, namespace, task_queue, priority DESC, visible_at)
    WHERE lease_id IS NULL;
-- Counting leased attempts of an activity type (its concurrency limit).
CREATE INDEX tasks_leased_by_type ON tasks (namespace, activity_type) WHERE lease_id IS NOT NULL;
ALTER TABLE executions ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN concurrency_key TEXT;
ALTER TABLE executions ADD COLUMN admitted BIGINT NOT NULL DEFAULT 1;
-- Runs holding (or waiting for) a slot of their key.
CREATE INDEX executions_by_key ON executions (namespace, workflow_type, concurrency_key, admitted)
    WHERE concurrency_key IS NOT NULL AND status = 'Running';
