"""duro in the comparison: client and one worker in this process, on SQLite or PostgreSQL.

python bench/peers/duro_runner.py --db sqlite:////tmp/x.db [--sizes JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from duro import Client, Worker, WorkflowHandle, activity, workflow


@activity.defn(name="cmp_step")
async def step(i: int) -> int:
    return i + 1


@activity.defn(name="cmp_clock")
async def clock() -> float:
    return time.time()


@workflow.defn(name="cmp_steps")
async def steps_wf(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
    return total


@workflow.defn(name="cmp_parallel")
async def parallel_wf(n: int) -> int:
    return sum(await asyncio.gather(*(step(i) for i in range(n))))


@workflow.defn(name="cmp_sleeper")
async def sleeper_wf(seconds: float) -> list[float]:
    intended = workflow.now().timestamp() + seconds
    await workflow.sleep(seconds)
    return [intended, await clock()]


@workflow.defn(name="cmp_waiter")
class Waiter:
    def __init__(self) -> None:
        self.value: str | None = None

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.value is not None)
        assert self.value is not None
        return self.value

    @workflow.signal
    def go(self, value: str) -> None:
        self.value = value


class DuroAdapter:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def start_steps(self, workflow_id: str, steps: int) -> WorkflowHandle:
        return await self.client.start_workflow(steps_wf, steps, id=workflow_id)

    async def start_parallel(self, workflow_id: str, count: int) -> WorkflowHandle:
        return await self.client.start_workflow(parallel_wf, count, id=workflow_id)

    async def start_sleeper(self, workflow_id: str, seconds: float) -> WorkflowHandle:
        return await self.client.start_workflow(sleeper_wf, seconds, id=workflow_id)

    async def start_waiter(self, workflow_id: str) -> WorkflowHandle:
        return await self.client.start_workflow(Waiter.run, id=workflow_id)

    async def signal(self, handle: WorkflowHandle, value: str) -> None:
        await handle.signal(Waiter.go, value)

    async def result(self, handle: WorkflowHandle) -> Any:
        return await handle.result(timeout=600)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--system", default="duro")
    parser.add_argument("--sizes")
    args = parser.parse_args()
    sizes = common.parse_sizes(args.sizes)
    client = await Client.connect(args.db)
    try:
        async with Worker(
            client,
            workflows=[steps_wf, parallel_wf, sleeper_wf, Waiter],
            activities=[step, clock],
            max_concurrent_activities=256,
        ):
            figures = await common.run_all(DuroAdapter(client), sizes)
    finally:
        await client.close()
    common.emit(args.system, figures, sizes)


if __name__ == "__main__":
    asyncio.run(main())
