"""The ``duro`` command line, end to end against a real SQLite store and a real worker.

The workflow commands run through ``CliRunner``, which calls ``asyncio.run`` in the test's own
thread: those tests are sync, and their worker runs on its own loop in a background thread.
``duro worker`` itself is run as a subprocess and stopped with SIGTERM, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from duro import Client, Event, Worker
from duro import _cli_render as render
from duro.cli import cli, load_target
from duro.history import EventType
from tests import cli_app

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: ``duro worker tests.cli_app`` imports the app from there."""

APP_NAMES = {"hello", "doomed", "fetch", "review", "Approval"} | {
    "greet",
    "unreachable",
    "external_review",
}
DEADLINE = 15.0


# -- helpers --------------------------------------------------------------------------------------


def duro(db_url: str, *args: str, code: int = 0) -> Result:
    """Run ``duro ARGS`` against ``db_url`` (through ``$DURO_DB``) and check its exit code."""
    result = CliRunner().invoke(cli, list(args), env={"DURO_DB": db_url, "COLUMNS": "200"})
    assert result.exit_code == code, (
        f"duro {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
    )
    # An expected error exits through SystemExit; any other exception is a crash of the CLI.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr
    return result


def duro_json(db_url: str, *args: str, code: int = 0) -> Any:
    return json.loads(duro(db_url, *args, "--json", code=code).stdout)


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ThreadWorker:
    """A real ``Worker`` for ``tests.cli_app`` on its own event loop in a background thread."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker: Worker | None = None
        self.thread = threading.Thread(target=self._thread, name="cli-test-worker", daemon=True)

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        assert self.ready.wait(DEADLINE), "worker did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.worker is not None:
            self.loop.call_soon_threadsafe(self.worker.request_shutdown)
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self.error = e
        finally:
            self.ready.set()

    async def _main(self) -> None:
        async with await Client.connect(self.db_url) as client:
            workflows, activities = load_target("tests.cli_app")
            self.worker = Worker(
                client,
                workflows=workflows,
                activities=activities,
                graceful_shutdown_timeout=timedelta(seconds=1),
            )
            self.loop = asyncio.get_running_loop()
            task = asyncio.create_task(self.worker.run())
            # Ready once registered: from then on clients check signal and query names.
            deadline = self.loop.time() + DEADLINE
            while not await client.store.known_workflow_types("default", "default"):
                assert not task.done() and self.loop.time() < deadline, "worker did not register"
                await asyncio.sleep(0.01)
            self.ready.set()
            await task


@pytest.fixture
def worker(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadWorker]:
    monkeypatch.chdir(ROOT)
    with ThreadWorker(db_url) as w:
        yield w


# -- the life of a run ----------------------------------------------------------------------------


def test_start_list_describe_show_signal_query_result(db_url: str, worker: ThreadWorker) -> None:
    started = duro_json(
        db_url, "workflow", "start", "Approval", "--id", "trip", "--input", '"Lisbon"'
    )
    assert started["workflow_id"] == "trip"
    run_id = started["run_id"]

    listing = duro(db_url, "workflow", "list").stdout
    assert "trip" in listing and "Approval" in listing and run_id[-8:] in listing
    [row] = duro_json(db_url, "workflow", "list", "--type", "Approval")
    assert row["run_id"] == run_id and row["status"] == "Running" and row["close_time"] is None
    assert duro_json(db_url, "workflow", "list", "--status", "completed") == []

    assert json.loads(duro(db_url, "workflow", "query", "trip", "status").stdout) == "waiting"
    described = duro(db_url, "workflow", "describe", "trip").stdout
    assert "Approval" in described and "Running" in described and run_id in described

    out = duro(db_url, "workflow", "signal", "trip", "approve", "--input", '"alice"').stdout
    assert "Signaled 'approve'" in out
    result = duro(db_url, "workflow", "result", "trip", "--timeout", str(DEADLINE))
    assert json.loads(result.stdout) == {"title": "Lisbon", "approved_by": "alice"}
    assert json.loads(duro(db_url, "workflow", "query", "trip", "status").stdout) == (
        "approved by alice"
    )

    info = duro_json(db_url, "workflow", "describe", "trip")
    assert info["status"] == "Completed" and info["result"]["approved_by"] == "alice"
    assert info["args"] == ["Lisbon"] and info["close_time"] is not None

    table = duro(db_url, "workflow", "show", "trip").stdout
    assert "WorkflowExecutionSignaled" in table and 'approve args=["alice"]' in table
    exported = duro_json(db_url, "workflow", "show", "trip")
    assert set(exported) == {"workflow_id", "run_id", "events"}
    assert (exported["workflow_id"], exported["run_id"]) == ("trip", run_id)
    events = [Event.from_json(e) for e in exported["events"]]
    assert [e.to_json() for e in events] == exported["events"]
    assert events[0].type == EventType.WORKFLOW_EXECUTION_STARTED
    assert events[-1].type == EventType.WORKFLOW_EXECUTION_COMPLETED
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))


def test_start_wait_prints_the_result(db_url: str, worker: ThreadWorker) -> None:
    out = duro(db_url, "workflow", "start", "hello", "--id", "h1", "--input", '"bob"', "--wait")
    assert "run id:" in out.stdout
    assert out.stdout.splitlines()[-1] == '"hello bob"'
    data = duro_json(
        db_url, "workflow", "start", "hello", "--id", "h2", "--args", '["ann"]', "--wait"
    )
    assert data["status"] == "Completed" and data["result"] == "hello ann"


def test_failed_run_prints_the_failure_and_exits_1(db_url: str, worker: ThreadWorker) -> None:
    args = ("workflow", "start", "doomed", "--id", "d", "--input", '"out of budget"', "--wait")
    out = duro(db_url, *args, code=1)
    assert "failed: ApplicationError: out of budget" in out.stderr
    data = duro_json(db_url, "workflow", "result", "d", code=1)
    assert data["status"] == "Failed" and data["failure"]["message"] == "out of budget"
    assert "ApplicationError: out of budget" in duro(db_url, "workflow", "describe", "d").stdout


def test_describe_shows_a_retrying_activity_then_cancel(db_url: str, worker: ThreadWorker) -> None:
    duro(db_url, "workflow", "start", "fetch", "--id", "f", "--input", '"http://down"')

    def failed_once() -> Any:
        pending = duro_json(db_url, "workflow", "describe", "f")["pending_activities"]
        return pending and pending[0]["last_failure"] and pending[0]

    activity = wait_until(failed_once, "the first attempt to fail")
    assert activity["activity_type"] == "unreachable" and activity["attempt"] == 2
    assert activity["next_attempt_time"] is not None
    text = duro(db_url, "workflow", "describe", "f").stdout
    assert "Pending activities" in text and "ConnectionError: cannot reach http://down" in text

    assert "Requested cancellation" in duro(db_url, "workflow", "cancel", "f").stdout
    out = duro(db_url, "workflow", "result", "f", "--timeout", str(DEADLINE), code=1)
    assert "canceled" in out.stderr


def test_terminate(db_url: str, worker: ThreadWorker) -> None:
    duro(db_url, "workflow", "start", "Approval", "--id", "t", "--input", '"x"')
    assert "Terminated" in duro(db_url, "workflow", "terminate", "t", "--reason", "stop").stdout
    data = duro_json(db_url, "workflow", "result", "t", code=1)
    assert data["status"] == "Terminated" and data["failure"]["message"] == "stop"
    assert "reason=stop" in duro(db_url, "workflow", "show", "t").stdout
    out = duro(db_url, "workflow", "signal", "t", "approve", "--input", '"late"', code=1)
    assert "is closed (terminated)" in out.stderr


def test_start_options(db_url: str, worker: ThreadWorker) -> None:
    args = ("workflow", "start", "Approval", "--id", "opt", "--input", '"deploy"')
    first = duro_json(
        db_url,
        *args,
        "--request-id",
        "req-1",
        "--memo",
        '{"ticket": "T-9"}',
        "--search-attr",
        'Customer="c-42"',
        "--search-attr",
        'Due={"datetime": "2026-12-01T09:00:00+00:00"}',
        "--priority",
        "3",
        "--run-timeout",
        "60",
    )
    # The same request id is an idempotent retry: same run, no error.
    again = duro_json(db_url, *args, "--request-id", "req-1")
    assert again["run_id"] == first["run_id"]
    info = duro_json(db_url, "workflow", "describe", "opt")
    assert info["memo"] == {"ticket": "T-9"}
    found = duro_json(db_url, "workflow", "list", "--query", "Customer = 'c-42'")
    assert [r["workflow_id"] for r in found] == ["opt"]
    found = duro_json(db_url, "workflow", "list", "--query", "Due > '2026-11-30T00:00:00Z'")
    assert [r["workflow_id"] for r in found] == ["opt"]

    # Signal-with-start onto the running run (use_existing): no new run, the signal lands.
    out = duro_json(
        db_url,
        *args,
        "--id-conflict",
        "use_existing",
        "--signal",
        "approve",
        "--signal-input",
        '"carol"',
    )
    assert out["run_id"] == first["run_id"]
    result = duro_json(db_url, "workflow", "result", "opt", "--timeout", str(DEADLINE))
    assert result["result"] == {"title": "deploy", "approved_by": "carol"}

    # A closed id may not be reused under reject_duplicate.
    out = duro(db_url, *args, "--id-reuse", "reject_duplicate", code=1)
    assert "opt" in out.stderr

    # Signal-with-start of a new run: the signal is in its history before its first task.
    data = duro_json(
        db_url,
        "workflow",
        "start",
        "Approval",
        "--id",
        "sws",
        "--input",
        '"x"',
        "--signal",
        "approve",
        "--signal-input",
        '"dan"',
        "--wait",
    )
    assert data["result"] == {"title": "x", "approved_by": "dan"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--signal-input", "1"), "--signal-input needs --signal NAME"),
        (("--memo", "[1]"), "--memo must be a JSON object"),
        (("--search-attr", "Customer"), "must be KEY=JSON"),
        (("--search-attr", "C=[1]"), "must be a JSON string, number or boolean"),
        (("--search-attr", 'D={"datetime": "soon"}'), "'soon' is not ISO 8601"),
        (("--search-attr", 'WorkflowType="x"'), "'WorkflowType' is a built-in field"),
        (("--search-attr", "Score=NaN"), "NaN is not a JSON number"),
        (("--memo", '{"a": Infinity}'), "Infinity is not a JSON number"),
        (("--run-timeout", "0"), "--run-timeout must be a positive number of seconds"),
        (("--execution-timeout", "nan"), "--execution-timeout must be a positive number"),
        (("--run-timeout", "1e400"), "--run-timeout must be a positive number"),
        (("--id-conflict", "maybe"), "Invalid value for '--id-conflict'"),
    ],
)
def test_start_option_errors(db_url: str, extra: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(
        cli, ["workflow", "start", "Approval", "--id", "e", *extra], env={"DURO_DB": db_url}
    )
    assert result.exit_code in (1, 2) and message in result.stderr, result.stderr
    assert duro_json(db_url, "workflow", "list") == []


def test_update_and_update_with_start(db_url: str, worker: ThreadWorker) -> None:
    def update(*args: str) -> Any:
        return json.loads(duro(db_url, "workflow", "update", "up", "note", *args).stdout)

    # Update-with-start: the run does not exist yet; one command starts it and updates it.
    start = ("--start", "Approval", "--start-input", '"launch"')
    assert update("--input", '"a"', *start) == 1
    # Again: the run exists now, so it is only updated.
    assert update("--input", '"b"', *start) == 2
    assert update("--input", '"c"') == 3
    assert len(duro_json(db_url, "workflow", "list")) == 1

    # The validator rejects; nothing is written to the history.
    before = len(duro_json(db_url, "workflow", "show", "up")["events"])
    out = duro(db_url, "workflow", "update", "up", "note", "--input", '" "', code=1)
    assert "a note needs text" in out.stderr
    assert len(duro_json(db_url, "workflow", "show", "up")["events"]) == before
    out = duro(db_url, "workflow", "update", "up", "note", "--start-input", "1", code=2)
    assert "--start-input needs --start TYPE" in out.stderr


def test_activity_complete_and_fail_by_token(db_url: str, worker: ThreadWorker) -> None:
    cli_app.ISSUED_TOKENS.clear()
    duro(db_url, "workflow", "start", "review", "--id", "rv", "--input", '"spec.md"')
    token = wait_until(lambda: cli_app.ISSUED_TOKENS and cli_app.ISSUED_TOKENS[-1], "a token")
    assert "heartbeat recorded" in duro(db_url, "activity", "heartbeat", token).stdout

    # A failure is retried per the activity's retry policy: a new attempt, a new token.
    duro(db_url, "activity", "fail", token, "--reason", "reviewer is out")
    second = wait_until(
        lambda: len(cli_app.ISSUED_TOKENS) == 2 and cli_app.ISSUED_TOKENS[1], "retry"
    )
    assert second != token
    out = duro(db_url, "activity", "complete", token, "--result", '"late"', code=1)
    assert "is no longer held; result rejected" in out.stderr  # the first attempt is over

    duro(db_url, "activity", "complete", second, "--result", '"approved"')
    data = duro_json(db_url, "workflow", "result", "rv", "--timeout", str(DEADLINE))
    assert data["result"] == "approved"
    out = duro(db_url, "activity", "complete", "not-a-token", code=1)
    assert "not an activity task token" in out.stderr


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("describe", "nope"),
        ("show", "nope"),
        ("result", "nope"),
        ("signal", "nope", "go"),
        ("query", "nope", "status"),
        ("cancel", "nope"),
        ("terminate", "nope"),
    ],
)
def test_unknown_workflow_id(db_url: str, args: tuple[str, ...]) -> None:
    out = duro(db_url, "workflow", *args, code=1)
    assert out.stderr.strip() == "Error: workflow 'nope' not found"


def test_unknown_handler_names_once_a_worker_registered(db_url: str, worker: ThreadWorker) -> None:
    duro(db_url, "workflow", "start", "Approval", "--id", "a", "--input", '"x"')
    out = duro(db_url, "workflow", "signal", "a", "reject", code=1)
    assert "has no signal named 'reject'; it defines: approve" in out.stderr
    out = duro(db_url, "workflow", "query", "a", "stage", code=1)
    assert "has no query named 'stage'; it defines: status" in out.stderr
    out = duro(db_url, "workflow", "start", "Nope", "--id", "n", code=1)
    assert "unknown workflow type 'Nope'" in out.stderr


def test_bad_input(db_url: str) -> None:
    out = duro(db_url, "workflow", "start", "hello", "--id", "x", "--input", "bob", code=1)
    assert "--input 'bob' is not valid JSON" in out.stderr and out.stderr.count("\n") == 1
    out = duro(db_url, "workflow", "signal", "x", "go", "--input", "{", code=1)
    assert "is not valid JSON" in out.stderr
    out = duro(db_url, "workflow", "start", "hello", "--id", "x", "--args", '"bob"', code=1)
    assert "--args must be a JSON list" in out.stderr
    args = ("workflow", "start", "hello", "--id", "x", "--input", "1", "--args", "[1]")
    duro(db_url, *args, code=2)
    duro(db_url, "workflow", "list", "--status", "Sleeping", code=2)


def test_already_started(db_url: str) -> None:
    duro(db_url, "workflow", "start", "Approval", "--id", "dup", "--input", '"x"')
    out = duro(db_url, "workflow", "start", "Approval", "--id", "dup", "--input", '"x"', code=1)
    assert "already running" in out.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://app:secret@127.0.0.1:1/db", "cannot connect to PostgreSQL"),
        ("sqlite://relative.db", "bad SQLite URL"),
        ("mysql://host/db", "unsupported database URL"),
    ],
)
def test_bad_database_url(db_url: str, url: str, message: str) -> None:
    out = duro(db_url, "workflow", "list", "--db", url, code=1)
    shown = url.replace(":secret@", ":***@")
    assert f"cannot open database {shown!r}" in out.stderr and message in out.stderr
    assert "secret" not in out.stderr


def test_db_option_overrides_the_environment(db_url: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    duro(other, "workflow", "start", "hello", "--id", "elsewhere", "--input", '"x"')
    assert duro_json(db_url, "workflow", "list") == []
    [row] = duro_json(db_url, "workflow", "list", "--db", other)
    assert row["workflow_id"] == "elsewhere"


# -- worker ---------------------------------------------------------------------------------------


def test_load_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    workflows, activities = load_target("tests.cli_app")
    assert {w.__name__ for w in workflows} == {"hello", "doomed", "fetch", "review", "Approval"}
    assert {a.__name__ for a in activities} == {"greet", "unreachable", "external_review"}
    workflows, activities = load_target("tests.cli_app:everything")
    assert {x.__name__ for x in [*workflows, *activities]} == APP_NAMES
    assert load_target("tests.cli_app:Approval") == ([cli_app.Approval], [])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz", "cannot import 'no_such_module_xyz': no module named"),
        ("tests.cli_app:nope", "module 'tests.cli_app' has no attribute 'nope'"),
        ("tests.cli_app:timedelta", "must be a list of workflows and activities"),
        ("json", "no workflows or activities found in 'json'"),
        ("tests.cli_app:", "bad worker target"),
    ],
)
def test_worker_target_errors(
    db_url: str, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    monkeypatch.chdir(ROOT)
    out = duro(db_url, "worker", target, code=2)
    assert message in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.slow
async def test_worker_subprocess_runs_workflows_and_stops_on_sigterm(
    db_url: str, client: Client
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duro.cli",
        "worker",
        "tests.cli_app",
        "--db",
        db_url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()
        assert "polling queue 'default'" in banner and "Approval" in banner, banner
        handle = await client.start_workflow("hello", "subprocess", id="sub")
        assert await handle.result(timeout=DEADLINE) == "hello subprocess"

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        assert "worker stopped" in (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- rendering ------------------------------------------------------------------------------------


def test_failure_text_follows_causes() -> None:
    failure = {
        "type": "ActivityError",
        "message": "activity 'book' failed",
        "cause": {"type": "HTTPError", "message": "503"},
    }
    assert render.failure_text(failure) == "ActivityError: activity 'book' failed <- HTTPError: 503"
    assert render.failure_text(None) == "-"


def test_times_are_utc_iso() -> None:
    assert render.human_time(0.5) == "1970-01-01T00:00:00.500Z"
    assert render.human_time(None) == "-"
    assert render.json_time(0.0) == "1970-01-01T00:00:00+00:00"


def test_event_summary_is_short() -> None:
    event = Event(
        3,
        EventType.ACTIVITY_TASK_SCHEDULED,
        0.0,
        {"seq": 1, "activity_type": "call_model", "args": ["x" * 500], "retry_policy": {}},
    )
    summary = render.event_summary(event)
    assert summary.startswith('call_model seq=1 args=["xxx')
    assert summary.endswith("…") and len(summary) < 120


def test_db_status_and_migrate(db_url: str, tmp_path: Path) -> None:
    db = db_url.replace("duro.db", "schema.db")
    runner = CliRunner()
    before = runner.invoke(cli, ["db", "status", "--db", db])
    assert before.exit_code == 0, before.output
    assert "0001 initial" in before.output and "pending" in before.output
    assert not (tmp_path / "schema.db").exists()  # status changes nothing
    again = runner.invoke(cli, ["db", "status", "--db", db])
    assert "pending" in again.output
    migrated = runner.invoke(cli, ["db", "migrate", "--db", db, "--json"])
    assert migrated.exit_code == 0, migrated.output
    data = json.loads(migrated.output)
    assert data["up_to_date"] is True and data["pending"] == []
    from duro.store.migrate import migrations

    latest = len(migrations("postgres" if db.startswith("postgresql") else "sqlite"))
    assert latest == len(migrations("sqlite"))  # the two schemas keep in step
    assert [m["version"] for m in data["applied"]] == list(range(1, latest + 1))
    after = runner.invoke(cli, ["db", "status", "--db", db])
    assert f"schema version {latest} of {latest} (up to date)" in after.output


def test_every_command_is_documented() -> None:
    """docs/cli.md lists every command, so a new command cannot ship undocumented."""
    text = (ROOT / "docs" / "cli.md").read_text()
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        assert f"duro {name}" in text, f"docs/cli.md does not mention `duro {name}`"
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert re.search(rf"`({re.escape(name)} )?{sub}[` ]", text) or (
                    f"duro {name} {sub}" in text
                ), f"docs/cli.md does not document `duro {name} {sub}`"
