"""The workflow and activities that the crash-recovery test runs in worker subprocesses.

``CrashWorkflow`` has 20 steps (``PLAN``): sequential activities (async and sync), one step of
two parallel activities, three durable timers and a wait for the ``approve`` signal. Its result
is a deterministic function of its input (``expected_result``), so the test can check it.

Every activity *execution* appends lines to the file named by ``$DURO_E2E_LOG``::

    begin <workflow_id> <activity_id> <attempt> <pid> <unix time>
    end   <workflow_id> <activity_id> <attempt> <pid> <unix time>

``begin`` when the activity function starts; ``end`` when its side effects are done. The
function returns a little after ``end``, so a kill right after ``end`` lands before its result
is recorded. Each line is one ``os.write`` on an ``O_APPEND`` descriptor, hence atomic across
processes, and the kernel keeps written data when the process is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from duro import activity, workflow

LOG_ENV = "DURO_E2E_LOG"
TASK_QUEUE = "e2e"

PLAN = (
    "act",
    "act",
    "sync",
    "act",
    "timer",
    "act",
    "act",
    "pair",
    "act",
    "timer",
    "act",
    "sync",
    "act",
    "act",
    "signal",
    "act",
    "timer",
    "act",
    "act",
    "act",
)
"""The kind of each of the 20 steps."""

TIMER_SECONDS = 0.3
END_TO_RETURN_SECONDS = 0.03
"""How long an activity takes between logging ``end`` and returning its result."""

SIGNAL_STEP = PLAN.index("signal")


def _activities_in(kinds: tuple[str, ...]) -> int:
    return sum({"act": 1, "sync": 1, "pair": 2}.get(k, 0) for k in kinds)


ACTIVITIES_TOTAL = _activities_in(PLAN)
ACTIVITIES_BEFORE_SIGNAL = _activities_in(PLAN[:SIGNAL_STEP])
TIMERS_TOTAL = PLAN.count("timer")
TIMERS_BEFORE_SIGNAL = PLAN[:SIGNAL_STEP].count("timer")


def step_value(seed: int, step: int, part: int) -> int:
    """What the activity of ``step`` (``part`` 0 or 1 of a pair) returns for ``seed``."""
    return (seed * 7919 + step * 104_729 + part * 1_299_709) % 1_000_003


def activity_seconds(seed: int, step: int) -> float:
    """How long the activity of ``step`` works before its side effects are done: 0.05-0.2 s."""
    return 0.05 + 0.05 * ((seed + step) % 4)


def approval_for(seed: int) -> str:
    """The payload the test sends with the ``approve`` signal."""
    return f"ok-{seed}"


def expected_result(seed: int) -> list[str]:
    """The result of ``CrashWorkflow.run(seed)`` when approved with ``approval_for(seed)``."""
    out: list[str] = []
    for step, kind in enumerate(PLAN):
        if kind == "act":
            out.append(f"a{step}:{step_value(seed, step, 0)}")
        elif kind == "sync":
            out.append(f"s{step}:{step_value(seed, step, 0)}")
        elif kind == "pair":
            out.append(f"p{step}:{step_value(seed, step, 0)}+{step_value(seed, step, 1)}")
        elif kind == "timer":
            out.append(f"t{step}")
        else:
            out.append(f"g{step}:{approval_for(seed)}")
    return out


def _log_execution(event: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    info = activity.info()
    line = (
        f"{event} {info.workflow_id} {info.activity_id} {info.attempt} {os.getpid()} "
        f"{time.time():.6f}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
async def compute(seed: int, step: int, part: int) -> int:
    _log_execution("begin")
    await asyncio.sleep(activity_seconds(seed, step))
    value = step_value(seed, step, part)
    _log_execution("end")
    await asyncio.sleep(END_TO_RETURN_SECONDS)
    return value


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
def compute_sync(seed: int, step: int, part: int) -> int:
    _log_execution("begin")
    time.sleep(activity_seconds(seed, step))
    value = step_value(seed, step, part)
    _log_execution("end")
    time.sleep(END_TO_RETURN_SECONDS)
    return value


@workflow.defn
class CrashWorkflow:
    def __init__(self) -> None:
        self.approval: str | None = None
        self.step = 0

    @workflow.run
    async def run(self, seed: int) -> list[str]:
        out: list[str] = []
        for step, kind in enumerate(PLAN):
            self.step = step
            if kind == "act":
                value = await workflow.execute_activity(compute, seed, step, 0)
                out.append(f"a{step}:{value}")
            elif kind == "sync":
                value = await compute_sync(seed, step, 0)
                out.append(f"s{step}:{value}")
            elif kind == "pair":
                first, second = await asyncio.gather(
                    compute(seed, step, 0), workflow.start_activity(compute, seed, step, 1)
                )
                out.append(f"p{step}:{first}+{second}")
            elif kind == "timer":
                await workflow.sleep(TIMER_SECONDS)
                out.append(f"t{step}")
            else:
                await workflow.wait_condition(lambda: self.approval is not None)
                out.append(f"g{step}:{self.approval}")
        return out

    @workflow.signal
    def approve(self, approval: str) -> None:
        self.approval = approval

    @workflow.query
    def current_step(self) -> int:
        return self.step


WORKFLOWS = [CrashWorkflow]
ACTIVITIES = [compute, compute_sync]
