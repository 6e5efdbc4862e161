"""duro's core benchmark: latency, throughput, timers, signals, replay, and the store floor.

Usage::

    python bench/core.py                  # full run, 3 repeats (on an idle machine; ~1 min)
    python bench/core.py --quick          # small sizes, 1 repeat: checks the bench works
    python bench/core.py --repeat 5 --out docs/benchmarks.md
    python bench/core.py --only sequential,floor
    python bench/core.py --profile fanout # cProfile one workload, time in store transactions

Every workload runs on a fresh SQLite file with the client and one worker in this process.
The suite runs ``--repeat`` times in the same order (floor, then workloads); each figure is
reported as the median of the repeats with the best and the worst, beside the targets of the
project's issue and as a multiple of the same repeat's store floor (``floor.py``). Nothing here
asserts on time: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import io
import logging
import os
import platform
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import floor
import sections
import workloads
from rich.console import Console
from rich.table import Table
from workloads import Figure, WorkloadResult

import duro

FLOOR_TARGET = 3.0
"""duro's per-step cost should be within this multiple of the store floor."""
SLOW_TRANSACTION = 0.005
"""``--profile`` counts transactions slower than this (seconds)."""

PEERS = [
    # (system, per sequential step, fan-out steps/s, signal latency)
    ("Temporal (dev server on SQLite + Python SDK)", "~55 ms", "28-34", "—"),
    ("DBOS on SQLite", "5-8 ms", "108-133", "~1 s"),
]
PEERS_NOTE = (
    "Peer figures were measured by others on the same kind of machine, not by us and not by "
    "this script; they are context, not a controlled comparison."
)


@dataclass(frozen=True)
class Sizes:
    sequential: int
    fanout: int
    timers: int
    signals: int
    replay_steps: int
    replay_repeats: int
    floor_steps: int


FULL = Sizes(
    sequential=50,
    fanout=300,
    timers=300,
    signals=100,
    replay_steps=2000,
    replay_repeats=5,
    floor_steps=20_000,
)
QUICK = Sizes(  # fan-out and timers above the worker's 64 workflow-task slots on purpose
    sequential=10,
    fanout=100,
    timers=100,
    signals=20,
    replay_steps=2000,
    replay_repeats=2,
    floor_steps=2_000,
)

Runner = Callable[[Path, Sizes], Coroutine[Any, Any, WorkloadResult]]

WORKLOADS: dict[str, Runner] = {
    "sequential": lambda db, s: workloads.sequential(db, workflows=s.sequential),
    "fanout": lambda db, s: workloads.fanout(db, workflows=s.fanout),
    "timers": lambda db, s: workloads.timers(db, workflows=s.timers),
    "signals": lambda db, s: workloads.signals(db, count=s.signals),
    "replay": lambda db, s: workloads.replay_history(
        db, steps=s.replay_steps, repeats=s.replay_repeats
    ),
}
ALL = [*WORKLOADS, "floor"]


