"""A 50,000-event history: replay, fetch and describe times, and whether a step costs more as
the history grows.

    python bench/history.py                 # 16,666 sequential activities: 50,000 events
    python bench/history.py --steps 3000

One process, a fresh SQLite file. It runs one workflow of ``--steps`` sequential activities
(3 events each), then measures: fetching the history from the store, replaying it (as a
worker without the run cached, or ``duro replay``, does), describing the run, and a cold worker
finishing it (fetch, replay, one more task). The per-step time while the run was built is
compared between its first and its last 1,000 steps: flat means a step's cost does not grow
with the history behind it. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads

from duro.history import EventType


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_666)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duro-history-") as tmp:
        db = Path(tmp) / "history.db"
        result = await workloads.replay_history(db, steps=args.steps, repeats=3)
        for figure in result.figures:
            print(f"{figure.name}: {figure.value:,.3f} {figure.unit}")
        async with workloads.connect(db) as client:
            handle = client.get_workflow_handle("long")
            t0 = time.perf_counter()
            info = await handle.describe()
            describe_s = time.perf_counter() - t0
            events = await handle.fetch_history()
        print(f"history: {len(events):,} events; describe: {describe_s * 1000:.1f} ms")
        done = [e.time for e in events if e.type == EventType.ACTIVITY_TASK_COMPLETED]
        gaps = [b - a for a, b in itertools.pairwise(done)]
        window = min(1000, len(gaps) // 2)
        first = statistics.mean(gaps[:window]) * 1000
        last = statistics.mean(gaps[-window:]) * 1000
        print(
            f"per step while building: first {window:,} steps {first:.3f} ms, last {window:,} "
            f"steps {last:.3f} ms ({last / first:.2f}x); run status {info.status.value}"
        )


if __name__ == "__main__":
    asyncio.run(main())
