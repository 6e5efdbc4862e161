"""Crash recovery end to end: SIGKILL worker subprocesses at many points; new ones finish.

A worker subprocess (``tests/e2e/worker_main.py``) runs 20-step ``CrashWorkflow`` runs
(``tests/e2e/app.py``), several at once. The test watches the runs through its own ``Client``
on the same database (SQLite file, then PostgreSQL) and the activities' execution log, and SIGKILLs the worker when it sees
one of these states (each at least once, 13 kills in all):

- ``activity_running``: an activity execution logged ``begin`` but not ``end``;
- ``activity_finished``: an execution logged ``end`` (side effects done) and history has no
  result for it yet: the dead worker finished it but never recorded it;
- ``activity_completed``: a new ``ActivityTaskCompleted`` appeared in history;
- ``timer``: a run has a pending durable timer;
- ``signal_wait``: a run waits for its signal; the test then signals it while no worker is up;
- ``random``: a random moment, whatever the workers were doing.

After each kill it starts a new worker and waits until every run that had work to do makes
progress (which needs the dead worker's leases to be released by the liveness timeout). When
all kills are done, the last worker finishes every run. Then, for every run: the result is the
expected one; event ids run from 1 without gaps and the only close event is last; every
scheduled activity has exactly one ``ActivityTaskCompleted`` and nothing failed or timed out;
and every activity was executed once, except that an attempt interrupted by a kill (its
worker died before its result was in history, whether or not the code had finished) was
executed again, once, as a later attempt.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from duro import Client, EventType, RunStatus, WorkflowHandle
from duro.history import CLOSE_EVENTS, Event
from tests.e2e import app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[1]

LIVENESS_TIMEOUT = 1.0
HEARTBEAT_INTERVAL = 0.2
CONCURRENT_RUNS = 5
"""Runs with work to do while kills remain (a finished run is replaced by a new one)."""
MAX_RUNS = 14
KILLS = {
    "signal_wait": 2,
    "timer": 2,
    "activity_running": 3,
    "activity_finished": 2,
    "activity_completed": 2,
    "random": 2,
}
SCARCE = ("signal_wait", "timer")
"""Taken whenever the state shows up; the other kinds take turns, one per worker lifetime."""
ROTATION = ("activity_running", "activity_completed", "activity_finished", "random")
RECOVERY_LIMIT = 5.0
"""Seconds from a new worker being ready to progress of every run the kill interrupted."""
CAMPAIGN_DEADLINE = 100.0
FINISH_DEADLINE = 30.0
POLL = 0.01


# -- the activities' execution log ----------------------------------------------------------------


@dataclass
class Execution:
    workflow_id: str
    activity_id: str
    attempt: int
    pid: int
    begin: float
    end: float | None = None


class ExecutionLog:
    """Incremental reader of the file the activities and workers append lines to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.executions: list[Execution] = []
        self._open: dict[tuple[str, str, int, int], Execution] = {}
        self.ready: dict[int, float] = {}
        self.problems: list[str] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._line(raw.decode())

    def _line(self, line: str) -> None:
        kind, wid, aid, attempt, pid, when = line.split()
        if kind == "ready":
            self.ready[int(pid)] = float(when)
            return
        key = (wid, aid, int(attempt), int(pid))
        if kind == "begin":
            if key in self._open or any(
                (e.workflow_id, e.activity_id, e.attempt, e.pid) == key for e in self.executions
            ):
                self.problems.append(f"attempt began twice in one process: {line}")
            execution = Execution(wid, aid, int(attempt), int(pid), float(when))
            self.executions.append(execution)
            self._open[key] = execution
        elif kind == "end":
            started = self._open.pop(key, None)
            if started is None:
                self.problems.append(f"'end' without 'begin': {line}")
            else:
                started.end = float(when)
        else:
            self.problems.append(f"unknown log line: {line}")

    def running(self, pid: int) -> list[Execution]:
        return [e for e in self._open.values() if e.pid == pid]


