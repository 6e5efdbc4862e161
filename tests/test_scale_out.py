"""Scale-out on PostgreSQL: several worker processes on one database, killed at will.

- ``test_four_workers_share_the_work_and_two_kills_change_nothing``: 4 worker processes, 300
  ten-step workflows. Every worker does a share of the work; once a third of the runs are done,
  two workers are SIGKILLed and the other two finish every run. Each activity result is in
  history once, each activity ran once (or, if a kill interrupted it, once more), and every
  history is well-formed.
- ``test_workers_and_clients_ride_out_a_database_restart``: a private cluster restarted under
  running workflows.
- ``test_chaos_kills_and_dropped_connections_lose_nothing``: 200 workflows with activities, a
  timer and a signal, while workers are SIGKILLed and restarted and random database
  connections (workers' and the test's own) are terminated with ``pg_terminate_backend``.
  Afterwards every run has the right result and a well-formed history.

Worker processes are ``tests/e2e/worker_main.py --app scale`` (workflows in
``tests/e2e/scale_app.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from duro import Client, EventType, RunStatus, Worker, WorkflowHandle
from duro.errors import StoreError
from duro.history import CLOSE_EVENTS, Event
from tests.e2e import scale_app
from tests.e2e.app import LOG_ENV
from tests.pg_server import private_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOLVES_ACTIVITY = (
    EventType.ACTIVITY_TASK_COMPLETED,
    EventType.ACTIVITY_TASK_FAILED,
    EventType.ACTIVITY_TASK_TIMED_OUT,
    EventType.ACTIVITY_TASK_CANCELED,
)
RESOLVES_TIMER = (EventType.TIMER_FIRED, EventType.TIMER_CANCELED)


class Workers:
    """Worker subprocesses on one database, each logging to its own stderr file."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.log_path = tmp_path / "executions.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def start(self) -> subprocess.Popen[bytes]:
        number = len(self.procs)
        stderr = open(self.tmp_path / f"worker-{number}.stderr", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.e2e.worker_main",
                "--app",
                "scale",
                "--db",
                self.db_url,
                "--liveness-timeout",
                "2.0",
                "--heartbeat-interval",
                "0.3",
                "--log-level",
                "WARNING",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, LOG_ENV: str(self.log_path)},
            stderr=stderr,
        )
        stderr.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed.add(proc.pid)

    async def wait_ready(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines("ready")) < count:
            for p in self.procs:
                assert p.poll() is None or p.pid in self.killed, self.stderr()
            assert time.monotonic() < deadline, "workers did not start\n" + self.stderr()
            await asyncio.sleep(0.05)

    def lines(self, kind: str) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [
            parts
            for parts in (line.split() for line in self.log_path.read_text().splitlines())
            if parts and parts[0] == kind
        ]

    def stop(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stderr(self) -> str:
        return "\n".join(
            f"--- worker {i} (pid {p.pid})\n"
            + (self.tmp_path / f"worker-{i}.stderr").read_text(errors="replace")[-3000:]
            for i, p in enumerate(self.procs)
        )


def check_history(workflow_id: str, history: list[Event]) -> list[str]:
    """Well-formed: contiguous ids, one close event and it is last, everything resolved once."""
    problems = []
    ids = [e.event_id for e in history]
    if ids != list(range(1, len(history) + 1)):
        problems.append(f"{workflow_id}: event ids not contiguous from 1: {ids}")
    closes = [e for e in history if e.type in CLOSE_EVENTS]
    if len(closes) != 1 or history[-1] is not closes[0]:
        problems.append(f"{workflow_id}: close events {[e.type.value for e in closes]}")
    elif closes[0].type != EventType.WORKFLOW_EXECUTION_COMPLETED:
        problems.append(f"{workflow_id}: closed with {closes[0].type.value}: {closes[0].attrs}")
    scheduled = Counter(
        e.attrs["seq"] for e in history if e.type == EventType.ACTIVITY_TASK_SCHEDULED
    )
    resolved = Counter(e.attrs["seq"] for e in history if e.type in RESOLVES_ACTIVITY)
    timers = Counter(e.attrs["seq"] for e in history if e.type == EventType.TIMER_STARTED)
    fired = Counter(e.attrs["seq"] for e in history if e.type in RESOLVES_TIMER)
    for what, started, ended in (("activity", scheduled, resolved), ("timer", timers, fired)):
        for seq, n in started.items():
            if n != 1 or ended[seq] != 1:
                problems.append(
                    f"{workflow_id}: {what} {seq} started {n} time(s), resolved {ended[seq]}"
                )
        if set(ended) - set(started):
            problems.append(f"{workflow_id}: {what}s resolved but never started")
    return problems


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


async def test_four_workers_share_the_work_and_two_kills_change_nothing(
    tmp_path: Path, pg_database: str
) -> None:
    workers = Workers(pg_database, tmp_path)
    client = await Client.connect(pg_database)
    try:
        for _ in range(4):
            workers.start()
        await workers.wait_ready(4)
        started = time.monotonic()
        handles = [
            await client.start_workflow(
                scale_app.TenSteps.run, seed, id=f"ten-{seed}", task_queue=scale_app.TASK_QUEUE
            )
            for seed in range(300)
        ]

        async def completed(n: int) -> bool:
            return await client.count_workflows("Status = 'Completed'") >= n

        await wait_until(lambda: completed(100), 120, "a third of the runs")
        victims = workers.procs[:2]
        for proc in victims:
            workers.kill(proc)
        done_at_kill = await client.count_workflows("Status = 'Completed'")
        await wait_until(lambda: completed(300), 120, "every run to complete", 0.5)
        seconds = time.monotonic() - started

        problems: list[str] = []
        identities: Counter[str] = Counter()
        for seed, handle in enumerate(handles):
            assert await handle.result(timeout=5) == scale_app.ten_steps_result(seed)
            history = await handle.fetch_history()
            problems += check_history(handle.id, history)
            identities.update(
                e.attrs.get("identity", "?")
                for e in history
                if e.type == EventType.WORKFLOW_TASK_COMPLETED
            )
        assert not problems, "\n".join(problems[:50])

        # Every worker did a share of the workflow tasks and of the activities.
        pids = {str(p.pid) for p in workers.procs}
        assert {f"e2e-{pid}" for pid in pids} == set(identities), identities
        runs_by_pid: dict[str, int] = Counter(line[4] for line in workers.lines("begin"))
        assert set(runs_by_pid) == pids, runs_by_pid

        # Each activity ran once, unless a kill interrupted it; then once more, elsewhere.
        executions: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
        for line in workers.lines("begin"):
            executions[(line[1], line[2])].append(line)
        assert len(executions) == 300 * scale_app.STEPS
        killed = {str(p.pid) for p in victims}
        rerun = 0
        for key, runs in executions.items():
            if len(runs) > 1:
                rerun += 1
                assert len(runs) == 2 and runs[0][4] in killed, (key, runs)
        print(
            f"300 x {scale_app.STEPS} steps on 4 workers in {seconds:.1f} s; {done_at_kill} runs "
            f"done when 2 workers were killed; workflow tasks by worker {dict(identities)}; "
            f"activities by pid {dict(runs_by_pid)}; {rerun} activities re-run after the kill"
        )
    except BaseException:
        print(workers.stderr())
        raise
    finally:
        workers.stop()
        await client.close()


CHAOS_RUNS = 200
CHAOS_SECONDS = 25.0


async def _retrying(what: str, call, attempts: int = 20):  # type: ignore[no-untyped-def]
    """The test's own calls ride out dropped connections like a user's code would."""
    for attempt in range(attempts):
        try:
            return await call()
        except StoreError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError(what)


async def _terminate_connections(admin_url: str, database: str, rng: random.Random) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        pids = [
            r[0]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        ]
        victims = rng.sample(pids, min(len(pids), rng.randint(1, 3)))
        for pid in victims:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        return len(victims)
    finally:
        await conn.close()


async def test_chaos_kills_and_dropped_connections_lose_nothing(
    tmp_path: Path, pg_database: str
) -> None:
    seed = int(os.environ.get("DURO_E2E_SEED", time.time_ns() % 1_000_000))
    print(f"random seed {seed} (set DURO_E2E_SEED to repeat)")
    rng = random.Random(seed)
    database = pg_database.rsplit("/", 1)[1]
    workers = Workers(pg_database, tmp_path)
    client = await Client.connect(pg_database)
    kills = terminated = 0
    try:
        for _ in range(3):
            workers.start()
        await workers.wait_ready(3)
        handles: list[WorkflowHandle] = []

        async def start(n: int) -> None:
            handles.append(
                await _retrying(
                    "start",
                    lambda: client.start_workflow(
                        scale_app.ChaosWorkflow.run,
                        n,
                        id=f"chaos-{n}",
                        task_queue=scale_app.TASK_QUEUE,
                        request_id=f"start-{n}",
                    ),
                )
            )

        async def signal_run(n: int) -> None:
            await _retrying(
                "signal",
                lambda: handles[n].signal(
                    scale_app.ChaosWorkflow.proceed, f"go-{n}", request_id=f"go-{n}"
                ),
            )

        # Runs start and get their signal throughout the chaos, so kills and dropped
        # connections land on every kind of step: activities, timers, signals, starts.
        signalled = 0
        actions = 0
        end = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < end:
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            actions += 1
            if rng.random() < 0.5 and workers.alive():
                workers.kill(rng.choice(workers.alive()))
                kills += 1
                workers.start()
            else:
                terminated += await _terminate_connections(pg_database, database, rng)
            for n in range(len(handles), min(CHAOS_RUNS, len(handles) + 8)):
                await start(n)
            while signalled < len(handles) - 8:
                await signal_run(signalled)
                signalled += 1
        for n in range(len(handles), CHAOS_RUNS):
            await start(n)
        for n in range(signalled, CHAOS_RUNS):
            await signal_run(n)

        async def all_completed() -> bool:
            done = await _retrying("count", lambda: client.count_workflows("Status = 'Completed'"))
            return bool(done >= CHAOS_RUNS)

        await wait_until(all_completed, 90, "every run to complete after the chaos", 0.5)
        problems: list[str] = []
        for n, handle in enumerate(handles):
            info = await handle.describe()
            assert info.status == RunStatus.COMPLETED, (handle.id, info.status)
            assert await handle.result(timeout=5) == scale_app.chaos_result(n)
            problems += check_history(handle.id, await handle.fetch_history())
        assert not problems, "\n".join(problems[:50])
        print(
            f"{CHAOS_RUNS} runs completed through {kills} worker kills and {terminated} "
            f"terminated connections in {actions} chaos actions; "
            f"{len(workers.lines('begin'))} activity executions for {CHAOS_RUNS * 4} activities"
        )
        assert kills >= 5 and terminated >= 5
    except BaseException:
        print(f"seed {seed}, {kills} kills, {terminated} terminated connections")
        print(workers.stderr())
        raise
    finally:
        workers.stop()
        with contextlib.suppress(Exception):
            await client.close()


async def test_workers_and_clients_ride_out_a_database_restart(tmp_path: Path) -> None:
    """A restart cuts every connection (workers', listeners', the client's): runs go on."""
    server = private_server()  # a cluster of the test's own: restarting it disturbs nobody
    client = None
    try:
        url = server.url(server.create_database())
        client = await Client.connect(url)
        async with Worker(
            client,
            task_queue=scale_app.TASK_QUEUE,
            workflows=scale_app.WORKFLOWS,
            activities=scale_app.ACTIVITIES,
            liveness_timeout=timedelta(seconds=5),
        ):
            handles = [
                await client.start_workflow(
                    scale_app.ChaosWorkflow.run, n, id=f"r-{n}", task_queue=scale_app.TASK_QUEUE
                )
                for n in range(20)
            ]
            await asyncio.sleep(0.3)  # activities, timers in flight
            booted = server.psql("SELECT pg_postmaster_start_time()")
            await asyncio.to_thread(server.restart)
            assert server.psql("SELECT pg_postmaster_start_time()") != booted
            for n, handle in enumerate(handles):
                await _retrying(
                    "signal",
                    lambda n=n, handle=handle: handle.signal(
                        scale_app.ChaosWorkflow.proceed, f"go-{n}", request_id=f"go-{n}"
                    ),
                )
            for n, handle in enumerate(handles):
                assert await handle.result(timeout=60) == scale_app.chaos_result(n)
                problems = check_history(handle.id, await handle.fetch_history())
                assert not problems, problems
    finally:
        if client is not None:
            await client.close()
        server.stop()
