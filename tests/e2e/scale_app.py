"""Workflows for the multi-worker and chaos tests (``tests/test_scale_out.py``).

Both log each activity execution to ``$DURO_E2E_LOG`` the way ``app.py`` does (``begin`` and
``end`` lines with workflow id, activity id, attempt and pid), so the tests can tell which
worker process ran what and how often.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from duro import activity, workflow
from tests.e2e.app import _log_execution, step_value

TASK_QUEUE = "scale"
STEPS = 10


@activity.defn(start_to_close_timeout=timedelta(seconds=10))
async def step(seed: int, i: int) -> int:
    _log_execution("begin")
    value = step_value(seed, i, 0)
    _log_execution("end")
    return value


@activity.defn(start_to_close_timeout=timedelta(seconds=10))
async def slow_step(seed: int, i: int) -> int:
    """Like ``step``, but works 50-200 ms first, so that kills land mid-activity."""
    _log_execution("begin")
    await asyncio.sleep(0.05 + 0.05 * ((seed + i) % 4))
    value = step_value(seed, i, 0)
    _log_execution("end")
    return value


@workflow.defn
class TenSteps:
    """Ten sequential activities: the multi-worker test's unit of work."""

    @workflow.run
    async def run(self, seed: int) -> int:
        total = 0
        for i in range(STEPS):
            total += await workflow.execute_activity(step, seed, i)
        return total


def ten_steps_result(seed: int) -> int:
    return sum(step_value(seed, i, 0) for i in range(STEPS))


CHAOS_TIMER = 0.2


@workflow.defn
class ChaosWorkflow:
    """An activity, two in parallel, a durable timer, a wait for ``go``, a last activity."""

    def __init__(self) -> None:
        self.go: str | None = None

    @workflow.run
    async def run(self, seed: int) -> str:
        first = await slow_step(seed, 0)
        second, third = await asyncio.gather(slow_step(seed, 1), slow_step(seed, 2))
        await workflow.sleep(CHAOS_TIMER)
        await workflow.wait_condition(lambda: self.go is not None)
        last = await slow_step(seed, 3)
        return f"{first}/{second}/{third}/{self.go}/{last}"

    @workflow.signal
    def proceed(self, token: str) -> None:
        self.go = token


def chaos_result(seed: int) -> str:
    values = [step_value(seed, i, 0) for i in range(4)]
    return f"{values[0]}/{values[1]}/{values[2]}/go-{seed}/{values[3]}"


WORKFLOWS = [TenSteps, ChaosWorkflow]
ACTIVITIES = [step, slow_step]
