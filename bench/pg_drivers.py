"""Which PostgreSQL driver for the PostgreSQL store: asyncpg or psycopg 3 (async)?

Times the transaction shape a workflow step needs (claim a task with FOR UPDATE SKIP LOCKED,
append two history rows, update the run, delete the task, commit), sequentially on one
connection and with 32 concurrent connections, for both drivers, alternating repeats in one
process. Not part of the test suite; needs the two drivers (not dependencies of duro yet):

    .venv/bin/pip install asyncpg 'psycopg[binary]'
    .venv/bin/python bench/pg_drivers.py [postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-not-found, unused-ignore]
import psycopg  # type: ignore[import-not-found, unused-ignore]

SCHEMA = """
DROP TABLE IF EXISTS bench_tasks, bench_events, bench_runs;
CREATE TABLE bench_runs (run_id text PRIMARY KEY, next_event_id int NOT NULL, state text);
CREATE TABLE bench_events (run_id text, event_id int, type text, attrs jsonb,
                           PRIMARY KEY (run_id, event_id));
CREATE TABLE bench_tasks (task_id bigserial PRIMARY KEY, run_id text NOT NULL,
                          visible_at double precision NOT NULL);
"""
STEPS = 2000
CONCURRENCY = 32


async def seed(url: str, runs: int) -> list[str]:
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    ids = [uuid.uuid4().hex for _ in range(runs)]
    await conn.executemany("INSERT INTO bench_runs VALUES ($1, 1, 'running')", [(r,) for r in ids])
    await conn.close()
    return ids


async def step_asyncpg(conn: Any, run_id: str) -> None:
    async with conn.transaction():
        await conn.execute("INSERT INTO bench_tasks (run_id, visible_at) VALUES ($1, 0)", run_id)
    async with conn.transaction():
        task = await conn.fetchrow(
            "SELECT task_id, run_id FROM bench_tasks WHERE run_id = $1 AND visible_at <= 1 "
            "ORDER BY task_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            run_id,
        )
        n = await conn.fetchval(
            "SELECT next_event_id FROM bench_runs WHERE run_id = $1 FOR UPDATE", run_id
        )
        await conn.executemany(
            "INSERT INTO bench_events VALUES ($1, $2, $3, $4)",
            [(run_id, n, "ActivityTaskCompleted", "{}"), (run_id, n + 1, "Scheduled", "{}")],
        )
        await conn.execute(
            "UPDATE bench_runs SET next_event_id = $2 WHERE run_id = $1", run_id, n + 2
        )
        await conn.execute("DELETE FROM bench_tasks WHERE task_id = $1", task["task_id"])


async def step_psycopg(conn: Any, run_id: str) -> None:
    async with conn.transaction():
        await conn.execute("INSERT INTO bench_tasks (run_id, visible_at) VALUES (%s, 0)", (run_id,))
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT task_id, run_id FROM bench_tasks WHERE run_id = %s AND visible_at <= 1 "
            "ORDER BY task_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (run_id,),
        )
        task = await cur.fetchone()
        cur = await conn.execute(
            "SELECT next_event_id FROM bench_runs WHERE run_id = %s FOR UPDATE", (run_id,)
        )
        (n,) = await cur.fetchone()
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO bench_events VALUES (%s, %s, %s, %s)",
                [(run_id, n, "ActivityTaskCompleted", "{}"), (run_id, n + 1, "Scheduled", "{}")],
            )
        await conn.execute(
            "UPDATE bench_runs SET next_event_id = %s WHERE run_id = %s", (n + 2, run_id)
        )
        await conn.execute("DELETE FROM bench_tasks WHERE task_id = %s", (task[0],))


Connect = Callable[[str], Awaitable[Any]]
Step = Callable[[Any, str], Awaitable[None]]


async def connect_psycopg(url: str) -> Any:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


DRIVERS: dict[str, tuple[Connect, Step]] = {
    "asyncpg": (asyncpg.connect, step_asyncpg),
    "psycopg": (connect_psycopg, step_psycopg),
}


async def sequential(url: str, driver: str) -> float:
    """Mean seconds per step, one connection, one step at a time."""
    connect, step = DRIVERS[driver]
    (run_id,) = await seed(url, 1)
    conn = await connect(url)
    started = time.perf_counter()
    for _ in range(STEPS):
        await step(conn, run_id)
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed / STEPS


async def concurrent(url: str, driver: str) -> float:
    """Steps per second with CONCURRENCY connections, each advancing its own run."""
    connect, step = DRIVERS[driver]
    run_ids = await seed(url, CONCURRENCY)
    conns = [await connect(url) for _ in run_ids]
    per_conn = STEPS // CONCURRENCY

    async def worker(conn: Any, run_id: str) -> None:
        for _ in range(per_conn):
            await step(conn, run_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, r) for c, r in zip(conns, run_ids, strict=True)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return per_conn * CONCURRENCY / elapsed


async def main(url: str, repeats: int = 3) -> None:
    seq: dict[str, list[float]] = {d: [] for d in DRIVERS}
    conc: dict[str, list[float]] = {d: [] for d in DRIVERS}
    for _ in range(repeats):
        for driver in DRIVERS:  # alternate, so drift hits both alike
            seq[driver].append(await sequential(url, driver))
            conc[driver].append(await concurrent(url, driver))
    print(f"{STEPS} steps, {repeats} alternating repeats, median (all):")
    for driver in DRIVERS:
        s = ", ".join(f"{x * 1e6:.0f}" for x in seq[driver])
        c = ", ".join(f"{x:,.0f}" for x in conc[driver])
        print(
            f"  {driver:8s} sequential {statistics.median(seq[driver]) * 1e6:6.0f} µs/step ({s}); "
            f"{CONCURRENCY} connections {statistics.median(conc[driver]):7,.0f} steps/s ({c})"
        )
    conn = await asyncpg.connect(url)
    await conn.execute("DROP TABLE IF EXISTS bench_tasks, bench_events, bench_runs")
    await conn.close()


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1/postgres")
    )
