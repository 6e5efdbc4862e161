"""The store floor: the raw SQLite writes one workflow step needs, with no engine around them.

A sequential step in duro, with the run cached on its worker (the steady state), is one
transaction: the activity's result and the workflow task it wakes (drop the activity task,
append ActivityTaskCompleted, WorkflowTaskCompleted and the next ActivityTaskScheduled, update
the execution, create the next activity task). Without the run cached it is two: the workflow
task's completion (append WorkflowTaskCompleted + ActivityTaskScheduled, update the execution,
drop the workflow task, create the activity task) and the result (drop the activity task,
append ActivityTaskCompleted, update the execution, create the next workflow task). Here those
writes run directly with ``sqlite3`` in a tight loop, on duro's own schema and with the pragmas
of ``duro.store.sqlite`` (WAL, synchronous=NORMAL), in either shape. Reads, leases and Python
around them are left out on purpose: this is the cost duro cannot go below.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from duro.store import migrate

STEPS_PER_RUN = 10
"""As in the sequential workload: every 10 steps move to the next run."""


SLOW_COMMIT = 0.001
"""A commit slower than this (seconds) is counted as one that ran a WAL auto-checkpoint, whose
fsyncs dominate its time; the rest of the commits only append to the WAL."""


@dataclass(frozen=True)
class FloorResult:
    steps: int
    transactions_per_step: int
    us_per_step: float
    slow_commits: int
    """Commits that took over ``SLOW_COMMIT`` (WAL auto-checkpoints)."""
    slow_commit_s: float
    """Seconds spent in those commits."""

    @property
    def us_per_step_without_checkpoints(self) -> float:
        return self.us_per_step - self.slow_commit_s * 1e6 / self.steps


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up as ``duro.store.sqlite._connect`` does (the same pragmas)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


_HISTORY = "INSERT INTO history (run_id, event_id, type, time, attrs) VALUES (?, ?, ?, ?, ?)"
_UPDATE_RUN = (
    "UPDATE executions SET next_event_id = ?, wt_state = ? WHERE run_id = ? AND next_event_id = ?"
)
_INSERT_WT = (
    "INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, attempt) "
    "VALUES ('workflow', 'default', 'default', ?, 0, ?, 1)"
)
_DELETE_WT = "DELETE FROM tasks WHERE run_id = ? AND kind = 'workflow'"
_INSERT_ACT = (
    "INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, attempt, "
    "activity_type, args, retry_policy, start_to_close_timeout, schedule_to_close_timeout, "
    "heartbeat_timeout, scheduled_time) "
    "VALUES ('activity', 'default', 'default', ?, ?, ?, 1, 'bench_noop', ?, ?, 300.0, NULL, "
    "NULL, ?)"
)
_DELETE_ACT = "DELETE FROM tasks WHERE run_id = ? AND kind = 'activity' AND seq = ?"
_RETRY = json.dumps(
    {
        "initial_interval": 1.0,
        "backoff_coefficient": 2.0,
        "maximum_interval": 100.0,
        "maximum_attempts": 0,
        "non_retryable_error_types": [],
    }
)


def _setup(conn: sqlite3.Connection, runs: int, fused: bool) -> list[str]:
    """Create the schema and ``runs`` started executions, each with its workflow task (or,
    ``fused``, its first activity task: the run is cached and its first task done)."""
    migrate.migrate_sqlite(conn)
    now = time.time()
    run_ids = [f"{i:032x}" for i in range(runs)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue, "
        "status, is_current, start_time, next_event_id, wt_state, args, memo) "
        "VALUES (?, 'default', ?, 'bench_steps', 'default', 'Running', 1, ?, 2, 1, '[10]', '{}')",
        [(r, f"floor-{i}", now) for i, r in enumerate(run_ids)],
    )
    conn.executemany(
        _HISTORY,
        [(r, 1, "WorkflowExecutionStarted", now, '{"args": [10]}') for r in run_ids],
    )
    if fused:
        conn.executemany(_INSERT_ACT, [(r, 1, now, "[0]", _RETRY, now) for r in run_ids])
    else:
        conn.executemany(_INSERT_WT, [(r, now) for r in run_ids])
    conn.execute("COMMIT")
    return run_ids


def _completed_row(run_id: str, event_id: int, now: float) -> tuple[object, ...]:
    attrs = {"workflow_time": now, "history_size": 1000, "identity": "1@bench"}
    return (run_id, event_id, "WorkflowTaskCompleted", now, json.dumps(attrs))


def _scheduled_row(run_id: str, event_id: int, seq: int, now: float) -> tuple[object, ...]:
    attrs = {
        "seq": seq,
        "activity_type": "bench_noop",
        "task_queue": "default",
        "args": [seq - 1],
        "start_to_close_timeout": 300.0,
    }
    return (run_id, event_id, "ActivityTaskScheduled", now, json.dumps(attrs))


def _result_row(run_id: str, event_id: int, seq: int, now: float) -> tuple[object, ...]:
    attrs = {"seq": seq, "result": seq, "attempt": 1}
    return (run_id, event_id, "ActivityTaskCompleted", now, json.dumps(attrs))


def measure(path: Path, *, steps: int, transactions_per_step: int) -> FloorResult:
    """Run ``steps`` steps on a fresh database file at ``path``; time them."""
    if transactions_per_step not in (1, 2):
        raise ValueError("transactions_per_step is 1 or 2")
    runs = -(-steps // STEPS_PER_RUN)
    conn = connect(path)
    try:
        run_ids = _setup(conn, runs, fused=transactions_per_step == 1)
        slow_commits, slow_commit_s = 0, 0.0

        def commit() -> None:
            nonlocal slow_commits, slow_commit_s
            c0 = time.perf_counter()
            conn.execute("COMMIT")
            took = time.perf_counter() - c0
            if took > SLOW_COMMIT:
                slow_commits += 1
                slow_commit_s += took

        t0 = time.perf_counter()
        done = 0
        for run_id in run_ids:
            event_id = 2
            for seq in range(1, STEPS_PER_RUN + 1):
                if done == steps:
                    break
                now = time.time()
                if transactions_per_step == 1:
                    # The result and the task it wakes, together (the run is cached).
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(_DELETE_ACT, (run_id, seq))
                    conn.executemany(
                        _HISTORY,
                        [
                            _result_row(run_id, event_id, seq, now),
                            _completed_row(run_id, event_id + 1, now),
                            _scheduled_row(run_id, event_id + 2, seq + 1, now),
                        ],
                    )
                    conn.execute(_UPDATE_RUN, (event_id + 3, 0, run_id, event_id))
                    conn.execute(
                        _INSERT_ACT, (run_id, seq + 1, now, json.dumps([seq]), _RETRY, now)
                    )
                    commit()
                    event_id += 3
                    done += 1
                    continue
                # Transaction 1: the workflow task completes and schedules the activity.
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    _HISTORY,
                    [
                        _completed_row(run_id, event_id, now),
                        _scheduled_row(run_id, event_id + 1, seq, now),
                    ],
                )
                conn.execute(_UPDATE_RUN, (event_id + 2, 0, run_id, event_id))
                conn.execute(_DELETE_WT, (run_id,))
                conn.execute(_INSERT_ACT, (run_id, seq, now, json.dumps([seq - 1]), _RETRY, now))
                commit()
                # Transaction 2: the activity's result is recorded; the next task is due.
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_DELETE_ACT, (run_id, seq))
                conn.execute(_HISTORY, _result_row(run_id, event_id + 2, seq, now))
                conn.execute(_UPDATE_RUN, (event_id + 3, 1, run_id, event_id + 2))
                conn.execute(_INSERT_WT, (run_id, now))
                commit()
                event_id += 3
                done += 1
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    return FloorResult(
        steps, transactions_per_step, elapsed * 1e6 / steps, slow_commits, slow_commit_s
    )
