"""duro beside its peers, same machine, same run: duro on SQLite and on PostgreSQL, Temporal
(the official CLI's dev server on a SQLite file, Python SDK) and DBOS (SQLite and PostgreSQL).

Usage (after ``pip install -e '.[bench]'``)::

    python bench/compare.py                        # every system, full sizes (~10 minutes)
    python bench/compare.py --quick                # small sizes: checks every runner works
    python bench/compare.py --systems duro-sqlite,dbos-sqlite
    python bench/compare.py --out docs/benchmarks.md   # (re)writes the comparison section
    python bench/compare.py --repeat 3             # 3 rounds, systems interleaved; medians

Each system runs in a subprocess of its own (``peers/*_runner.py``), one after another, with
its client and one worker (Temporal: plus its server) on this machine, against a fresh
database; all run the same workloads (``peers/common.py``):

- sequential: 10-step workflows one at a time; time per step (p50, p95);
- fan-out: 300 five-step workflows started at once; steps per second until the last result;
- parallel: one workflow running 200 activities at once; activities per second;
- timers: 300 workflows sleeping 1-3 s; lateness of the code after the sleep (p50, p99);
- signals: 100 blocked workflows signalled one at a time; signal sent to result (p50, p99);
- starts: 300 starts one after another from the client; starts per second.

PostgreSQL is the server on 127.0.0.1:5432 when it answers, else a private throwaway cluster.
Nothing here asserts on time: the table is a measurement, with duro/peer ratios beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(HERE / "peers"), str(ROOT)]

import common  # noqa: E402
import pg_floor  # noqa: E402
import sections  # noqa: E402
from core import machine  # noqa: E402

from tests.pg_server import PgServer, find_or_start  # noqa: E402

SYSTEMS = ("duro-sqlite", "duro-postgres", "temporal", "dbos-sqlite", "dbos-postgres")
TITLES = {
    "duro-sqlite": "duro (SQLite)",
    "duro-postgres": "duro (PostgreSQL)",
    "temporal": "Temporal (dev server, SQLite)",
    "dbos-sqlite": "DBOS (SQLite)",
    "dbos-postgres": "DBOS (PostgreSQL)",
}
FIGURES = (
    # key, label, unit, higher is better
    ("sequential_p50_ms", "sequential step p50", "ms", False),
    ("sequential_p95_ms", "sequential step p95", "ms", False),
    ("fanout_steps_per_s", "fan-out throughput", "steps/s", True),
    ("parallel_activities_per_s", "200 parallel activities", "act/s", True),
    ("timer_lateness_p50_ms", "timer lateness p50", "ms", False),
    ("timer_lateness_p99_ms", "timer lateness p99", "ms", False),
    ("signal_p50_ms", "signal to result p50", "ms", False),
    ("signal_p99_ms", "signal to result p99", "ms", False),
    ("starts_per_s", "client starts", "starts/s", True),
)
RATIOS = (
    # (duro system, peer system): the ratio columns, "how many times better duro is"
    ("duro-sqlite", "dbos-sqlite"),
    ("duro-sqlite", "temporal"),
    ("duro-postgres", "dbos-postgres"),
)
TIME_LIMIT = 1800.0
"""Seconds one system may take before it is stopped and reported as failed."""


@dataclass
class Outcome:
    system: str
    figures: dict[str, float]
    seconds: float
    error: str | None = None


def _runner(system: str, db: str | None, workdir: Path, sizes: common.Sizes) -> list[str]:
    peers = HERE / "peers"
    args = ["--sizes", json.dumps(asdict(sizes))]
    if system.startswith("duro"):
        return [
            sys.executable,
            str(peers / "duro_runner.py"),
            "--db",
            str(db),
            "--system",
            system,
            *args,
        ]
    if system.startswith("dbos"):
        return [
            sys.executable,
            str(peers / "dbos_runner.py"),
            "--db",
            str(db),
            "--system",
            system,
            *args,
        ]
    return [sys.executable, str(peers / "temporal_runner.py"), "--workdir", str(workdir), *args]


def run_system(system: str, sizes: common.Sizes, workdir: Path, server: PgServer | None) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    database = None
    db: str | None = None
    if system.endswith("postgres"):
        assert server is not None
        database = server.create_database()
        db = server.url(database)
    elif system == "duro-sqlite":
        db = f"sqlite:///{workdir / 'duro.db'}"
    elif system == "dbos-sqlite":
        db = f"sqlite:///{workdir / 'dbos.sqlite'}"
    started = time.perf_counter()
    try:
        out = subprocess.run(
            _runner(system, db, workdir, sizes),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
        )
    except subprocess.TimeoutExpired:
        return Outcome(system, {}, TIME_LIMIT, f"did not finish in {TIME_LIMIT:.0f} s")
    finally:
        if database is not None and server is not None:
            server.drop_database(database)
    seconds = time.perf_counter() - started
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return Outcome(system, json.loads(line[len("RESULT ") :])["figures"], seconds)
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return Outcome(system, {}, seconds, f"exit {out.returncode}: {tail}")


def pg_floor_fanout(server: PgServer, sizes: common.Sizes) -> float:
    """Steps/s of the raw writes alone, in the fan-out's shape (``pg_floor.measure_fanout``)."""
    name = server.create_database()
    try:
        return asyncio.run(
            pg_floor.measure_fanout(
                server.url(name), runs=sizes.fanout, steps_per_run=sizes.fanout_steps
            )
        )
    finally:
        server.drop_database(name)