# -- machine ------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _filesystem(path: str) -> str:
    """The type of the filesystem holding ``path`` (the temp databases live there)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and real.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return kind


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return " / ".join(f"{x:.2f}" for x in load)


def machine(db_dir: str) -> dict[str, str]:
    return {
        "Date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": _cpu_model(),
        "Logical cores": str(os.cpu_count()),
        "RAM": _ram(),
        "OS": platform.platform(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite": sqlite3.sqlite_version,
        "duro": f"{duro.__version__} ({_git_commit()})",
        "Database directory": f"{db_dir}, {_filesystem(db_dir)}",
        "Load average at start": load_average(),
    }


# -- running ------------------------------------------------------------------------------------


@dataclass
class Repeat:
    """One pass over the selected workloads and the floor, each on a fresh database file."""

    results: list[WorkloadResult] = field(default_factory=list)
    floor2: floor.FloorResult | None = None
    floor1: floor.FloorResult | None = None

    def result(self, key: str) -> WorkloadResult | None:
        return next((r for r in self.results if r.key == key), None)


@contextmanager
def fresh_db(db_dir: str, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="duro-bench-", dir=db_dir) as d:
        yield Path(d) / f"{name}.db"


def run_floor(rep: Repeat, sizes: Sizes, db_dir: str, console: Console) -> None:
    console.print(f"[dim]6. store floor: {sizes.floor_steps} steps x 2 variants…[/dim]")
    with fresh_db(db_dir, "floor2") as db:
        rep.floor2 = floor.measure(db, steps=sizes.floor_steps, transactions_per_step=2)
    with fresh_db(db_dir, "floor1") as db:
        rep.floor1 = floor.measure(db, steps=sizes.floor_steps, transactions_per_step=1)


async def run_workloads(
    rep: Repeat, keys: list[str], sizes: Sizes, db_dir: str, console: Console
) -> None:
    for key in keys:
        console.print(f"[dim]{key}…[/dim]")
        with fresh_db(db_dir, key) as db:
            t0 = time.perf_counter()
            res = await WORKLOADS[key](db, sizes)
            console.print(f"[dim]  done in {time.perf_counter() - t0:.1f} s[/dim]")
        rep.results.append(res)


def run_repeat(keys: list[str], sizes: Sizes, db_dir: str, console: Console) -> Repeat:
    """The floor first, then the workloads in ``ALL`` order: the same order in every repeat."""
    rep = Repeat()
    if "floor" in keys:
        run_floor(rep, sizes, db_dir, console)
    asyncio.run(run_workloads(rep, [k for k in WORKLOADS if k in keys], sizes, db_dir, console))
    return rep


# -- aggregating --------------------------------------------------------------------------------


def floor_figures(rep: Repeat) -> list[Figure]:
    """The floor section of one repeat; the ÷ floor multiples use that repeat's own floor."""
    if rep.floor2 is None or rep.floor1 is None:
        return []
    f2, f1 = rep.floor2, rep.floor1
    figures = [
        Figure("raw writes, 1 transaction/step (as duro, run cached)", f1.us_per_step, "µs"),
        Figure("raw writes, 2 transactions/step (run not cached)", f2.us_per_step, "µs"),
        Figure("1 tx/step: commits > 1 ms (WAL checkpoints)", f1.slow_commits, "commits"),
        Figure(
            "1 tx/step: share of time in those commits",
            100.0 * f1.slow_commit_s * 1e6 / (f1.us_per_step * f1.steps),
            "%",
        ),
        Figure("1 tx/step without the slow commits", f1.us_per_step_without_checkpoints, "µs"),
    ]
    seq = rep.result("sequential")
    if seq is not None:
        for f in seq.figures:
            if f.per_step_ms is not None:
                multiple = f.per_step_ms * 1000.0 / f1.us_per_step
                figures.append(Figure(f"duro {f.name} ÷ floor", multiple, "x", FLOOR_TARGET))
    return figures


def repeat_sections(rep: Repeat, sizes: Sizes) -> list[tuple[str, str, list[Figure]]]:
    """(key, title, figures) of every section of one repeat, in report order."""
    sections = [(r.key, r.title, r.figures) for r in rep.results]
    figures = floor_figures(rep)
    if figures:
        sections.append(("floor", f"6. Store floor: {sizes.floor_steps:,} steps", figures))
    return sections


@dataclass(frozen=True)
class Aggregate:
    """One figure across the repeats."""

    figure: Figure
    """The first repeat's figure: its name, unit, target and direction (its value is unused)."""
    values: list[float]
    """The figure in each repeat, in the order they ran."""
    vs_floor: list[float]
    """In each repeat, the per-step cost the figure implies ÷ that repeat's floor (1 tx/step);
    empty when the figure implies no per-step cost or the floor did not run."""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        return max(self.values) if self.figure.higher_is_better else min(self.values)

    @property
    def worst(self) -> float:
        return min(self.values) if self.figure.higher_is_better else max(self.values)

    @property
    def spread(self) -> float | None:
        return spread(self.values)

    @property
    def vs_floor_median(self) -> float | None:
        return statistics.median(self.vs_floor) if self.vs_floor else None

    @property
    def summary(self) -> Figure:
        """The figure at its median: what the target, ÷ target and meets columns judge."""
        return replace(self.figure, value=self.median)

    def verdicts_differ(self) -> bool:
        """Whether the best and the worst repeat fall on different sides of the target."""
        best, worst = replace(self.figure, value=self.best), replace(self.figure, value=self.worst)
        return best.meets() != worst.meets()


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    figures: list[Aggregate]

    def pick(self, name: str) -> Aggregate | None:
        return next((a for a in self.figures if a.figure.name == name), None)


