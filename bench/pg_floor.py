"""The PostgreSQL store floor: the raw writes one workflow step needs, with no engine around
them (``floor.py`` does the same for SQLite, with the same statements).

One transaction per step, as duro writes a step when its worker has the run cached, on duro's
own schema, over one asyncpg connection, in a tight loop: the activity task swapped for the
next one, the result, the task's completion and the next activity's schedule appended, the
run's update. Reads, locks, leases and Python around them are left out on purpose: this is the
cost duro cannot go below on this database.

Two shapes of the same writes: ``"one statement"`` (the floor: one round trip, a data-modifying
``WITH`` committed on its own) and ``"statements"`` (each write a statement of its own inside
``BEGIN``/``COMMIT``, six round trips, as duro wrote a step up to session 3).

``measure_fanout`` is the same step in the shape of the fan-out workload (runs advancing side by
side over a pool of connections, as duro's store uses one): the throughput ceiling of the writes
alone, against which the fan-out figures of duro and of its peers can be read.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import floor

from duro.store import migrate
from duro.store.postgres import _keep_session, _translate


def _sql(statement: str) -> str:
    return _translate(statement)[0]


ONE_STATEMENT = "one statement"
STATEMENTS = "statements"

_ONE = (
    "WITH d AS (DELETE FROM tasks WHERE run_id = $1 AND kind = 'activity' AND seq = $2), "
    "h AS (INSERT INTO history (run_id, event_id, type, time, attrs) "
    "SELECT $1, $3 + e.i - 1, e.type, $4, e.attrs "
    "FROM unnest($5::text[], $6::text[]) WITH ORDINALITY AS e(type, attrs, i)), "
    "a AS (INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, attempt, "
    "activity_type, args, retry_policy, start_to_close_timeout, scheduled_time) "
    "VALUES ('activity', 'default', 'default', $1, $2 + 1, $4, 1, 'bench_noop', $7, $8, 300.0, "
    "$4)) "
    "UPDATE executions SET next_event_id = $3 + 3, wt_state = 0 "
    "WHERE run_id = $1 AND next_event_id = $3"
)


async def measure(url: str, *, steps: int, shape: str = ONE_STATEMENT) -> float:
    """Microseconds per step on the (fresh, empty) database at ``url``."""
    step = _SHAPES[shape]
    conn = await asyncpg.connect(url)
    try:
        run_ids = await _setup(conn, -(-steps // floor.STEPS_PER_RUN))
        t0 = time.perf_counter()
        done = 0
        for run_id in run_ids:
            for seq in range(1, floor.STEPS_PER_RUN + 1):
                if done == steps:
                    break
                await step(conn, run_id, seq)
                done += 1
        return (time.perf_counter() - t0) * 1e6 / steps
    finally:
        await conn.close()


async def measure_fanout(
    url: str,
    *,
    runs: int = 300,
    steps_per_run: int = 5,
    connections: int = 10,
    shape: str = ONE_STATEMENT,
) -> float:
    """Steps per second on the (fresh, empty) database at ``url``: ``runs`` runs side by side,
    each taking its ``steps_per_run`` steps in turn, over a pool of ``connections`` (duro's
    default pool size)."""
    step = _SHAPES[shape]
    conn = await asyncpg.connect(url)
    try:
        run_ids = await _setup(conn, runs)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        url,
        min_size=connections,
        max_size=connections,
        statement_cache_size=1024,
        reset=_keep_session,  # as duro's pool: no session reset query after each step
    )
    assert pool is not None

    async def advance(run_id: str) -> None:
        for seq in range(1, steps_per_run + 1):
            async with pool.acquire() as c:
                await step(c, run_id, seq)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(advance(r) for r in run_ids))
        return runs * steps_per_run / (time.perf_counter() - t0)
    finally:
        await pool.close()


async def _setup(conn: asyncpg.Connection, runs: int) -> list[str]:
    """Migrate, and start ``runs`` runs, each with its first activity task."""
    await migrate.migrate_postgres(conn)
    now = time.time()
    run_ids = [f"{i:032x}" for i in range(runs)]
    await conn.executemany(
        "INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue, "
        "status, is_current, start_time, next_event_id, wt_state, args, memo) VALUES "
        "($1, 'default', $2, 'bench_steps', 'default', 'Running', 1, $3, 2, 1, '[10]', '{}')",
        [(r, f"floor-{i}", now) for i, r in enumerate(run_ids)],
    )
    await conn.executemany(
        _sql(floor._HISTORY), [(r, 1, "WorkflowExecutionStarted", now, "{}") for r in run_ids]
    )
    await conn.executemany(
        _sql(floor._INSERT_ACT), [(r, 1, now, "[0]", floor._RETRY, now) for r in run_ids]
    )
    return run_ids


async def _one_statement(conn: Any, run_id: str, seq: int) -> None:
    """Step ``seq`` of a run: one statement, committed on its own."""
    event_id = 2 + 3 * (seq - 1)
    now = time.time()
    rows = [
        floor._result_row(run_id, event_id, seq, now),
        floor._completed_row(run_id, event_id + 1, now),
        floor._scheduled_row(run_id, event_id + 2, seq + 1, now),
    ]
    await conn.execute(
        _ONE,
        run_id,
        seq,
        event_id,
        now,
        [r[2] for r in rows],
        [r[4] for r in rows],
        json.dumps([seq]),
        floor._RETRY,
    )


async def _statements(conn: Any, run_id: str, seq: int) -> None:
    """Step ``seq`` of a run: four statements in one transaction."""
    event_id = 2 + 3 * (seq - 1)
    now = time.time()
    async with conn.transaction():
        await conn.execute(_sql(floor._DELETE_ACT), run_id, seq)
        await conn.executemany(
            _sql(floor._HISTORY),
            [
                floor._result_row(run_id, event_id, seq, now),
                floor._completed_row(run_id, event_id + 1, now),
                floor._scheduled_row(run_id, event_id + 2, seq + 1, now),
            ],
        )
        await conn.execute(_sql(floor._UPDATE_RUN), event_id + 3, 0, run_id, event_id)
        await conn.execute(
            _sql(floor._INSERT_ACT), run_id, seq + 1, now, json.dumps([seq]), floor._RETRY, now
        )


_SHAPES = {ONE_STATEMENT: _one_statement, STATEMENTS: _statements}
