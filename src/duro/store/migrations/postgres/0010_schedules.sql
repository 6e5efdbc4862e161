-- Schedules: recurring workflow starts. One row per schedule; firing state lives here too.
CREATE TABLE schedules (
    namespace        TEXT NOT NULL,
    schedule_id      TEXT NOT NULL,
    spec             TEXT NOT NULL,           -- engine.schedules.ScheduleSpec as JSON
    action           TEXT NOT NULL,           -- engine.schedules.ScheduleAction as JSON
    overlap          TEXT NOT NULL,
    catchup_window   DOUBLE PRECISION NOT NULL,           -- missed times older than this are skipped
    paused           BIGINT NOT NULL DEFAULT 0,
    note             TEXT,
    next_nominal     DOUBLE PRECISION,                    -- NULL once the schedule has ended
    next_fire_at     DOUBLE PRECISION,                    -- next_nominal plus its jitter
    buffered_nominal DOUBLE PRECISION,                    -- buffer_one: a time waiting for the open run
    last_workflow_id TEXT,
    last_nominal     DOUBLE PRECISION,
    fired            BIGINT NOT NULL DEFAULT 0,
    skipped          BIGINT NOT NULL DEFAULT 0,
    created          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, schedule_id)
);
-- The timer loop: schedules due now, and buffered ones waiting for their open run to close.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
CREATE INDEX schedules_buffered ON schedules (namespace) WHERE buffered_nominal IS NOT NULL;