def aggregate(repeats: Sequence[Repeat], sizes: Sizes) -> list[Section]:
    """Line up the same figure of every repeat (they run the same workloads in the same order)."""
    per_repeat = [repeat_sections(rep, sizes) for rep in repeats]
    floors = [rep.floor1.us_per_step if rep.floor1 is not None else None for rep in repeats]
    out: list[Section] = []
    for s, (key, title, figures) in enumerate(per_repeat[0]):
        aggregates: list[Aggregate] = []
        for i, first in enumerate(figures):
            same = [sections[s][2][i] for sections in per_repeat]
            if any(sections[s][1] != title for sections in per_repeat) or any(
                f.name != first.name for f in same
            ):
                raise RuntimeError(f"repeats disagree on the figures of {title!r}")
            vs_floor = [
                f.per_step_ms * 1000.0 / floor_us
                for f, floor_us in zip(same, floors, strict=True)
                if f.per_step_ms is not None and floor_us is not None
            ]
            aggregates.append(Aggregate(first, [f.value for f in same], vs_floor))
        out.append(Section(key, title, aggregates))
    return out


@dataclass
class Report:
    sizes: Sizes
    quick: bool
    machine: dict[str, str]
    repeats: list[Repeat]

    @cached_property
    def sections(self) -> list[Section]:
        return aggregate(self.repeats, self.sizes)

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)

    def pick(self, key: str, name: str) -> Aggregate | None:
        section = self.section(key)
        return section.pick(name) if section is not None else None

    @property
    def ranged(self) -> bool:
        """More than one repeat: report best and worst beside the median."""
        return len(self.repeats) > 1


# -- presenting ---------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "steps/s":
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "µs":
        return f"{value:,.1f} µs"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "commits":
        return f"{value:,.0f}"
    return f"{value:.2f} {unit}"


def fmt_target(f: Figure) -> str:
    if f.target is None:
        return ""
    return ("≥ " if f.higher_is_better else "≤ ") + fmt(f.target, f.unit)


def headers(report: Report) -> tuple[str, ...]:
    values = ("Median", "Best", "Worst") if report.ranged else ("Value",)
    return ("Workload", "Figure", *values, "Target", "÷ target", "Meets", "x floor")


def rows(report: Report) -> list[tuple[str, ...]]:
    """One row per figure, in the columns of ``headers(report)``."""
    out: list[tuple[str, ...]] = []
    for section in report.sections:
        for i, agg in enumerate(section.figures):
            f = agg.summary
            ratio, meets, vs_floor = f.of_target(), f.meets(), agg.vs_floor_median
            values = [fmt(agg.median, f.unit)]
            if report.ranged:
                values += [fmt(agg.best, f.unit), fmt(agg.worst, f.unit)]
            out.append(
                (
                    section.title if i == 0 else "",
                    f.name,
                    *values,
                    fmt_target(f),
                    "" if ratio is None else f"{ratio:.2f}",
                    "" if meets is None else ("yes" if meets else "NO"),
                    "" if vs_floor is None else f"{vs_floor:.1f}x",
                )
            )
    return out


def aggregation_note(report: Report) -> str:
    """How the figures were aggregated, and what the columns mean."""
    n = len(report.repeats)
    x_floor = (
        "*x floor*: the per-step cost a figure implies (latency, or 1 / throughput) divided by "
        "the store floor with 1 transaction per step (duro's shape with the run cached)"
    )
    if not report.ranged:
        return (
            f"One repeat: every figure is that run's. *÷ target*: figure / target (≤ 1 is good "
            f"for a latency, ≥ 1 for a throughput). {x_floor}."
        )
    return (
        f"{n} repeats in this one process; each ran the selected workloads (the store floor "
        "first, when selected) in the same order, each on a fresh SQLite file. *Median*: the "
        "median over the repeats of each figure (itself a percentile, mean or total within its "
        "repeat; with an even number of repeats, the mean of the middle two). *Best* and "
        "*Worst*: the best and worst repeat (highest throughput; lowest for everything else). "
        "*Target*, *÷ target* (median / target: ≤ 1 is good for a latency, ≥ 1 for a "
        f"throughput) and *Meets* judge the median. {x_floor} of the same repeat, median over "
        "the repeats; the *duro … ÷ floor* figures likewise."
    )


