"""The benchmark workloads: each runs on a fresh SQLite file, client and one worker in-process.

Every workload checks the results it gets back (a benchmark of a broken run measures nothing)
and returns its figures; ``core.py`` compares them with the targets and the store floor.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duro import Client, Worker, WorkflowHandle, activity, workflow
from duro.definitions import workflow_definition
from duro.history import EventType
from duro.runtime.replay import advance, new_instance, replay

RESULT_TIMEOUT = 600.0
"""Seconds to wait for any one result before the bench gives up (a hang is a bug, not a figure)."""


# -- workflows and activities -------------------------------------------------------------------


@activity.defn(name="bench_noop")
async def noop(i: int) -> int:
    """The trivial activity every step runs."""
    return i + 1


@activity.defn(name="bench_stamp")
async def stamp() -> float:
    """The wall-clock time at which code after a durable sleep could first act."""
    return time.time()


@workflow.defn(name="bench_steps")
async def steps_workflow(steps: int) -> int:
    """``steps`` sequential activities."""
    total = 0
    for i in range(steps):
        total += await workflow.execute_activity(noop, i)
    return total


@workflow.defn(name="bench_sleeper")
async def sleeper_workflow(seconds: float) -> list[float]:
    """Sleep durably; return [intended fire time, workflow.now() after waking, activity time]."""
    intended = workflow.now().timestamp() + seconds  # the timer's fire_at is exactly this
    await workflow.sleep(seconds)
    woke = workflow.now().timestamp()
    observed = await workflow.execute_activity(stamp)
    return [intended, woke, observed]


@workflow.defn(name="bench_waiter")
class WaiterWorkflow:
    """Run ``steps`` sequential activities, then wait for the ``release`` signal."""

    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, steps: int) -> int:
        total = 0
        for i in range(steps):
            total += await workflow.execute_activity(noop, i)
        await workflow.wait_condition(lambda: self.released)
        return total

    @workflow.signal
    def release(self) -> None:
        self.released = True


WORKFLOWS: list[Any] = [steps_workflow, sleeper_workflow, WaiterWorkflow]
ACTIVITIES: list[Any] = [noop, stamp]


def expected_total(steps: int) -> int:
    return steps * (steps + 1) // 2


def waiting_history_length(steps: int) -> int:
    """Events of a waiter blocked on its signal: Started, 3 per step, the last task's Completed."""
    return 1 + 3 * steps + 1


