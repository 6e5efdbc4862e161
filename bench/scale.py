"""duro on PostgreSQL with 1, 2 and 4 worker processes: throughput, step latency, and where
the CPU goes.

Usage::

    python bench/scale.py                       # 3 repeats; PostgreSQL on 127.0.0.1:5432,
                                                # else a private throwaway cluster (initdb)
    python bench/scale.py --quick               # small sizes, 1 repeat: checks the bench works
    python bench/scale.py --out docs/benchmarks.md   # (re)writes the PostgreSQL section there

For each worker count, on a fresh database: the client (this process) starts the runs and the
workers (``scale_worker.py`` subprocesses) run them.

- fan-out: ``--fanout`` five-step workflows started at once; steps (activities) per second from
  the first start to the last result.
- sequential: ``--sequential`` ten-step workflows one after another; the latency of a step is
  the time between consecutive ``ActivityTaskCompleted`` events of a run (workflow task,
  activity, and their hand-offs through the database), reported as p50 and p99.
- CPU: during the fan-out, how busy the machine's cores were, split between the worker
  processes, this process (the client) and the rest (PostgreSQL's backends, mostly); this is
  what says whether PostgreSQL or the workers bound the throughput.

Each figure is the median of the repeats (best and worst in brackets). Nothing here asserts on
time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import pg_floor  # noqa: E402
import sections  # noqa: E402
import workloads  # noqa: E402

from duro import Client, EventType  # noqa: E402
from tests.pg_server import PgServer, find_or_start  # noqa: E402

WORKER_COUNTS = (1, 2, 4)


@dataclass
class Sample:
    workers: int
    fanout_steps_per_s: float
    step_p50_ms: float
    step_p99_ms: float
    cpu_busy: float
    """Fraction of all cores busy during the fan-out."""
    cpu_workers: float
    cpu_client: float
    cpu_other: float
    tx_per_step: float
    """The workers' store transactions per step, over the whole measurement."""
    empty_polls_per_step: float


@dataclass
class Sizes:
    fanout: int = 300
    sequential: int = 30
    steps: int = 5


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _proc_ticks(pid: int) -> int:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(parts[11]) + int(parts[12])  # utime + stime


