-- duro schema, version 1. Times are seconds since the epoch (store clock), JSON is text.

CREATE TABLE executions (
    run_id          TEXT PRIMARY KEY,
    namespace       TEXT NOT NULL,
    workflow_id     TEXT NOT NULL,
    workflow_type   TEXT NOT NULL,
    task_queue      TEXT NOT NULL,
    status          TEXT NOT NULL,
    is_current      INTEGER NOT NULL DEFAULT 1,
    start_time      REAL NOT NULL,
    close_time      REAL,
    next_event_id   INTEGER NOT NULL,     -- optimistic lock: every change checks and bumps it
    wt_state        INTEGER NOT NULL,     -- 0 idle, 1 scheduled, 2 started (engine.model)
    wt_attempt      INTEGER NOT NULL DEFAULT 1,
    wt_failure      TEXT,
    sticky_worker   TEXT,                 -- worker that last completed a workflow task
    buffered        INTEGER NOT NULL DEFAULT 0,  -- 1 while buffered_events holds rows for it
    args            TEXT,
    result          TEXT,
    failure         TEXT,
    memo            TEXT
);
-- One current run per workflow id: enforces the id conflict policy.
CREATE UNIQUE INDEX executions_current ON executions (namespace, workflow_id) WHERE is_current = 1;
-- Listing newest first, optionally by status or type.
CREATE INDEX executions_by_start ON executions (namespace, start_time DESC);
CREATE INDEX executions_by_status ON executions (namespace, status, start_time DESC);
CREATE INDEX executions_by_type ON executions (namespace, workflow_type, start_time DESC);

CREATE TABLE history (
    run_id    TEXT NOT NULL,
    event_id  INTEGER NOT NULL,
    type      TEXT NOT NULL,
    time      REAL NOT NULL,
    attrs     TEXT NOT NULL,
    PRIMARY KEY (run_id, event_id)
) WITHOUT ROWID;

-- Input events that arrived while the run's workflow task was in flight.
CREATE TABLE buffered_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    type    TEXT NOT NULL,
    attrs   TEXT NOT NULL
);
CREATE INDEX buffered_events_run ON buffered_events (run_id, seq);

CREATE TABLE tasks (
    task_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,          -- 'workflow' or 'activity'
    namespace       TEXT NOT NULL,
    task_queue      TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,       -- activity seq; 0 for the workflow task
    visible_at      REAL NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 1,
    lease_id        TEXT,
    lease_owner     TEXT,
    lease_expires   REAL,
    sticky_worker   TEXT,
    sticky_until    REAL,
    activity_type   TEXT,
    args            TEXT,
    retry_policy    TEXT,
    start_to_close_timeout    REAL,
    schedule_to_close_timeout REAL,
    heartbeat_timeout         REAL,
    scheduled_time  REAL,
    started_time    REAL,
    last_failure    TEXT,
    heartbeat_details TEXT
);
-- Polling: the oldest visible unleased task of a kind on a queue.
CREATE INDEX tasks_poll ON tasks (kind, namespace, task_queue, visible_at) WHERE lease_id IS NULL;
-- At most one workflow task per run, one task per activity; lookups by run.
CREATE UNIQUE INDEX tasks_by_run ON tasks (run_id, kind, seq);
-- Reaper: expired leases and leases of dead workers.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires) WHERE lease_id IS NOT NULL;
CREATE INDEX tasks_lease_owner ON tasks (lease_owner) WHERE lease_id IS NOT NULL;

CREATE TABLE timers (
    run_id   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    fire_at  REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers (fire_at);

CREATE TABLE queries (
    query_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT NOT NULL,
    task_queue    TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    name          TEXT NOT NULL,
    args          TEXT NOT NULL,
    created       REAL NOT NULL,
    lease_id      TEXT,
    lease_owner   TEXT,
    lease_expires REAL,
    done          INTEGER NOT NULL DEFAULT 0,
    result        TEXT,
    error         TEXT
);
CREATE INDEX queries_poll ON queries (namespace, task_queue, done, query_id);

CREATE TABLE workers (
    worker_id     TEXT PRIMARY KEY,
    namespace     TEXT NOT NULL,
    task_queue    TEXT NOT NULL,
    identity      TEXT NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);

-- What each workflow type registers, so clients can reject unknown signal/query names.
CREATE TABLE workflow_types (
    namespace     TEXT NOT NULL,
    task_queue    TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    handlers      TEXT NOT NULL,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (namespace, task_queue, workflow_type)
);

-- Idempotent external requests (start / signal with a request id).
CREATE TABLE requests (
    namespace   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    created     REAL NOT NULL,
    PRIMARY KEY (namespace, request_id)
);
