"""The PostgreSQL store floor: the raw writes one workflow step needs, with no engine around
them (``floor.py`` does the same for SQLite, with the same statements).

One transaction per step, as duro writes a step when its worker has the run cached, on duro's
own schema, over one asyncpg connection, in a tight loop: the activity task swapped for the
next one, the result, the task's completion and the next activity's schedule appended, the
run's update. Reads, locks, leases and Python around them are left out on purpose: this is the
cost duro cannot go below on this database.
"""

from __future__ import annotations

import json
import time

import asyncpg
import floor

from duro.store import migrate
from duro.store.postgres import _translate


def _sql(statement: str) -> str:
    return _translate(statement)[0]


async def measure(url: str, *, steps: int) -> float:
    """Microseconds per step on the (fresh, empty) database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate_postgres(conn)
        runs = -(-steps // floor.STEPS_PER_RUN)
        now = time.time()
        run_ids = [f"{i:032x}" for i in range(runs)]
        await conn.executemany(
            "INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue, "
            "status, is_current, start_time, next_event_id, wt_state, args, memo) VALUES "
            "($1, 'default', $2, 'bench_steps', 'default', 'Running', 1, $3, 2, 1, '[10]', '{}')",
            [(r, f"floor-{i}", now) for i, r in enumerate(run_ids)],
        )
        history, update = _sql(floor._HISTORY), _sql(floor._UPDATE_RUN)
        insert_act, delete_act = _sql(floor._INSERT_ACT), _sql(floor._DELETE_ACT)
        await conn.executemany(
            history, [(r, 1, "WorkflowExecutionStarted", now, "{}") for r in run_ids]
        )
        await conn.executemany(insert_act, [(r, 1, now, "[0]", floor._RETRY, now) for r in run_ids])
        t0 = time.perf_counter()
        done = 0
        for run_id in run_ids:
            event_id = 2
            for seq in range(1, floor.STEPS_PER_RUN + 1):
                if done == steps:
                    break
                now = time.time()
                async with conn.transaction():
                    await conn.execute(delete_act, run_id, seq)
                    await conn.executemany(
                        history,
                        [
                            floor._result_row(run_id, event_id, seq, now),
                            floor._completed_row(run_id, event_id + 1, now),
                            floor._scheduled_row(run_id, event_id + 2, seq + 1, now),
                        ],
                    )
                    await conn.execute(update, event_id + 3, 0, run_id, event_id)
                    await conn.execute(
                        insert_act, run_id, seq + 1, now, json.dumps([seq]), floor._RETRY, now
                    )
                event_id += 3
                done += 1
        return (time.perf_counter() - t0) * 1e6 / steps
    finally:
        await conn.close()