class WorkerPool:
    def __init__(self, db: str, count: int, tmp: Path) -> None:
        self.ready = tmp / f"ready-{count}"
        command = [sys.executable, str(HERE / "scale_worker.py"), "--db", db]
        command += ["--ready", str(self.ready)]
        self.stats = [tmp / f"stats-{count}-{i}.json" for i in range(count)]
        self.procs = [
            subprocess.Popen([*command, "--stats", str(path)], cwd=ROOT) for path in self.stats
        ]

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while not self.ready.exists() or len(self.ready.read_text().split()) < len(self.procs):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError("a bench worker did not start")
            await asyncio.sleep(0.05)

    def ticks(self) -> int:
        return sum(_proc_ticks(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)

    def counts(self) -> Counter[str]:
        """The workers' store transactions by operation (each wrote them at exit)."""
        total: Counter[str] = Counter()
        for path in self.stats:
            total.update(json.loads(path.read_text()))
        return total


async def measure(server: PgServer, workers: int, sizes: Sizes, tmp: Path) -> Sample:
    name = server.create_database()
    db = server.url(name)
    pool = None
    client = await Client.connect(db)
    try:
        pool = WorkerPool(db, workers, tmp)
        await pool.wait_ready()
        # Warm-up: every worker's caches and connections.
        warm = [
            await client.start_workflow(workloads.steps_workflow, 2, id=f"warm-{i}")
            for i in range(4 * workers)
        ]
        for h in warm:
            await workloads.result_of(h)

        # Fan-out, with the CPU split and the database's commits.
        busy0, total0 = _cpu_ticks()
        w0, c0 = pool.ticks(), _proc_ticks(os.getpid())
        t0 = time.perf_counter()
        handles = [
            await client.start_workflow(workloads.steps_workflow, sizes.steps, id=f"fan-{i}")
            for i in range(sizes.fanout)
        ]
        for h in handles:
            workloads.check(
                "fan-out result",
                await workloads.result_of(h),
                workloads.expected_total(sizes.steps),
            )
        elapsed = time.perf_counter() - t0
        busy1, total1 = _cpu_ticks()
        w1, c1 = pool.ticks(), _proc_ticks(os.getpid())
        all_ticks = max(1, total1 - total0)
        busy = busy1 - busy0
        cpu_workers = (w1 - w0) / all_ticks
        cpu_client = (c1 - c0) / all_ticks
        cpu_other = max(0.0, busy / all_ticks - cpu_workers - cpu_client)

        # Sequential step latency, from the history of each run.
        gaps: list[float] = []
        for i in range(sizes.sequential):
            h = await client.start_workflow(workloads.steps_workflow, 10, id=f"seq-{i}")
            workloads.check("sequential result", await workloads.result_of(h), 55)
            times = [
                e.time
                for e in await h.fetch_history()
                if e.type == EventType.ACTIVITY_TASK_COMPLETED
            ]
            gaps += [b - a for a, b in itertools.pairwise(times)]
        sample = Sample(
            workers=workers,
            fanout_steps_per_s=sizes.fanout * sizes.steps / elapsed,
            step_p50_ms=workloads.percentile(gaps, 50) * 1000,
            step_p99_ms=workloads.percentile(gaps, 99) * 1000,
            cpu_busy=busy / all_ticks,
            cpu_workers=cpu_workers,
            cpu_client=cpu_client,
            cpu_other=cpu_other,
            tx_per_step=0.0,  # filled in once the workers have exited and told
            empty_polls_per_step=0.0,
        )
    finally:
        if pool is not None:
            pool.stop()
        await client.close()
        server.drop_database(name)
    assert pool is not None
    counts = pool.counts()
    steps = 4 * workers * 2 + sizes.fanout * sizes.steps + sizes.sequential * 10
    sample.tx_per_step = sum(v for k, v in counts.items() if ":" not in k) / steps
    sample.empty_polls_per_step = sum(v for k, v in counts.items() if k.endswith(":empty")) / steps
    return sample


@dataclass
class Row:
    workers: int
    samples: list[Sample] = field(default_factory=list)

    def stat(self, attr: str) -> tuple[float, float, float]:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values), min(values), max(values)


def _fmt(stat: tuple[float, float, float], fmt: str) -> str:
    med, lo, hi = stat
    if lo == hi:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)} to {fmt.format(hi)})"


def _pct(stat: tuple[float, float, float]) -> str:
    return f"{stat[0] * 100:.0f}%"


