"""The README's main job: the example agent runs end to end, offline, as a new user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_example_agent_completes_and_resumes_by_id(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'agent.db'}"
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
def test_example_agent_declined(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'agent.db'}"
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