def floor_paragraph(floors: list[float], outcomes: dict[str, Outcome]) -> list[str]:
    """Where the PostgreSQL fan-out figures sit against the writes' own ceiling."""
    if not floors:
        return []
    floor = statistics.median(floors)
    text = (
        "PostgreSQL store floor in the fan-out's shape (`bench/pg_floor.py`: only the writes "
        "of each step as one statement, the runs side by side over 10 connections as "
        "duro's pool, no reads, locks or engine), measured in each round after duro: "
        f"{floor:,.0f} steps/s (median; {min(floors):,.0f}-{max(floors):,.0f})."
    )
    duro = outcomes.get("duro-postgres")
    if duro is not None and "fanout_steps_per_s" in duro.figures:
        text += (
            f" duro on PostgreSQL reaches {duro.figures['fanout_steps_per_s'] / floor:.0%} of it."
        )
    dbos = outcomes.get("dbos-postgres")
    if dbos is not None and "fanout_steps_per_s" in dbos.figures:
        tenfold = 10 * dbos.figures["fanout_steps_per_s"]
        text += (
            f" Ten times DBOS-PostgreSQL's fan-out would be {tenfold:,.0f} steps/s, "
            f"{tenfold / floor:.1f}x this floor."
        )
    return ["", text]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("steps/s", "act/s", "starts/s"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def times_better(duro: float | None, peer: float | None, higher_is_better: bool) -> float | None:
    if not duro or not peer:
        return None
    return duro / peer if higher_is_better else peer / duro


def ratio(duro: float | None, peer: float | None, higher_is_better: bool) -> str:
    times = times_better(duro, peer, higher_is_better)
    return "—" if times is None else f"{times:,.1f}x"


def median_outcome(rounds: list[Outcome]) -> Outcome:
    """Each figure's median over the rounds a system completed (its total time)."""
    done = [o for o in rounds if o.error is None]
    keys = {k for o in done for k in o.figures}
    figures = {k: statistics.median(o.figures[k] for o in done if k in o.figures) for k in keys}
    error = None if done else rounds[-1].error
    return Outcome(rounds[0].system, figures, sum(o.seconds for o in rounds), error)


def round_ratios(rounds: dict[str, list[Outcome]], duro: str, peer: str, key: str) -> list[float]:
    """duro ÷ peer within each round: both measured minutes apart, under the same host load."""
    higher = next(h for k, _, _, h in FIGURES if k == key)
    out = []
    for d, p in zip(rounds[duro], rounds[peer], strict=True):
        times = times_better(d.figures.get(key), p.figures.get(key), higher)
        if times is not None:
            out.append(times)
    return out


def table(
    outcomes: dict[str, Outcome], rounds: dict[str, list[Outcome]] | None = None
) -> list[str]:
    """Figures per system; with several rounds, each ratio is the median of the rounds' own
    ratios, with their range."""
    systems = [s for s in SYSTEMS if s in outcomes]
    ratios = [(d, p) for d, p in RATIOS if d in outcomes and p in outcomes]
    head = ["Figure", *(TITLES[s] for s in systems)]
    head += [f"{TITLES[d].split(' ')[0]} {d.split('-')[1]} ÷ {TITLES[p]}" for d, p in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, higher in FIGURES:
        cells = [f"{label} ({unit})"]
        cells += [_fmt(outcomes[s].figures.get(key), unit) for s in systems]
        for d, p in ratios:
            each = round_ratios(rounds, d, p, key) if rounds and len(rounds[d]) > 1 else []
            if len(each) > 1:
                mid = statistics.median(each)
                cells.append(f"{mid:,.1f}x ({min(each):,.1f}-{max(each):,.1f})")
            else:
                cells.append(
                    ratio(outcomes[d].figures.get(key), outcomes[p].figures.get(key), higher)
                )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(
    outcomes: dict[str, Outcome],
    sizes: common.Sizes,
    command: str,
    db_dir: str,
    rounds: dict[str, list[Outcome]] | None = None,
    floors: list[float] | None = None,
) -> str:
    facts = machine(db_dir)
    n = max((len(r) for r in (rounds or {}).values()), default=1)
    how = (
        f"{n} rounds, each running every system once in the same order; a figure is the median "
        "of its rounds, a ratio the median of the rounds' own ratios (range in brackets), since "
        "two systems measured minutes apart in one round share the host's load"
        if n > 1
        else "a single run per system, one after another: on a shared VM a system's figures can "
        "move by 10% and, when the host is busy, by up to 2x between runs minutes apart, so read "
        "a ratio with its neighbours and across runs, not alone"
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    failures = [f"- {TITLES[o.system]}: {o.error}" for o in outcomes.values() if o.error]
    lines = [
        "## Side by side with Temporal and DBOS",
        "",
        f"Generated by `{command}` on {when}, one system after another on the same machine "
        f"({facts.get('Logical cores', '?')} cores, {facts.get('CPU', '?')}, "
        f"{facts.get('RAM', '?')}). Every system runs its client and one worker in one process "
        "(Temporal: plus its dev server on a SQLite file; DBOS runs workflows where they are "
        "started) against a fresh database; PostgreSQL is the local server (fsync on). Ratios "
        f"say how many times better duro is (higher throughput, or lower latency). {how}.",
        "",
        *table(outcomes, rounds),
        *floor_paragraph(floors or [], outcomes),
        "",
        f"Sizes: {sizes.sequential} sequential 10-step runs; fan-out {sizes.fanout} x "
        f"{sizes.fanout_steps} steps; {sizes.parallel} parallel activities; {sizes.timers} timers "
        f"of {sizes.timer_min:g}-{sizes.timer_max:g} s; {sizes.signals} signals; {sizes.starts} "
        "starts. Wall time per system: "
        + ", ".join(f"{TITLES[s]} {o.seconds:.0f} s" for s, o in outcomes.items())
        + ".",
    ]
    if failures:
        lines += ["", "Systems that did not complete:", *failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--out", type=Path, help="markdown file to (re)write the section in")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, each running every system once"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    sizes = common.Sizes.quick() if args.quick else common.Sizes()
    server = find_or_start() if any(s.endswith("postgres") for s in systems) else None
    rounds: dict[str, list[Outcome]] = {s: [] for s in systems}
    floors: list[float] = []
    command = "python bench/compare.py" + (" --quick" if args.quick else "")
    command += f" --repeat {args.repeat}" if args.repeat > 1 else ""
    try:
        with tempfile.TemporaryDirectory(prefix="duro-compare-") as tmp:
            for n in range(args.repeat):
                for system in systems:
                    print(f"{TITLES[system]} (round {n + 1}/{args.repeat}) ...", flush=True)
                    outcome = run_system(system, sizes, Path(tmp) / f"{system}-{n}", server)
                    rounds[system].append(outcome)
                    shown = outcome.error or ", ".join(
                        f"{k} {v:,.2f}" for k, v in outcome.figures.items()
                    )
                    print(f"  {outcome.seconds:.0f} s: {shown}", flush=True)
                    if system == "duro-postgres" and server is not None:
                        floors.append(pg_floor_fanout(server, sizes))
                        print(f"  store floor, fan-out shape: {floors[-1]:,.0f} steps/s")
            outcomes = {s: median_outcome(r) for s, r in rounds.items()}
            section = markdown(outcomes, sizes, command, tmp, rounds, floors)
    finally:
        if server is not None:
            server.stop()
    print()
    print("\n".join(table(outcomes, rounds)))
    print("\n".join(floor_paragraph(floors, outcomes)))
    if args.out:
        sections.write(args.out, "compare.py", section)
        print(f"wrote {args.out}")
    return 0 if all(o.error is None for o in outcomes.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
