"""duro's core benchmark: latency, throughput, timers, signals, replay, and the store floor.

Usage::

    python bench/core.py                  # full run (on an idle machine; ~20 s)
    python bench/core.py --quick          # small sizes: checks the bench works, numbers mean little
    python bench/core.py --out docs/benchmarks.md
    python bench/core.py --only sequential,floor
    python bench/core.py --profile fanout # cProfile one workload, time in store transactions

Every workload runs on a fresh SQLite file with the client and one worker in this process.
Figures are printed beside the targets of the project's issue and as multiples of the store
floor (``floor.py``). Nothing here asserts on time: this is a measurement, not a test.
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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import floor
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


def machine(db_dir: str) -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
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
        "Load average at start": " / ".join(f"{x:.2f}" for x in load),
    }


# -- running ------------------------------------------------------------------------------------


@dataclass
class Report:
    sizes: Sizes
    quick: bool
    machine: dict[str, str]
    results: list[WorkloadResult] = field(default_factory=list)
    floor2: floor.FloorResult | None = None
    floor1: floor.FloorResult | None = None

    def result(self, key: str) -> WorkloadResult | None:
        return next((r for r in self.results if r.key == key), None)


@contextmanager
def fresh_db(db_dir: str, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="duro-bench-", dir=db_dir) as d:
        yield Path(d) / f"{name}.db"


def run_floor(report: Report, db_dir: str, console: Console) -> None:
    console.print(f"[dim]6. store floor: {report.sizes.floor_steps} steps x 2 variants…[/dim]")
    with fresh_db(db_dir, "floor2") as db:
        report.floor2 = floor.measure(db, steps=report.sizes.floor_steps, transactions_per_step=2)
    with fresh_db(db_dir, "floor1") as db:
        report.floor1 = floor.measure(db, steps=report.sizes.floor_steps, transactions_per_step=1)


async def run_workloads(report: Report, keys: list[str], db_dir: str, console: Console) -> None:
    for key in keys:
        console.print(f"[dim]{key}…[/dim]")
        with fresh_db(db_dir, key) as db:
            t0 = time.perf_counter()
            res = await WORKLOADS[key](db, report.sizes)
            console.print(f"[dim]  done in {time.perf_counter() - t0:.1f} s[/dim]")
        report.results.append(res)


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
    return f"{value:.2f} {unit}"


def fmt_target(f: Figure) -> str:
    if f.target is None:
        return ""
    return ("≥ " if f.higher_is_better else "≤ ") + fmt(f.target, f.unit)


def floor_figures(report: Report) -> list[Figure]:
    if report.floor2 is None or report.floor1 is None:
        return []
    f2, f1 = report.floor2, report.floor1
    figures = [
        Figure("raw writes, 2 transactions/step (as duro)", f2.us_per_step, "µs"),
        Figure("raw writes, 1 transaction/step", f1.us_per_step, "µs"),
        Figure(
            f"2 tx/step: share of time in {f2.slow_commits} commits > 1 ms (WAL checkpoints)",
            100.0 * f2.slow_commit_s * 1e6 / (f2.us_per_step * f2.steps),
            "%",
        ),
        Figure("2 tx/step without the slow commits", f2.us_per_step_without_checkpoints, "µs"),
    ]
    seq = report.result("sequential")
    if seq is not None:
        for f in seq.figures:
            if f.per_step_ms is not None:
                multiple = f.per_step_ms * 1000.0 / report.floor2.us_per_step
                figures.append(Figure(f"duro {f.name} ÷ floor", multiple, "x", FLOOR_TARGET))
    return figures


Row = tuple[str, str, str, str, str, str, str]
"""workload, figure, value, target, figure ÷ target, meets, x store floor"""


def rows(report: Report) -> list[Row]:
    out: list[Row] = []
    floor_us = report.floor2.us_per_step if report.floor2 is not None else None
    sections = [(r.title, r.figures) for r in report.results]
    figures = floor_figures(report)
    if figures:
        sections.append((f"6. Store floor: {report.sizes.floor_steps:,} steps", figures))
    for title, figs in sections:
        for i, f in enumerate(figs):
            ratio = f.of_target()
            meets = f.meets()
            vs_floor = ""
            if f.per_step_ms is not None and floor_us:
                vs_floor = f"{f.per_step_ms * 1000.0 / floor_us:.1f}x"
            out.append(
                (
                    title if i == 0 else "",
                    f.name,
                    fmt(f.value, f.unit),
                    fmt_target(f),
                    "" if ratio is None else f"{ratio:.2f}",
                    "" if meets is None else ("yes" if meets else "NO"),
                    vs_floor,
                )
            )
    return out


HEADERS = ("Workload", "Figure", "Value", "Target", "÷ target", "Meets", "x floor")


def peer_rows(report: Report) -> list[tuple[str, str, str, str]]:
    def pick(key: str, name: str) -> Figure | None:
        r = report.result(key)
        return next((f for f in r.figures if f.name == name), None) if r else None

    step = pick("sequential", "per-step latency p50")
    rate = pick("fanout", "throughput")
    sig = pick("signals", "signal → result p50")
    ours = (
        "duro (this run, SQLite, 1 worker)",
        fmt(step.value, "ms") if step else "—",
        f"{rate.value:,.0f}" if rate else "—",
        fmt(sig.value, "ms") if sig else "—",
    )
    return [ours, *PEERS]


PEER_HEADERS = ("System", "Per sequential step", "Fan-out steps/s", "Signal latency")


def print_report(report: Report, console: Console) -> None:
    title = "duro core benchmark" + (
        " (--quick: sizes too small to mean much)" if report.quick else ""
    )
    table = Table(title=title)
    for h in HEADERS[1:]:
        table.add_column(h, justify="left" if h == "Figure" else "right")
    for row in rows(report):
        if row[0]:
            table.add_section()
            table.add_row(row[0], style="bold")
        table.add_row(*row[1:], style="red" if row[5] == "NO" else None)
    console.print(table)
    console.print(
        "x floor: the per-step cost a figure implies (latency, or 1/throughput) divided by the "
        "store floor with 2 transactions per step.",
        style="dim",
    )
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

    out = ["# duro benchmarks", ""]
    out.append(f"Generated by `{command}` on {report.machine['Date']}.")
    if report.quick:
        out += ["", "**Quick run: sizes are too small for these numbers to mean much.**"]
    out += ["", "## Machine", ""]
    out += table(("", ""), list(report.machine.items()))
    out += ["", "## Results", ""]
    out += table(HEADERS, rows(report))
    out += [
        "",
        "*÷ target*: figure / target (≤ 1 is good for a latency, ≥ 1 for a throughput). "
        "*x floor*: the per-step cost a figure implies (latency, or 1 / throughput) divided by "
        "the store floor with 2 transactions per step.",
        "",
        "## Method",
        "",
        "Every workload runs on a fresh SQLite file (WAL, synchronous=NORMAL), with the client "
        "and one worker in the same process; activities are trivial `async` functions.",
        "",
    ]
    for r in report.results:
        out.append(f"- **{r.title}** ({r.wall_s:.2f} s). " + " ".join(r.notes))
    out.append(
        "- **6. Store floor.** The writes a sequential step needs, done directly with `sqlite3` "
        "on duro's schema with the store's pragmas: append WorkflowTaskCompleted + "
        "ActivityTaskScheduled, update the execution, delete the workflow task, insert the "
        "activity task; then delete the activity task, append ActivityTaskCompleted, update the "
        "execution, insert the workflow task. Once in duro's 2 transactions per step, once in 1. "
        "No reads, leases or engine."
    )
    out += ["", "## Peers, for context", "", PEERS_NOTE, ""]
    out += table(PEER_HEADERS, peer_rows(report))
    out += [
        "",
        "## Reproduce",
        "",
        "```",
        "python bench/core.py --out docs/benchmarks.md   # on an idle machine",
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

    def execute_batch(store: Any, conn: sqlite3.Connection, batch: list[Any]) -> Any:
        in_thread = threading.current_thread() is not main
        t0 = time.perf_counter()
        if in_thread:  # the main profiler does not see other threads (before Python 3.12)
            stats.off_main_thread = True
            with contextlib.suppress(ValueError):
                thread_prof.enable()
        try:
            return original(store, conn, batch)
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
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    sizes = QUICK if args.quick else FULL

    if args.profile:
        profile(args.profile, sizes, args.dir, args.top, console)
        return 0

    keys = ALL if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    report = Report(sizes=sizes, quick=args.quick, machine=machine(args.dir))
    if "floor" in keys:
        run_floor(report, args.dir, console)
    asyncio.run(run_workloads(report, [k for k in keys if k in WORKLOADS], args.dir, console))
    print_report(report, console)
    if args.out is not None:
        command = "python bench/core.py" + (" --quick" if args.quick else "")
        if args.only:
            command += f" --only {args.only}"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(report, command + f" --out {args.out}"))
        console.print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