# -- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One reported number."""

    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    per_step_ms: float | None = None
    """The cost of one step this figure implies, to compare with the store floor."""

    def meets(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def of_target(self) -> float | None:
        """figure / target: ≤ 1 is good for a latency, ≥ 1 for a throughput."""
        return None if self.target is None else self.value / self.target


@dataclass
class WorkloadResult:
    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


# -- plumbing -----------------------------------------------------------------------------------


@asynccontextmanager
async def connect(db: Path) -> AsyncIterator[Client]:
    client = await Client.connect(f"sqlite:///{db}")
    try:
        yield client
    finally:
        await client.close()


def new_worker(client: Client) -> Worker:
    return Worker(client, workflows=WORKFLOWS, activities=ACTIVITIES)


async def result_of(handle: WorkflowHandle) -> Any:
    return await handle.result(timeout=RESULT_TIMEOUT)


async def wait_for_history(handle: WorkflowHandle, length: int, interval: float) -> None:
    """Poll until the run's history holds ``length`` events (e.g. it blocked on a signal)."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while (await handle.describe()).history_length < length:
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {handle.id} did not reach {length} events")
        await asyncio.sleep(interval)


def check(what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise RuntimeError(f"{what}: got {got!r}, expected {expected!r}")


# -- 1. sequential per-step latency -------------------------------------------------------------


async def sequential(
    db: Path, *, workflows: int, steps: int = 10, warmup: int = 3
) -> WorkloadResult:
    """Run ``workflows`` ``steps``-step workflows one after another; latency per step."""
    res = WorkloadResult(
        "sequential", f"1. Sequential: {workflows} x {steps}-step workflow, one at a time"
    )
    per_step: list[float] = []
    gaps: list[float] = []
    async with connect(db) as client, new_worker(client):
        for i in range(warmup):
            h = await client.start_workflow(steps_workflow, steps, id=f"warmup-{i}")
            check("warm-up result", await result_of(h), expected_total(steps))
        handles = []
        t_all = time.perf_counter()
        for i in range(workflows):
            t0 = time.perf_counter()
            h = await client.start_workflow(steps_workflow, steps, id=f"seq-{i}")
            got = await result_of(h)
            per_step.append((time.perf_counter() - t0) * 1000.0 / steps)
            check("result", got, expected_total(steps))
            handles.append(h)
        res.wall_s = time.perf_counter() - t_all
        for h in handles:  # read after the timed part
            times = [
                e.time
                for e in await h.fetch_history()
                if e.type == EventType.ACTIVITY_TASK_COMPLETED
            ]
            gaps += [(b - a) * 1000.0 for a, b in itertools.pairwise(times)]
    mean = res.wall_s * 1000.0 / (workflows * steps)
    p50 = percentile(per_step, 50)
    step_p50 = percentile(gaps, 50)
    res.figures += [
        Figure("per-step latency p50", p50, "ms", 1.0, per_step_ms=p50),
        Figure("per-step latency p95", percentile(per_step, 95), "ms", 1.0),
        Figure("per-step latency mean", mean, "ms", 1.0, per_step_ms=mean),
        Figure("one step p50 (result to next result)", step_p50, "ms", per_step_ms=step_p50),
    ]
    res.notes.append(
        "per-step latency = workflow wall time (start → result, incl. start and close) / "
        f"{steps}; {warmup} warm-up workflows not counted. One step = the time between two "
        "consecutive activity results in a run's history (the store stamps each with its "
        "transaction's start), the steady state of a long run, which the floor's step mirrors"
    )
    return res


# -- 2. fan-out throughput ----------------------------------------------------------------------


async def fanout(db: Path, *, workflows: int, steps: int = 5) -> WorkloadResult:
    """Start ``workflows`` ``steps``-step workflows at once; steps/s until the last result."""
    res = WorkloadResult("fanout", f"2. Fan-out: {workflows} concurrent {steps}-step workflows")
    async with connect(db) as client, new_worker(client):
        t0 = time.perf_counter()
        handles = await asyncio.gather(
            *(client.start_workflow(steps_workflow, steps, id=f"fan-{i}") for i in range(workflows))
        )
        results = await asyncio.gather(*(result_of(h) for h in handles))
        res.wall_s = time.perf_counter() - t0
    check("results", set(results), {expected_total(steps)})
    total_steps = workflows * steps
    rate = total_steps / res.wall_s
    res.figures += [
        Figure(
            "throughput", rate, "steps/s", 2000.0, higher_is_better=True, per_step_ms=1000 / rate
        ),
        Figure("wall time, first start → last result", res.wall_s, "s"),
    ]
    res.notes.append(
        f"all {workflows} starts issued at once (asyncio.gather); steps/s = {total_steps} / wall "
        "time from the first start to the last result"
    )
    return res


# -- 3. timer lateness --------------------------------------------------------------------------


async def timers(db: Path, *, workflows: int, seed: int = 1) -> WorkloadResult:
    """``workflows`` concurrent runs each sleep 0.2-1.5 s durably; lateness after the fire time."""
    res = WorkloadResult(
        "timers", f"3. Timer lateness: {workflows} concurrent durable sleeps of 0.2-1.5 s"
    )
    rng = random.Random(seed)
    durations = [rng.uniform(0.2, 1.5) for _ in range(workflows)]
    async with connect(db) as client, new_worker(client):
        t0 = time.perf_counter()
        handles = await asyncio.gather(
            *(
                client.start_workflow(sleeper_workflow, d, id=f"sleep-{i}")
                for i, d in enumerate(durations)
            )
        )
        results: list[list[float]] = await asyncio.gather(*(result_of(h) for h in handles))
        res.wall_s = time.perf_counter() - t0
    observed = [(obs - intended) * 1000.0 for intended, _, obs in results]
    woke = [(wake - intended) * 1000.0 for intended, wake, _ in results]
    res.figures += [
        Figure("lateness p50 (activity after sleep)", percentile(observed, 50), "ms"),
        Figure("lateness p99 (activity after sleep)", percentile(observed, 99), "ms", 50.0),
        Figure("lateness max (activity after sleep)", max(observed), "ms"),
        Figure("lateness p99 (workflow.now() on waking)", percentile(woke, 99), "ms", 50.0),
        Figure("earliest wake vs fire time", min(woke), "ms"),
    ]
    res.notes.append(
        "intended fire time = workflow.now() before the sleep + duration (the timer's fire_at); "
        "'activity after sleep' = time.time() in an activity scheduled right after waking; "
        "'workflow.now() on waking' = start time of the workflow task that saw TimerFired "
        "(negative = fired early)"
    )
    return res


# -- 4. signal-to-completion latency ------------------------------------------------------------


async def signals(db: Path, *, count: int, warmup: int = 3) -> WorkloadResult:
    """One waiting workflow per measurement: time signal() + result()."""
    res = WorkloadResult(
        "signals", f"4. Signal → completion: {count} signals, one waiting workflow each"
    )
    latencies: list[float] = []
    async with connect(db) as client, new_worker(client):
        t_all = time.perf_counter()
        for i in range(warmup + count):
            h = await client.start_workflow(WaiterWorkflow.run, 0, id=f"sig-{i}")
            await wait_for_history(h, waiting_history_length(0), 0.001)
            await asyncio.sleep(0.005)  # let the worker file the run in its cache
            t0 = time.perf_counter()
            await h.signal(WaiterWorkflow.release)
            got = await result_of(h)
            if i >= warmup:
                latencies.append((time.perf_counter() - t0) * 1000.0)
            check("result", got, 0)
        res.wall_s = time.perf_counter() - t_all
    p50 = percentile(latencies, 50)
    res.figures += [
        Figure("signal → result p50", p50, "ms", 10.0, per_step_ms=p50),
        Figure("signal → result p99", percentile(latencies, 99), "ms"),
    ]
    res.notes.append(
        "the workflow is blocked on wait_condition (its first task recorded) before the timed "
        "handle.signal() + handle.result()"
    )
    return res


# -- 5. replay of a long history ----------------------------------------------------------------


async def replay_history(db: Path, *, steps: int, repeats: int) -> WorkloadResult:
    """Build a ``steps``-activity history by running it; time pure and cold-worker replay."""
    res = WorkloadResult("replay", f"5. Replay: history of {steps} sequential activities")
    defn = workflow_definition(WaiterWorkflow)
    assert defn is not None
    async with connect(db) as client:
        async with new_worker(client):
            t0 = time.perf_counter()
            h = await client.start_workflow(WaiterWorkflow.run, steps, id="long")
            await wait_for_history(h, waiting_history_length(steps), 0.01)
            res.wall_s = time.perf_counter() - t0
        # The worker is gone (and with it the cached instance): the history is all there is.
        t0 = time.perf_counter()
        events = await h.fetch_history()
        fetch_s = time.perf_counter() - t0
        check("history length", len(events), waiting_history_length(steps))
        replay_s: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            replay(defn, events)
            replay_s.append(time.perf_counter() - t0)
        # Determinism guards: the same replay with the guards and the deadlock watchdog off.
        unguarded_s: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            inst = new_instance(defn, events[0], determinism_guards=False, deadlock_timeout=None)
            advance(inst, events, events[-1].time)
            unguarded_s.append(time.perf_counter() - t0)
        tasks = sum(1 for e in events if e.type == EventType.WORKFLOW_TASK_COMPLETED) + 1
        async with new_worker(client):
            await asyncio.sleep(0.2)  # let it register and start polling
            t0 = time.perf_counter()
            await h.signal(WaiterWorkflow.release)
            got = await result_of(h)
            cold_s = time.perf_counter() - t0
        check("result", got, expected_total(steps))
    res.figures += [
        Figure("pure replay (best)", min(replay_s), "s", 0.5),
        Figure("pure replay (median)", percentile(replay_s, 50), "s", 0.5),
        Figure("replay per workflow task, guards on", min(replay_s) / tasks * 1e6, "µs"),
        Figure("replay per workflow task, guards off", min(unguarded_s) / tasks * 1e6, "µs"),
        Figure(
            "determinism guard overhead per workflow task",
            (min(replay_s) - min(unguarded_s)) / tasks * 1e6,
            "µs",
        ),
        Figure("fetch history from store", fetch_s, "s"),
        Figure("cold worker: signal → result (fetch + replay)", cold_s, "s"),
        Figure("building run: per-step latency (mean)", res.wall_s * 1000.0 / steps, "ms"),
    ]
    res.notes.append(
        f"history of {len(events)} events; pure replay = duro.runtime.replay.replay(defn, events), "
        f"best and median of {repeats} replays; cold worker = a fresh worker (empty cache) "
        "handles the signal that ends the run, so it fetches and replays the whole history"
    )
    return res
