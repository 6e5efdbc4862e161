"""Many sleeping workflows: what they cost while they sleep, and how fast they all wake.

    python bench/sleepers.py                 # 100,000 workflows (a few minutes)
    python bench/sleepers.py --count 10000   # smaller
    python bench/sleepers.py --db postgresql://…   # on PostgreSQL (a fresh database)

One process runs the client and one worker on a fresh SQLite file (default). It starts
``--count`` workflows that each sleep durably until the same moment (``--margin`` seconds after
the last start is expected), then reports: the start rate; while they all sleep, the process's
resident memory, the worker's cached runs, and the database size; and the time from the wake
moment until every run has completed. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from duro import Client, Worker, activity, workflow
from duro.store.facade import SqlStore


@activity.defn(name="sleepers_noop")
async def noop() -> int:
    return 1


@workflow.defn(name="sleepers_sleeper")
async def sleeper(wake_at: float) -> int:
    await workflow.sleep(max(0.0, wake_at - workflow.now().timestamp()))
    return await noop()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_size_mib(db: str) -> float:
    """The database file once its write-ahead log is checkpointed (the log is reused space)."""
    path = db.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return Path(path).stat().st_size / 2**20


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--start-rate", type=float, default=1000.0, help="expected starts/s")
    parser.add_argument("--margin", type=float, default=15.0, help="seconds after the starts")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="duro-sleepers-")
    db = args.db or f"sqlite:///{tmp}/sleepers.db"
    client = await Client.connect(db)
    rss_before = rss_mib()
    wake_at = time.time() + args.count / args.start_rate + args.margin
    async with Worker(client, workflows=[sleeper], activities=[noop]) as worker:
        t0 = time.perf_counter()
        for i in range(args.count):
            await client.start_workflow(sleeper, wake_at, id=f"s-{i}")
        start_seconds = time.perf_counter() - t0
        print(
            f"started {args.count:,} in {start_seconds:.1f} s ({args.count / start_seconds:,.0f}/s)"
        )
        # Wait until every run has taken its first task and sleeps on its timer.
        while await client.count_workflows("Status = 'Running'") < args.count:
            await asyncio.sleep(0.5)
        store = client.store
        assert isinstance(store, SqlStore)
        while (await store.pending_work())[0] > 0:  # first tasks still to run
            await asyncio.sleep(0.5)
        if time.time() >= wake_at:
            print("warning: the runs woke before all were asleep; raise --margin")
        stats = worker.statistics()
        sleeping_rss = rss_mib()
        size = db_size_mib(db) if db.startswith("sqlite") else float("nan")
        print(
            f"all asleep: process RSS {sleeping_rss:,.0f} MiB (before the starts "
            f"{rss_before:,.0f} MiB), worker cached runs {stats.cached_runs:,}, database "
            f"{size:,.0f} MiB ({size * 2**20 / args.count:,.0f} bytes per sleeping run)"
        )
        await asyncio.sleep(max(0.0, wake_at - time.time()))
        t_wake = time.perf_counter()
        while await client.count_workflows("Status = 'Completed'") < args.count:
            await asyncio.sleep(0.2)
        wake_seconds = time.perf_counter() - t_wake
        print(
            f"woke all {args.count:,} in {wake_seconds:.1f} s "
            f"({args.count / wake_seconds:,.0f} runs/s); process RSS {rss_mib():,.0f} MiB"
        )
    await client.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