def spread(values: Sequence[float]) -> float | None:
    """(highest - lowest) / median, as a fraction; None for one value or a zero median."""
    if len(values) < 2 or statistics.median(values) == 0:
        return None
    return (max(values) - min(values)) / abs(statistics.median(values))


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100.0 * fraction:.0f}%"


def _short(title: str) -> str:
    """'1. Sequential: 50 x ...' -> '1. Sequential'."""
    return title.split(":")[0]


def variance(report: Report) -> list[str]:
    """A few sentences, from the data, on how noisy the machine was during the run."""
    n = len(report.repeats)
    load = (
        f"Load average (1 / 5 / 15 min): {report.machine['Load average at start']} at the start, "
        f"{report.machine.get('Load average at end', 'unknown')} at the end."
    )
    if n == 1:
        return [
            "One repeat only, so this report has no measure of how noisy the machine was; "
            "use `--repeat 3` or more for figures to rely on.",
            load,
        ]
    out = [f"Spread below = (highest - lowest) / median over the {n} repeats."]
    floor_section = report.section("floor")
    for name, label in (
        (
            "raw writes, 1 transaction/step (as duro, run cached)",
            "With 1 transaction per step (as duro with the run cached), the store floor took",
        ),
        ("raw writes, 2 transactions/step (run not cached)", "With 2, it took"),
    ):
        agg = floor_section.pick(name) if floor_section is not None else None
        if agg is not None:
            each = ", ".join(f"{v:,.1f}" for v in agg.values)
            out.append(
                f"{label} {each} µs per step in the order the repeats ran: "
                f"a spread of {_pct(agg.spread)} around the median of {fmt(agg.median, 'µs')}."
            )
    for key, name, label in (
        ("sequential", "per-step latency p50", "Sequential per-step p50"),
        ("fanout", "throughput", "Fan-out throughput"),
        ("signals", "signal → result p50", "Signal → result p50"),
    ):
        agg = report.pick(key, name)
        if agg is None:
            continue
        text = f"{label}: spread {_pct(agg.spread)}"
        if agg.vs_floor:
            text += f"; as a multiple of the same repeat's floor, {_pct(spread(agg.vs_floor))}"
        out.append(text + ".")
    targeted = [
        (agg.spread, agg.figure.name, _short(section.title))
        for section in report.sections
        for agg in section.figures
        if agg.figure.target is not None and agg.spread is not None
    ]
    if targeted:
        widest, name, where = max(targeted)
        out.append(f"Widest spread of a figure with a target: {name} ({where}), {_pct(widest)}.")
    flips = [
        f"{agg.figure.name} ({_short(section.title)})"
        for section in report.sections
        for agg in section.figures
        if agg.figure.target is not None and agg.verdicts_differ()
    ]
    if flips:
        out.append(
            "The best and the worst repeat fall on different sides of the target for: "
            + "; ".join(flips)
            + "; on this machine those verdicts are too close to call."
        )
    elif targeted:
        out.append("No figure's best and worst repeat fall on different sides of its target.")
    out.append(load)
    return out


def peer_rows(report: Report) -> list[tuple[str, str, str, str]]:
    step = report.pick("sequential", "per-step latency p50")
    rate = report.pick("fanout", "throughput")
    sig = report.pick("signals", "signal → result p50")
    which = f"median of {len(report.repeats)} repeats" if report.ranged else "this run"
    ours = (
        f"duro ({which}, SQLite, 1 worker)",
        fmt(step.median, "ms") if step else "—",
        f"{rate.median:,.0f}" if rate else "—",
        fmt(sig.median, "ms") if sig else "—",
    )
    return [ours, *PEERS]


PEER_HEADERS = ("System", "Per sequential step", "Fan-out steps/s", "Signal latency")