# -- worker processes -----------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    number: int
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    started: float
    ready: float | None = None
    killed_at: float | None = None
    """Just before SIGKILL."""
    dead_at: float | None = None
    """After the process was reaped: it wrote nothing after this."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no stderr file)"
        return "\n".join(text.splitlines()[-lines:])


# -- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    index: int
    seed: int
    handle: WorkflowHandle
    early_signal: bool
    signal_sent: bool = False
    history: list[Event] = field(default_factory=list)
    status: RunStatus = RunStatus.RUNNING
    pending_timers: list[Any] = field(default_factory=list)

    @property
    def workflow_id(self) -> str:
        return self.handle.id

    def count(self, event_type: EventType) -> int:
        return sum(1 for e in self.history if e.type == event_type)

    def completed_seqs(self) -> set[int]:
        return {e.attrs["seq"] for e in self.history if e.type == EventType.ACTIVITY_TASK_COMPLETED}

    @property
    def waiting_for_signal(self) -> bool:
        """The code is blocked in ``wait_condition`` and no signal was sent."""
        return (
            self.status == RunStatus.RUNNING
            and not self.signal_sent
            and self.count(EventType.ACTIVITY_TASK_COMPLETED) == app.ACTIVITIES_BEFORE_SIGNAL
            and self.count(EventType.TIMER_FIRED) == app.TIMERS_BEFORE_SIGNAL
            and bool(self.history)
            and self.history[-1].type == EventType.WORKFLOW_TASK_COMPLETED
        )

    @property
    def has_work(self) -> bool:
        return self.status == RunStatus.RUNNING and not self.waiting_for_signal

    @property
    def worker_progress(self) -> int:
        """Events only a worker appends (everything but the test's signals)."""
        return sum(1 for e in self.history if e.type != EventType.WORKFLOW_EXECUTION_SIGNALED)


@dataclass
class Kill:
    number: int
    kind: str
    detail: str
    worker: WorkerProcess
    target: str | None
    baseline: dict[str, int] = field(default_factory=dict)
    """Runs with work at the kill -> their worker-made event count then."""
    signal_while_down: bool = False
    next_worker: WorkerProcess | None = None
    progressed_at: dict[str, float] = field(default_factory=dict)

    @property
    def recovered(self) -> bool:
        return set(self.progressed_at) == set(self.baseline)

    def recovery_seconds(self) -> float:
        assert self.next_worker is not None and self.next_worker.ready is not None
        return max((t - self.next_worker.ready for t in self.progressed_at.values()), default=0.0)


# -- the campaign ---------------------------------------------------------------------------------


class Campaign:
    def __init__(self, client: Client, db_url: str, tmp_path: Path, rng: random.Random) -> None:
        self.client = client
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.rng = rng
        self.log = ExecutionLog(tmp_path / "executions.log")
        self.workers: list[WorkerProcess] = []
        self.runs: list[Run] = []
        self.kills: list[Kill] = []
        self.remaining = dict(KILLS)
        self._rotation = 0
        self.current: WorkerProcess | None = None
        self.armed_at: float | None = None
        self.window_kind: str | None = None
        self.random_delay = 0.0
        self.completed_at_arm = 0

    # -- processes --

    def start_worker(self) -> WorkerProcess:
        number = len(self.workers) + 1
        stderr_path = self.tmp_path / f"worker-{number}.stderr"
        env = dict(os.environ, **{app.LOG_ENV: str(self.log.path)})
        env.pop("DURO_DB", None)
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.e2e.worker_main",
                    "--db",
                    self.db_url,
                    "--liveness-timeout",
                    str(LIVENESS_TIMEOUT),
                    "--heartbeat-interval",
                    str(HEARTBEAT_INTERVAL),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = WorkerProcess(number, proc, stderr_path, time.time())
        self.workers.append(worker)
        self.current = worker
        return worker

    async def wait_ready(self, worker: WorkerProcess, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while worker.pid not in self.log.ready:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker {worker.number} exited with {worker.proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.number} not ready after {timeout} s")
            await asyncio.sleep(POLL)
            self.log.poll()
        worker.ready = self.log.ready[worker.pid]

    def kill(self, worker: WorkerProcess) -> None:
        worker.killed_at = time.time()
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        worker.dead_at = time.time()
        if self.current is worker:
            self.current = None

    def stop_all(self) -> None:
        """Teardown: no worker process outlives the test."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()

    async def stop_gracefully(self, worker: WorkerProcess) -> None:
        worker.proc.terminate()
        deadline = time.monotonic() + 15.0
        while worker.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()
        if self.current is worker:
            self.current = None

    # -- runs --

    async def start_run(self) -> Run:
        index = len(self.runs)
        seed = 1000 + 37 * index
        handle = await self.client.start_workflow(
            app.CrashWorkflow.run, seed, id=f"crash-{index}", task_queue=app.TASK_QUEUE
        )
        run = Run(index, seed, handle, early_signal=index % 4 == 3)
        self.runs.append(run)
        if run.early_signal:  # delivered before the code waits: the condition is true at once
            await self.signal(run)
        return run

    async def signal(self, run: Run) -> None:
        run.signal_sent = True
        await run.handle.signal(app.CrashWorkflow.approve, app.approval_for(run.seed))

    async def refresh(self) -> None:
        """Read the log first, then history: an ``end`` seen unrecorded was unrecorded then."""
        self.log.poll()
        active = [r for r in self.runs if r.status == RunStatus.RUNNING]
        await asyncio.gather(*(self._refresh_run(r) for r in active))

    async def _refresh_run(self, run: Run) -> None:
        info = await run.handle.describe()
        new = await self.client.store.get_history(info.run_id, len(run.history))
        run.history.extend(new)
        run.status = info.status
        run.pending_timers = list(info.pending_timers)

    def total_completed(self) -> int:
        return sum(r.count(EventType.ACTIVITY_TASK_COMPLETED) for r in self.runs)

    # -- the kill loop --

    def arm(self) -> None:
        self.armed_at = time.monotonic()
        kinds = [k for k in ROTATION if self.remaining[k] > 0]
        if kinds:
            self.window_kind = kinds[self._rotation % len(kinds)]
            self._rotation += 1
        else:
            self.window_kind = None
        self.random_delay = self.rng.uniform(0.05, 0.6)
        self.completed_at_arm = self.total_completed()

    def trigger(self) -> tuple[str, str, str | None] | None:
        """The kill the current state calls for: (kind, detail, target workflow id)."""
        assert self.current is not None
        if self.remaining["signal_wait"] > 0:
            for r in self.runs:
                if r.waiting_for_signal:
                    return "signal_wait", f"{r.workflow_id} waits for its signal", r.workflow_id
        if self.remaining["timer"] > 0:
            for r in self.runs:
                if r.status == RunStatus.RUNNING and r.pending_timers:
                    return "timer", f"{r.workflow_id} timer(s) {r.pending_timers}", r.workflow_id
        kind = self.window_kind
        if kind == "activity_running":
            for e in self.log.running(self.current.pid):
                return (
                    kind,
                    f"{e.workflow_id} activity {e.activity_id} attempt {e.attempt} running",
                    e.workflow_id,
                )
        elif kind == "activity_finished":
            by_id = {r.workflow_id: r for r in self.runs}
            for e in reversed(self.log.executions):
                if e.pid != self.current.pid or e.end is None:
                    continue
                run = by_id[e.workflow_id]
                if run.status == RunStatus.RUNNING and int(e.activity_id) not in (
                    run.completed_seqs()
                ):
                    return (
                        kind,
                        f"{e.workflow_id} activity {e.activity_id} attempt {e.attempt} "
                        "finished, result not recorded",
                        e.workflow_id,
                    )
        elif kind == "activity_completed":
            if self.total_completed() > self.completed_at_arm:
                last = max(
                    (
                        (e.time, r.workflow_id, e.attrs["seq"])
                        for r in self.runs
                        for e in r.history
                        if e.type == EventType.ACTIVITY_TASK_COMPLETED
                    ),
                )
                return kind, f"{last[1]} activity {last[2]} just recorded", last[1]
        elif kind == "random":
            assert self.armed_at is not None
            if time.monotonic() - self.armed_at >= self.random_delay:
                return kind, f"{self.random_delay:.2f} s into the window", None
        return None

    async def do_kill(self, kind: str, detail: str, target: str | None) -> Kill:
        assert self.current is not None
        worker = self.current
        self.kill(worker)
        self.remaining[kind] -= 1
        self.armed_at = None
        k = Kill(len(self.kills) + 1, kind, detail, worker, target)
        self.kills.append(k)
        await self.refresh()  # no worker is up: this is the state the next worker inherits
        if kind == "signal_wait":
            run = next(r for r in self.runs if r.workflow_id == target)
            await self.signal(run)
            k.signal_while_down = self.current is None and worker.proc.poll() is not None
            await self.refresh()
        k.baseline = {r.workflow_id: r.worker_progress for r in self.runs if r.has_work}
        k.next_worker = self.start_worker()
        await self.wait_ready(k.next_worker)
        return k

    async def run(self) -> None:
        deadline = time.monotonic() + CAMPAIGN_DEADLINE
        worker = self.start_worker()
        await self.wait_ready(worker)
        for _ in range(CONCURRENT_RUNS):
            await self.start_run()
        await self.refresh()
        self.arm()
        pending: Kill | None = None
        while any(self.remaining.values()) or (pending is not None and not pending.recovered):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"kill campaign not done in {CAMPAIGN_DEADLINE} s; kills left: "
                    f"{self.remaining}; last kill: {pending}"
                )
            assert self.current is not None
            if self.current.proc.poll() is not None:
                raise AssertionError(
                    f"worker {self.current.number} exited by itself "
                    f"({self.current.proc.returncode})"
                )
            await self.refresh()
            now = time.time()
            if pending is not None and not pending.recovered:
                for r in self.runs:
                    wid = r.workflow_id
                    if (
                        wid in pending.baseline
                        and wid not in pending.progressed_at
                        and r.worker_progress > pending.baseline[wid]
                    ):
                        pending.progressed_at[wid] = now
                assert pending.next_worker is not None and pending.next_worker.ready is not None
                if not pending.recovered and now - pending.next_worker.ready > 3 * RECOVERY_LIMIT:
                    raise AssertionError(f"no recovery after kill {pending}")
                if pending.recovered:
                    self.arm()
            elif any(self.remaining.values()):
                fire = self.trigger()
                if fire is not None:
                    pending = await self.do_kill(*fire)
                    continue
            await self.handle_signals()
            await self.top_up()
            await asyncio.sleep(POLL)

    async def handle_signals(self) -> None:
        for r in self.runs:
            if r.waiting_for_signal and self.remaining["signal_wait"] == 0:
                await self.signal(r)

    async def top_up(self) -> None:
        """Keep runs with work to do, so every kind of kill stays reachable."""
        if not any(self.remaining.values()):
            return
        busy = sum(1 for r in self.runs if r.has_work)
        while busy < CONCURRENT_RUNS and len(self.runs) < MAX_RUNS:
            await self.start_run()
            busy += 1

    async def finish(self) -> None:
        deadline = time.monotonic() + FINISH_DEADLINE
        while True:
            await self.refresh()
            await self.handle_signals()
            if all(r.status != RunStatus.RUNNING for r in self.runs):
                return
            if time.monotonic() > deadline:
                left = [r.workflow_id for r in self.runs if r.status == RunStatus.RUNNING]
                raise AssertionError(
                    f"runs not finished {FINISH_DEADLINE} s after the kills: {left}"
                )
            await asyncio.sleep(0.05)

    # -- reporting --

    def report(self) -> str:
        lines = [
            f"{len(self.kills)} kills, {len(self.workers)} worker processes, {len(self.runs)} runs"
        ]
        for k in self.kills:
            rec = f"{k.recovery_seconds():.2f}" if k.recovered and k.next_worker else "-"
            lines.append(
                f"  kill {k.number:2d} {k.kind:18s} worker {k.worker.number} (pid {k.worker.pid}); "
                f"{k.detail}; runs with work {len(k.baseline)}; recovered in {rec} s"
            )
        return "\n".join(lines)

    def worker_logs(self) -> str:
        parts = []
        for w in self.workers:
            parts.append(f"--- worker {w.number} (pid {w.pid}) stderr, last lines ---")
            parts.append(w.stderr_tail())
        return "\n".join(parts)


# -- checks ---------------------------------------------------------------------------------------


def check_history(run: Run, history: list[Event]) -> list[str]:
    wid = run.workflow_id
    problems = []
    ids = [e.event_id for e in history]
    if ids != list(range(1, len(history) + 1)):
        problems.append(f"{wid}: event ids not contiguous from 1: {ids}")
    closes = [e for e in history if e.type in CLOSE_EVENTS]
    if len(closes) != 1 or history[-1] is not closes[0]:
        problems.append(
            f"{wid}: close events {[e.type.value for e in closes]}, not exactly one last"
        )
    elif closes[0].type != EventType.WORKFLOW_EXECUTION_COMPLETED:
        problems.append(f"{wid}: closed with {closes[0].type.value}: {closes[0].attrs}")
    counts = Counter(e.type for e in history)
    for bad in (
        EventType.ACTIVITY_TASK_FAILED,
        EventType.ACTIVITY_TASK_TIMED_OUT,
        EventType.ACTIVITY_TASK_CANCELED,
        EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
    ):
        if counts[bad]:
            problems.append(f"{wid}: {counts[bad]} {bad.value} event(s)")
    scheduled = [e.attrs["seq"] for e in history if e.type == EventType.ACTIVITY_TASK_SCHEDULED]
    completed = Counter(
        e.attrs["seq"] for e in history if e.type == EventType.ACTIVITY_TASK_COMPLETED
    )
    if sorted(scheduled) != list(range(1, app.ACTIVITIES_TOTAL + 1)):
        problems.append(f"{wid}: scheduled activity seqs {scheduled}")
    for seq in scheduled:
        if completed[seq] != 1:
            problems.append(f"{wid}: activity {seq} has {completed[seq]} ActivityTaskCompleted")
    if set(completed) - set(scheduled):
        problems.append(
            f"{wid}: completions of unscheduled activities {set(completed) - set(scheduled)}"
        )
    expected = {
        EventType.TIMER_STARTED: app.TIMERS_TOTAL,
        EventType.TIMER_FIRED: app.TIMERS_TOTAL,
        EventType.WORKFLOW_EXECUTION_SIGNALED: 1,
    }
    for event_type, n in expected.items():
        if counts[event_type] != n:
            problems.append(f"{wid}: {counts[event_type]} {event_type.value}, expected {n}")
    return problems


def check_executions(
    run: Run, history: list[Event], log: ExecutionLog, workers: dict[int, WorkerProcess]
) -> tuple[list[str], list[Execution]]:
    """Each activity ran once, plus once more per attempt a kill interrupted before its result
    was recorded. Returns the problems and the re-executed (interrupted) executions."""
    wid = run.workflow_id
    problems = []
    interrupted = []
    for done in (e for e in history if e.type == EventType.ACTIVITY_TASK_COMPLETED):
        seq, attempt, recorded_at = done.attrs["seq"], done.attrs["attempt"], done.time
        execs = [x for x in log.executions if x.workflow_id == wid and x.activity_id == str(seq)]
        what = f"{wid} activity {seq}"
        attempts = [x.attempt for x in execs]
        if len(set(attempts)) != len(attempts):
            problems.append(f"{what}: an attempt was executed more than once: {execs}")
        final = [x for x in execs if x.attempt == attempt]
        if len(final) != 1 or final[0].end is None:
            problems.append(f"{what}: recorded attempt {attempt} has executions {final}")
        else:
            w = workers[final[0].pid]
            if w.dead_at is not None and w.dead_at < recorded_at:
                # Seen once (PostgreSQL, not reproduced): the times, to tell a clock from a writer.
                since_kill = recorded_at - (w.killed_at or w.dead_at)
                ended = (final[0].end or 0.0) - (w.killed_at or w.dead_at)
                problems.append(
                    f"{what}: recorded after its worker {w.number} was dead (event time "
                    f"{recorded_at - w.dead_at:+.6f} s after it exited, {since_kill:+.6f} s "
                    f"after the SIGKILL; the attempt ended {ended:+.6f} s after the SIGKILL)"
                )
        for x in execs:
            if x.attempt == attempt:
                continue
            w = workers.get(x.pid)
            if x.attempt > attempt:
                problems.append(f"{what}: attempt {x.attempt} ran after attempt {attempt} won")
            elif w is None or w.dead_at is None:
                problems.append(f"{what}: attempt {x.attempt} re-executed without a kill: {x}")
            elif not w.dead_at < recorded_at:
                problems.append(
                    f"{what}: attempt {x.attempt} re-executed although its result was "
                    f"recorded before its worker {w.number} was killed"
                )
            else:
                interrupted.append(x)
    return problems, interrupted


# -- the test -------------------------------------------------------------------------------------


async def test_workers_killed_at_many_points_recover_every_run(tmp_path: Path, db_url: str) -> None:
    seed = int(os.environ.get("DURO_E2E_SEED", time.time_ns() % 1_000_000))
    print(f"random seed {seed} (set DURO_E2E_SEED to repeat)")
    started = time.monotonic()
    client = await Client.connect(db_url)
    campaign = Campaign(client, db_url, tmp_path, random.Random(seed))
    try:
        try:
            await campaign.run()
            campaign_seconds = time.monotonic() - started
            await campaign.finish()
            assert campaign.current is not None
            await campaign.stop_gracefully(campaign.current)
        finally:
            campaign.stop_all()
        campaign.log.poll()
        print(campaign.report())
        print(
            f"campaign {campaign_seconds:.1f} s, total {time.monotonic() - started:.1f} s, "
            f"{len(campaign.log.executions)} activity executions"
        )

        # Kills: enough, of every kind, each followed by a quick recovery.
        assert len(campaign.kills) >= 10
        assert Counter(k.kind for k in campaign.kills) == Counter(KILLS)
        for k in campaign.kills:
            assert k.recovered and k.next_worker is not None, k
            assert k.recovery_seconds() < RECOVERY_LIMIT, (
                f"kill {k.number} ({k.kind}): runs progressed only "
                f"{k.recovery_seconds():.2f} s after the new worker was ready"
            )
            if k.kind == "signal_wait":
                assert k.signal_while_down, k
        assert not campaign.log.problems, campaign.log.problems

        # Runs: correct results and sound histories.
        problems: list[str] = []
        interrupted: list[Execution] = []
        workers = {w.pid: w for w in campaign.workers}
        for run in campaign.runs:
            info = await run.handle.describe()
            assert info.status == RunStatus.COMPLETED, (run.workflow_id, info)
            assert await run.handle.result(timeout=5) == app.expected_result(run.seed)
            history = await run.handle.fetch_history()
            problems += check_history(run, history)
            more, lost = check_executions(run, history, campaign.log, workers)
            problems += more
            interrupted += lost
        assert not problems, "\n".join(problems)

        mid_run = [x for x in interrupted if x.end is None]
        print(
            f"{len(interrupted)} interrupted attempts re-executed: {len(mid_run)} killed while "
            f"running, {len(interrupted) - len(mid_run)} after finishing, before their result "
            "was recorded"
        )
        assert mid_run, "no kill interrupted a running activity"
        for line in "\n".join(w.stderr_path.read_text() for w in campaign.workers).splitlines():
            assert " ERROR " not in line and "Traceback" not in line, line
    except BaseException:
        print(campaign.report())
        print(campaign.worker_logs())
        raise
    finally:
        await client.close()
