"""The comparison's workloads, written once against a small adapter each system implements.

A runner (``duro_runner.py``, ``temporal_runner.py``, ``dbos_runner.py``) defines the same
workflows in its system's SDK — a ``steps`` workflow of N sequential activities, a ``parallel``
one of N activities at once, a ``sleeper`` (durable sleep, then an activity that reads the
clock) and a ``waiter`` (blocks until its signal) — and wraps starting, signalling and awaiting
them in an ``Adapter``. ``run_all`` times the same things for every system and checks every
result (a benchmark of a broken run measures nothing). It prints one JSON line of figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

SIGNAL_READY_SECONDS = 2.0
"""How long the waiters get to block on their signal before the first one is sent."""


@dataclass
class Sizes:
    sequential: int = 20
    fanout: int = 300
    fanout_steps: int = 5
    parallel: int = 200
    timers: int = 300
    timer_min: float = 1.0
    timer_max: float = 3.0
    signals: int = 100
    starts: int = 300

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            sequential=3, fanout=20, parallel=20, timers=20, timer_max=1.5, signals=5, starts=20
        )


class Adapter(Protocol):
    async def start_steps(self, workflow_id: str, steps: int) -> Any: ...

    async def start_parallel(self, workflow_id: str, count: int) -> Any: ...

    async def start_sleeper(self, workflow_id: str, seconds: float) -> Any: ...

    async def start_waiter(self, workflow_id: str) -> Any: ...

    async def signal(self, handle: Any, value: str) -> None: ...

    async def result(self, handle: Any) -> Any: ...


def steps_result(steps: int) -> int:
    """What the ``steps`` workflow returns: the sum of each step's activity, ``i + 1``."""
    return steps * (steps + 1) // 2


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _check(what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise RuntimeError(f"{what}: got {got!r}, expected {expected!r}")


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = await fn()
    return time.perf_counter() - t0, value


async def run_all(adapter: Adapter, sizes: Sizes, only: set[str] | None = None) -> dict[str, float]:
    """Every workload, in a fixed order; the figures by name."""
    figures: dict[str, float] = {}
    want = (lambda key: True) if not only else (lambda key: key in only)
    for i in range(3):  # warm-up: connections, caches, the first task of each kind
        _check("warm-up", await adapter.result(await adapter.start_steps(f"warm-{i}", 2)), 3)

    if want("sequential"):
        per_step = []
        for i in range(sizes.sequential):

            async def one(i: int = i) -> Any:
                return await adapter.result(await adapter.start_steps(f"seq-{i}", 10))

            seconds, value = await _timed(one)
            _check("sequential result", value, steps_result(10))
            per_step.append(seconds / 10)
        figures["sequential_p50_ms"] = percentile(per_step, 50) * 1000
        figures["sequential_p95_ms"] = percentile(per_step, 95) * 1000

    if want("fanout"):

        async def fan() -> list[Any]:
            handles = [
                await adapter.start_steps(f"fan-{i}", sizes.fanout_steps)
                for i in range(sizes.fanout)
            ]
            return [await adapter.result(h) for h in handles]

        seconds, values = await _timed(fan)
        _check("fan-out results", set(values), {steps_result(sizes.fanout_steps)})
        figures["fanout_steps_per_s"] = sizes.fanout * sizes.fanout_steps / seconds

    if want("parallel"):

        async def par() -> Any:
            return await adapter.result(await adapter.start_parallel("par", sizes.parallel))

        seconds, value = await _timed(par)
        _check("parallel result", value, steps_result(sizes.parallel))
        figures["parallel_activities_per_s"] = sizes.parallel / seconds

    if want("timers"):
        rng = random.Random(7)
        durations = [rng.uniform(sizes.timer_min, sizes.timer_max) for _ in range(sizes.timers)]
        handles = [await adapter.start_sleeper(f"timer-{i}", d) for i, d in enumerate(durations)]
        lateness = []
        for h in handles:
            intended, observed = await adapter.result(h)
            lateness.append(observed - intended)
        figures["timer_lateness_p50_ms"] = percentile(lateness, 50) * 1000
        figures["timer_lateness_p99_ms"] = percentile(lateness, 99) * 1000

    if want("signals"):
        waiters = [await adapter.start_waiter(f"waiter-{i}") for i in range(sizes.signals)]
        await asyncio.sleep(SIGNAL_READY_SECONDS)
        latencies = []
        for i, h in enumerate(waiters):

            async def sig(h: Any = h, i: int = i) -> Any:
                await adapter.signal(h, f"go-{i}")
                return await adapter.result(h)

            seconds, value = await _timed(sig)
            _check("signal result", value, f"go-{i}")
            latencies.append(seconds)
        figures["signal_p50_ms"] = percentile(latencies, 50) * 1000
        figures["signal_p99_ms"] = percentile(latencies, 99) * 1000

    if want("starts"):

        async def starts() -> list[Any]:
            return [await adapter.start_steps(f"start-{i}", 1) for i in range(sizes.starts)]

        seconds, handles = await _timed(starts)
        figures["starts_per_s"] = sizes.starts / seconds
        for h in handles:  # let them finish, so the system is idle when the runner exits
            _check("start result", await adapter.result(h), 1)
    return figures


def emit(system: str, figures: dict[str, float], sizes: Sizes, **extra: Any) -> None:
    """The runner's one line of output, read by compare.py."""
    line = {"system": system, "figures": figures, "sizes": asdict(sizes), **extra}
    sys.stdout.write("RESULT " + json.dumps(line) + "\n")
    sys.stdout.flush()


def parse_sizes(text: str | None) -> Sizes:
    return Sizes(**json.loads(text)) if text else Sizes()