def print_report(report: Report, console: Console) -> None:
    n = len(report.repeats)
    title = f"duro core benchmark, {n} repeat{'s' if n > 1 else ''}" + (
        " (--quick: sizes too small to mean much)" if report.quick else ""
    )
    cols = headers(report)
    meets = cols.index("Meets")
    table = Table(title=title)
    for h in cols[1:]:
        table.add_column(h, justify="left" if h == "Figure" else "right")
    for row in rows(report):
        if row[0]:
            table.add_section()
            table.add_row(row[0], style="bold")
        table.add_row(*row[1:], style="red" if row[meets] == "NO" else None)
    console.print(table)
    console.print(aggregation_note(report).replace("*", ""), style="dim")
    console.print("\n[bold]Variance[/bold]: " + " ".join(variance(report)).replace("`", ""))
    peers = Table(title="Peers for context (measured by others, not by us)")
    for h in PEER_HEADERS:
        peers.add_column(h)
    for prow in peer_rows(report):
        peers.add_row(*prow)
    console.print(peers)


def markdown(report: Report, command: str) -> str:
    def table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in body]
        return lines

    n = len(report.repeats)
    out = ["# duro benchmarks", ""]
    out.append(f"Generated by `{command}` on {report.machine['Date']}.")
    if report.ranged:
        out.append(
            f"Every figure is the median of {n} repeats, shown with the best and the worst; "
            "targets are judged on the median."
        )
    else:
        out.append("A single repeat: the figures are one run's, with no measure of variance.")
    if report.quick:
        out += ["", "**Quick run: sizes are too small for these numbers to mean much.**"]
    out += ["", "## Machine", ""]
    out += table(("", ""), list(report.machine.items()))
    out += ["", "## Results", ""]
    out += table(headers(report), rows(report))
    out += ["", aggregation_note(report), "", "## Variance", "", " ".join(variance(report))]
    out += [
        "",
        "## Method",
        "",
        "Every workload runs on a fresh SQLite file (WAL, synchronous=NORMAL), with the client "
        "and one worker in the same process; activities are trivial `async` functions. "
        f"{n} repeat{'s' if n > 1 else ''}, one after another in one process; each runs the "
        "store floor (when selected), then the workloads in the order below.",
        "",
    ]
    for r in report.repeats[0].results:
        walls = [res.wall_s for rep in report.repeats if (res := rep.result(r.key)) is not None]
        wall = f"{statistics.median(walls):.2f} s" + (" median" if report.ranged else "")
        out.append(f"- **{r.title}** ({wall}). " + " ".join(r.notes))
    out.append(
        "- **6. Store floor.** The writes a sequential step needs, done directly with `sqlite3` "
        "on duro's schema with the store's pragmas. As duro writes a step with the run cached, "
        "one transaction: delete the activity task, append ActivityTaskCompleted + "
        "WorkflowTaskCompleted + ActivityTaskScheduled, update the execution, insert the next "
        "activity task. And as without the run cached, two: append WorkflowTaskCompleted + "
        "ActivityTaskScheduled, update the execution, delete the workflow task, insert the "
        "activity task; then delete the activity task, append ActivityTaskCompleted, update the "
        "execution, insert the workflow task. No reads, leases or engine."
    )
    out += ["", "## Peers, for context", "", PEERS_NOTE, ""]
    out += table(PEER_HEADERS, peer_rows(report))
    out += [
        "",
        "## Reproduce",
        "",
        "```",
        "python bench/core.py --repeat 3 --out docs/benchmarks.md   # on an idle machine",
        "```",
        "",
    ]
    return "\n".join(out)


# -- profiling ----------------------------------------------------------------------------------


@dataclass
class _TxStats:
    """What the store's transactions cost while a workload runs (``--profile``)."""

    transactions: int = 0
    operations: int = 0
    seconds: float = 0.0
    longest: float = 0.0
    slow: int = 0
    off_main_thread: bool = False


