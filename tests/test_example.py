"""The README's main job: the example agent runs end to end, offline, as a new user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_example_agent_completes_and_resumes_by_id(db_url: str) -> None:
    db = db_url
    cmd = [sys.executable, "-m", "examples.agent", "--db", db, "--settle-seconds", "0.2"]
    out = subprocess.run(
        [*cmd, "--approve", "yes"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ActivityTaskCompleted        seq 2 after 3 attempt(s)" in out.stdout  # flaky tool
    assert "TimerFired" in out.stdout
    assert "WorkflowExecutionSignaled    approve(True)" in out.stdout
    assert "result after" in out.stdout and "Done: DR 101" in out.stdout
    # Running it again finds the same (closed) workflow id and prints its result, running
    # nothing again.
    again = subprocess.run(
        [*cmd, "--approve", "yes"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout and "Done: DR 101" in again.stdout
    assert again.stdout.count("ActivityTaskScheduled") == out.stdout.count("ActivityTaskScheduled")


@pytest.mark.slow
def test_example_agent_declined(db_url: str) -> None:
    db = db_url
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.agent",
            "--db",
            db,
            "--settle-seconds",
            "0.1",
            "--approve",
            "no",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "result after" in out.stdout and "not booked" in out.stdout


def _duro(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("duro")
    out = subprocess.run(
        [str(exe), *args, "--db", db], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out


def _events(db: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        _duro("workflow", "show", "trip-2", "--json", db=db).stdout
    )["events"]
    return events


@pytest.mark.slow
def test_three_cli_workers_on_postgres_finish_the_readme_example_despite_a_kill(
    pg_database: str, tmp_path: Path
) -> None:
    """The README's CLI walk-through with three ``duro worker`` processes on one PostgreSQL;
    the worker that advanced the run last is SIGKILLed during the run's durable sleep."""
    exe = Path(sys.executable).with_name("duro")
    command = [str(exe), "worker", "examples.agent.agent", "--task-queue", "agents"]
    workers = []
    for i in range(3):
        with open(tmp_path / f"worker-{i}.log", "wb") as log:
            workers.append(subprocess.Popen([*command, "--db", pg_database], cwd=ROOT, stderr=log))
    try:
        trip = {"request": "Rome, June 2nd", "settle_seconds": 1.5}
        _duro(
            "workflow", "start", "TravelAgent", "--id", "trip-2", "--task-queue", "agents",
            "--input", json.dumps(trip), db=pg_database,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not any(e["type"] == "TimerStarted" for e in _events(pg_database)):
            assert time.monotonic() < deadline, "the run never reached its durable sleep"
            time.sleep(0.05)
        done = [e for e in _events(pg_database) if e["type"] == "WorkflowTaskCompleted"]
        victim = next(
            w for w in workers if done[-1]["attributes"]["identity"].startswith(f"{w.pid}@")
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        _duro("workflow", "signal", "trip-2", "approve", "--input", "true", db=pg_database)
        assert "Done: DR 101" in _duro("workflow", "result", "trip-2", db=pg_database).stdout
        events = _events(pg_database)
        assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
        completed = [e["attributes"]["seq"] for e in events if e["type"] == "ActivityTaskCompleted"]
        assert len(completed) == len(set(completed))  # no activity result recorded twice
        after_kill = [
            e["attributes"]["identity"]
            for e in events
            if e["type"] == "WorkflowTaskCompleted" and e["event_id"] > done[-1]["event_id"]
        ]
        assert after_kill and not any(i.startswith(f"{victim.pid}@") for i in after_kill)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=20)