def table(rows: list[Row], sizes: Sizes) -> list[str]:
    base = rows[0].stat("fanout_steps_per_s")[0]
    lines = [
        f"| worker processes | fan-out steps/s ({sizes.fanout} x {sizes.steps} steps) "
        "| vs 1 worker | step p50 | step p99 | worker transactions/step (empty polls) "
        "| CPU busy | workers | client "
        "| PostgreSQL + rest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        steps = row.stat("fanout_steps_per_s")
        lines.append(
            f"| {row.workers} | {_fmt(steps, '{:,.0f}')} | {steps[0] / base:.2f}x "
            f"| {_fmt(row.stat('step_p50_ms'), '{:.2f}')} ms "
            f"| {_fmt(row.stat('step_p99_ms'), '{:.2f}')} ms "
            f"| {row.stat('tx_per_step')[0]:.2f} ({row.stat('empty_polls_per_step')[0]:.2f}) "
            f"| {_pct(row.stat('cpu_busy'))} | {_pct(row.stat('cpu_workers'))} "
            f"| {_pct(row.stat('cpu_client'))} | {_pct(row.stat('cpu_other'))} |"
        )
    return lines


async def _floor(server: PgServer, steps: int, shape: str = pg_floor.ONE_STATEMENT) -> float:
    name = server.create_database()
    try:
        return await pg_floor.measure(server.url(name), steps=steps, shape=shape)
    finally:
        server.drop_database(name)


def markdown(
    rows: list[Row],
    sizes: Sizes,
    repeats: int,
    server: PgServer,
    floor_us: float,
    statements_floor_us: float,
) -> str:
    version = server.psql("SHOW server_version").strip()
    cores = os.cpu_count()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            "## PostgreSQL: 1, 2 and 4 worker processes",
            "",
            f"Generated by `python bench/scale.py` on {when}: PostgreSQL {version} on the same "
            f"machine ({cores} cores, {model}), every process on that machine. Median of "
            f"{repeats} repeats (range in brackets), a fresh database per measurement. Step "
            "latency is the time between consecutive `ActivityTaskCompleted` events of a "
            f"sequential 10-step run ({sizes.sequential} runs); CPU is the share of all cores "
            "during the fan-out.",
            "",
            *table(rows, sizes),
            "",
            f"Store floor (`bench/pg_floor.py`: the raw writes of a step as one statement, "
            f"one connection, in a tight loop): {floor_us:,.0f} µs per step. duro's sequential "
            f"step p50 with one worker is {rows[0].stat('step_p50_ms')[0] * 1000 / floor_us:.1f}x "
            "that floor. The same writes as four statements in `BEGIN`/`COMMIT` (six round "
            f"trips): {statements_floor_us:,.0f} µs per step; duro's p50 is "
            f"{rows[0].stat('step_p50_ms')[0] * 1000 / statements_floor_us:.1f}x that.",
            "",
            "Reading it: every process shares the machine's two cores, and one worker already "
            "keeps them nearly busy (CPU column), PostgreSQL's backends taking as much as the "
            "worker; so added worker processes cannot add throughput here, they can only cost "
            "it. Part of what they cost shows in the transactions column: a new task wakes "
            "every worker's poller (`NOTIFY` reaches all listeners) and all but one of those "
            "polls come back empty. "
            "Where workers run on machines of their own, only PostgreSQL's share stays on the "
            "database host.",
        ]
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="markdown file to (re)write the section in")
    args = parser.parse_args()
    sizes = Sizes(fanout=60, sequential=5) if args.quick else Sizes()
    repeats = 1 if args.quick else args.repeat
    server = find_or_start()
    rows = [Row(n) for n in WORKER_COUNTS]
    floors: list[float] = []
    statements_floors: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="duro-scale-") as tmp:
            for r in range(repeats):
                for row in rows:
                    if row.workers == 1:
                        steps = 500 if args.quick else 2000
                        floors.append(await _floor(server, steps))
                        statements_floors.append(await _floor(server, steps, pg_floor.STATEMENTS))
                    run_dir = Path(tmp) / f"r{r}"
                    run_dir.mkdir(exist_ok=True)
                    sample = await measure(server, row.workers, sizes, run_dir)
                    row.samples.append(sample)
                    print(
                        f"repeat {r + 1}: {row.workers} worker(s): "
                        f"{sample.fanout_steps_per_s:,.0f} steps/s, step p50 "
                        f"{sample.step_p50_ms:.2f} ms p99 {sample.step_p99_ms:.2f} ms, CPU "
                        f"{sample.cpu_busy:.0%} (workers {sample.cpu_workers:.0%}, client "
                        f"{sample.cpu_client:.0%}, other {sample.cpu_other:.0%}), "
                        f"{sample.tx_per_step:.2f} worker transactions/step "
                        f"({sample.empty_polls_per_step:.2f} empty polls)",
                        flush=True,
                    )
        section = markdown(
            rows,
            sizes,
            repeats,
            server,
            statistics.median(floors),
            statistics.median(statements_floors),
        )
    finally:
        server.stop()
    print()
    print("\n".join(table(rows, sizes)))
    print(
        f"store floor {statistics.median(floors):,.0f} µs/step (one statement), "
        f"{statistics.median(statements_floors):,.0f} µs/step (four statements)"
    )
    if args.out:
        sections.write(args.out, "scale.py", section)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