def _instrument_store(stats: _TxStats, thread_prof: cProfile.Profile) -> Callable[[], None]:
    """Time every group-committed transaction of ``duro.store.sqlite``; returns an undo.

    Hooks the store's private ``_execute_batch`` (the one place a transaction runs, on the event
    loop or on the writer thread); without it, only the cProfile listing is shown.
    """
    from duro.store import sqlite as sqlite_store

    original = getattr(sqlite_store, "_execute_batch", None)
    if original is None:
        return lambda: None
    main = threading.main_thread()

    def execute_batch(store: Any, conn: sqlite3.Connection, batch: list[Any], *rest: Any) -> Any:
        in_thread = threading.current_thread() is not main
        t0 = time.perf_counter()
        if in_thread:  # the main profiler does not see other threads (before Python 3.12)
            stats.off_main_thread = True
            with contextlib.suppress(ValueError):
                thread_prof.enable()
        try:
            return original(store, conn, batch, *rest)
        finally:
            if in_thread:
                thread_prof.disable()
            took = time.perf_counter() - t0
            stats.transactions += 1
            stats.operations += len(batch)
            stats.seconds += took
            stats.longest = max(stats.longest, took)
            stats.slow += took > SLOW_TRANSACTION

    sqlite_store._execute_batch = execute_batch

    def undo() -> None:
        sqlite_store._execute_batch = original

    return undo


def _print_top(label: str, prof: cProfile.Profile, top: int, console: Console) -> None:
    buf = io.StringIO()
    try:
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    except TypeError:  # nothing was recorded
        return
    console.print(f"\n[bold]Top {top} by tottime: {label}[/bold]")
    console.print(buf.getvalue().strip(), markup=False, highlight=False)


def profile(key: str, sizes: Sizes, db_dir: str, top: int, console: Console) -> None:
    """Run one workload under cProfile, with the time spent in store transactions."""
    stats = _TxStats()
    thread_prof = cProfile.Profile()
    main_prof = cProfile.Profile()
    undo = _instrument_store(stats, thread_prof)
    try:
        with fresh_db(db_dir, key) as db:
            t0 = time.perf_counter()
            main_prof.enable()
            try:
                result = asyncio.run(WORKLOADS[key](db, sizes))
            finally:
                main_prof.disable()
            wall = time.perf_counter() - t0
    finally:
        undo()
    for f in result.figures:
        console.print(f"{result.title}: {f.name} = {fmt(f.value, f.unit)} (under the profiler)")
    if stats.transactions:
        where = "the writer thread" if stats.off_main_thread else "the event loop"
        console.print(
            f"wall {wall:.2f} s; {stats.transactions} store transactions on {where}, "
            f"{stats.operations / stats.transactions:.2f} operations each, "
            f"{stats.seconds:.2f} s in them ({100 * stats.seconds / wall:.0f}% of wall); "
            f"longest {stats.longest * 1000:.1f} ms; {stats.slow} over "
            f"{SLOW_TRANSACTION * 1000:.0f} ms"
        )
    _print_top("event-loop thread", main_prof, top, console)
    if stats.off_main_thread:
        _print_top("SQLite writer thread (inside transactions)", thread_prof, top, console)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the bench")
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="run the suite N times in this process and report the median, best and worst "
        "(default: 3; 1 with --quick)",
    )
    parser.add_argument("--out", type=Path, help="write a Markdown report to this file")
    parser.add_argument(
        "--only", help=f"comma-separated subset of: {', '.join(ALL)} (default: all)"
    )
    parser.add_argument(
        "--profile", choices=list(WORKLOADS), help="cProfile one workload instead of the suite"
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed by --profile")
    parser.add_argument(
        "--dir", default=tempfile.gettempdir(), help="where the temporary databases go"
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.profile and args.repeat not in (None, 1):
        parser.error("--profile runs its workload once; leave out --repeat")
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    sizes = QUICK if args.quick else FULL

    if args.profile:
        profile(args.profile, sizes, args.dir, args.top, console)
        return 0

    keys = ALL if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    n = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    info = machine(args.dir)
    repeats: list[Repeat] = []
    for i in range(n):
        if n > 1:
            console.print(f"[bold]repeat {i + 1}/{n}[/bold]")
        repeats.append(run_repeat(keys, sizes, args.dir, console))
    info["Load average at end"] = load_average()
    report = Report(sizes=sizes, quick=args.quick, machine=info, repeats=repeats)
    print_report(report, console)
    if args.out is not None:
        command = "python bench/core.py" + (" --quick" if args.quick else "") + f" --repeat {n}"
        if args.only:
            command += f" --only {args.only}"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(report, command + f" --out {args.out}")
        # Sections other benches own (scale.py, compare.py, …) are kept.
        old = args.out.read_text() if args.out.exists() else ""
        for section in sections.kept(old):
            text = text.rstrip() + "\n\n" + section + "\n"
        args.out.write_text(text)
        console.print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
