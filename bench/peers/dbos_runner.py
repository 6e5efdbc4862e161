"""DBOS in the comparison: DBOS Transact for Python on SQLite or PostgreSQL, its workflows run
in this process (DBOS has no separate worker), started and awaited through its async API.

    python bench/peers/dbos_runner.py --db sqlite:////tmp/x.sqlite [--sizes JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from dbos import DBOS, DBOSConfig, SetWorkflowID


@DBOS.step(name="cmp_step")
async def step(i: int) -> int:
    return i + 1


@DBOS.step(name="cmp_clock")
async def clock() -> float:
    return time.time()


@DBOS.workflow(name="cmp_steps")
async def steps_wf(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
    return total


@DBOS.workflow(name="cmp_parallel")
async def parallel_wf(n: int) -> int:
    return sum(await asyncio.gather(*(step(i) for i in range(n))))


@DBOS.workflow(name="cmp_sleeper")
async def sleeper_wf(seconds: float) -> list[float]:
    intended = await clock() + seconds
    await DBOS.sleep_async(seconds)
    return [intended, await clock()]


@DBOS.workflow(name="cmp_waiter")
async def waiter_wf() -> str:
    value = await DBOS.recv_async("go", timeout_seconds=600)
    return str(value)


class DBOSAdapter:
    async def _start(self, fn: Any, workflow_id: str, *args: Any) -> Any:
        with SetWorkflowID(workflow_id):
            return await DBOS.start_workflow_async(fn, *args)

    async def start_steps(self, workflow_id: str, steps: int) -> Any:
        return await self._start(steps_wf, workflow_id, steps)

    async def start_parallel(self, workflow_id: str, count: int) -> Any:
        return await self._start(parallel_wf, workflow_id, count)

    async def start_sleeper(self, workflow_id: str, seconds: float) -> Any:
        return await self._start(sleeper_wf, workflow_id, seconds)

    async def start_waiter(self, workflow_id: str) -> Any:
        return await self._start(waiter_wf, workflow_id)

    async def signal(self, handle: Any, value: str) -> None:
        await DBOS.send_async(handle.get_workflow_id(), value, "go")

    async def result(self, handle: Any) -> Any:
        return await handle.get_result()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--system", default="dbos")
    parser.add_argument("--sizes")
    args = parser.parse_args()
    sizes = common.parse_sizes(args.sizes)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "cmpbench",
        "system_database_url": args.db,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        figures = await common.run_all(DBOSAdapter(), sizes)
    finally:
        DBOS.destroy()
    common.emit(args.system, figures, sizes)


if __name__ == "__main__":
    asyncio.run(main())
