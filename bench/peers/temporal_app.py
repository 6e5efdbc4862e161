"""The comparison's workflows in Temporal's Python SDK (a module of their own: the SDK's
sandbox re-imports the module that defines workflows)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from temporalio import activity, workflow

TIMEOUT = timedelta(seconds=120)


@activity.defn(name="cmp_step")
async def step(i: int) -> int:
    return i + 1


@activity.defn(name="cmp_clock")
async def clock() -> float:
    return time.time()


@workflow.defn(name="cmp_steps")
class Steps:
    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_activity(step, i, start_to_close_timeout=TIMEOUT)
        return total


@workflow.defn(name="cmp_parallel")
class Parallel:
    @workflow.run
    async def run(self, n: int) -> int:
        results = await asyncio.gather(
            *(workflow.execute_activity(step, i, start_to_close_timeout=TIMEOUT) for i in range(n))
        )
        return sum(results)


@workflow.defn(name="cmp_sleeper")
class Sleeper:
    @workflow.run
    async def run(self, seconds: float) -> list[float]:
        intended = workflow.now().timestamp() + seconds
        await workflow.sleep(seconds)
        observed = await workflow.execute_activity(clock, start_to_close_timeout=TIMEOUT)
        return [intended, observed]


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


WORKFLOWS = [Steps, Parallel, Sleeper, Waiter]
ACTIVITIES = [step, clock]
