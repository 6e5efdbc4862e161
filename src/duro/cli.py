"""The ``duro`` command line: run a worker, and start, inspect and steer workflow runs.

Examples::

    duro worker examples.agent.agent --task-queue default
    duro workflow start TravelAgent --id trip-1 --input '{"request": "Paris -> Lisbon"}'
    duro workflow list --status Running
    duro workflow describe trip-1
    duro workflow signal trip-1 approve --input true
    duro workflow show trip-1 --json > trip-1.json    # the export the replay checker reads

Every command takes ``--db URL`` (default ``$DURO_DB``, then ``sqlite:///duro.db``) and
``--namespace``, opens its own client, does one thing and closes it. Arguments are JSON, one
per ``--input``. Errors that duro raises on purpose (unknown workflow, closed run, bad JSON...)
print one line on stderr and exit 1; bad usage exits 2. ``--json`` output is plain JSON on
stdout, never styled, so it can be piped.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import signal
import sys
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from duro import __version__
from duro import _cli_render as render
from duro.client import Client, IdConflictPolicy, IdReusePolicy, WorkflowHandle
from duro.definitions import activity_definition, workflow_definition
from duro.errors import WorkflowFailureError
from duro.history import Event, RunStatus
from duro.replayer import Replayer, ReplayResult
from duro.search_attributes import encode_all
from duro.store.protocol import ExecutionInfo
from duro.worker import Worker

__all__ = ["cli", "load_target", "main"]

from duro._cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    MAX_SECONDS,
    CliError,
    Connection,
    TargetError,
    connection_options,
    echo_json,
    echo_rich,
    inputs_option,
    json_option,
    parse_args,
    parse_json,
    redacted,
    run_action,
    run_id_option,
)

# -- root -----------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="duro")
def cli() -> None:
    """duro: durable execution for Python."""


@cli.group()
def workflow() -> None:
    """Start, inspect and steer workflow runs."""


def _register_admin() -> None:
    from duro._cli_admin import activity, db, limits, namespace, schedule

    for group in (activity, db, limits, namespace, schedule):
        cli.add_command(group)


_register_admin()


def main() -> None:
    """Entry point of the ``duro`` script (``pyproject.toml``) and ``python -m duro.cli``."""
    cli(prog_name="duro")


# -- workflow start / result ----------------------------------------------------------------------


@workflow.command("start")
@click.argument("workflow_type", metavar="TYPE")
@click.option("--id", "workflow_id", required=True, help="Workflow id (unique while running).")
@click.option("--task-queue", default="default", show_default=True)
@inputs_option
@click.option("--args", "args_json", metavar="JSON_LIST", help="All arguments as one JSON list.")
@click.option("--wait", is_flag=True, help="Wait for the run to close and print its result.")
@click.option("--timeout", type=float, metavar="SECONDS", help="With --wait: give up after.")
@click.option(
    "--id-conflict",
    type=click.Choice([p.value for p in IdConflictPolicy]),
    default=IdConflictPolicy.FAIL.value,
    show_default=True,
    help="When a run with this id is running.",
)
@click.option(
    "--id-reuse",
    type=click.Choice([p.value for p in IdReusePolicy]),
    default=IdReusePolicy.ALLOW_DUPLICATE.value,
    show_default=True,
    help="When the id's last run is closed.",
)
@click.option("--request-id", help="Idempotency key: repeating the start returns the same run.")
@click.option("--signal", "signal_name", metavar="NAME", help="Signal-with-start: send NAME.")
@click.option(
    "--signal-input", "signal_inputs", multiple=True, metavar="JSON", help="Argument of --signal."
)
@click.option("--memo", "memo_json", metavar="JSON_OBJECT", help="Memo shown by describe.")
@click.option(
    "--search-attr",
    "search_attrs",
    multiple=True,
    metavar="KEY=JSON",
    help="Typed search attribute, e.g. --search-attr 'Customer=\"c-42\"'.",
)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--concurrency-key", help="Key of a workflow_key flow limit.")
@click.option("--execution-timeout", type=float, metavar="SECONDS", help="Whole chain limit.")
@click.option("--run-timeout", type=float, metavar="SECONDS", help="Limit for each run.")
@json_option
@connection_options
def start_cmd(
    conn: Connection,
    workflow_type: str,
    workflow_id: str,
    task_queue: str,
    inputs: tuple[str, ...],
    args_json: str | None,
    wait: bool,
    timeout: float | None,
    id_conflict: str,
    id_reuse: str,
    request_id: str | None,
    signal_name: str | None,
    signal_inputs: tuple[str, ...],
    memo_json: str | None,
    search_attrs: tuple[str, ...],
    priority: int,
    concurrency_key: str | None,
    execution_timeout: float | None,
    run_timeout: float | None,
    as_json: bool,
) -> None:
    """Start a run of workflow TYPE (its registered name).

    With --signal, the signal is delivered in the same transaction as the start (to the running
    run instead, with --id-conflict use_existing).
    """
    args = parse_args(inputs, args_json)
    if signal_inputs and signal_name is None:
        raise click.UsageError("--signal-input needs --signal NAME")
    start_signal = (
        (signal_name, [parse_json(t, "--signal-input") for t in signal_inputs])
        if signal_name is not None
        else None
    )
    memo = parse_json(memo_json, "--memo") if memo_json is not None else None
    if memo is not None and not isinstance(memo, dict):
        raise CliError(f"--memo must be a JSON object, got {render.compact(memo)}")
    attributes = _parse_search_attrs(search_attrs)

    async def action(client: Client) -> tuple[str, ExecutionInfo | None]:
        handle = await client.start_workflow(
            workflow_type,
            *args,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=IdConflictPolicy(id_conflict),
            id_reuse_policy=IdReusePolicy(id_reuse),
            request_id=request_id,
            start_signal=start_signal,
            memo=memo,
            search_attributes=attributes,
            priority=priority,
            concurrency_key=concurrency_key,
            execution_timeout=_seconds(execution_timeout, "--execution-timeout"),
            run_timeout=_seconds(run_timeout, "--run-timeout"),
        )
        assert handle.run_id is not None
        if not as_json:
            click.echo(f"workflow id: {handle.id}\nrun id:      {handle.run_id}")
        return handle.run_id, (await _wait_closed(handle, timeout) if wait else None)

    run_id, closed = run_action(conn, action)
    if closed is not None:
        sys.exit(_print_outcome(closed, as_json))
    if as_json:
        echo_json({"workflow_id": workflow_id, "run_id": run_id})


def _parse_search_attrs(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=JSON`` pairs; ``{"datetime": "<ISO 8601>"}`` gives a datetime attribute."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CliError(f"--search-attr {item!r} must be KEY=JSON, e.g. 'Customer=\"c-42\"'")
        value = parse_json(raw, f"--search-attr {key}=")
        if isinstance(value, dict) and set(value) == {"datetime"}:
            try:
                value = datetime.fromisoformat(str(value["datetime"]))
            except ValueError:
                bad = value["datetime"]
                raise CliError(f"--search-attr {key}: {bad!r} is not ISO 8601") from None
        elif isinstance(value, dict | list) or value is None:
            raise CliError(
                f"--search-attr {key}: must be a JSON string, number or boolean "
                f'(or {{"datetime": "2026-01-01T00:00:00Z"}}), got {render.compact(value)}'
            )
        out[key] = value
    try:
        encode_all(out)  # refuses built-in field names and non-finite numbers
    except ValueError as e:
        raise CliError(f"--search-attr: {e}") from None
    return out


def _seconds(value: float | None, option: str) -> timedelta | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        raise CliError(f"{option} must be a positive number of seconds, got {value}")
    return timedelta(seconds=value)


@workflow.command("result")
@click.argument("workflow_id", metavar="ID")
@run_id_option
@click.option("--timeout", type=float, metavar="SECONDS", help="Give up after (default: never).")
@json_option
@connection_options
def result_cmd(
    conn: Connection, workflow_id: str, run_id: str | None, timeout: float | None, as_json: bool
) -> None:
    """Wait for a run to close; print its result.

    Exits 1 after printing the failure if the run failed, was canceled or was terminated.
    """

    async def action(client: Client) -> ExecutionInfo:
        return await _wait_closed(client.get_workflow_handle(workflow_id, run_id=run_id), timeout)

    sys.exit(_print_outcome(run_action(conn, action), as_json))


async def _wait_closed(handle: WorkflowHandle, timeout: float | None) -> ExecutionInfo:
    """Wait for the run to close and return its final state.

    The run id is pinned first so that the outcome printed is the one of the run we waited on.
    """
    if handle.run_id is None:
        handle = handle.client.get_workflow_handle(
            handle.id, run_id=(await handle.describe()).run_id
        )
    try:
        await handle.result(timeout=timeout)
    except WorkflowFailureError:
        pass  # the failure is read from describe() below, with its stored details
    return await handle.describe()


def _print_outcome(info: ExecutionInfo, as_json: bool) -> int:
    """Print a closed run's result (stdout) or failure (stderr); return the exit code."""
    ok = info.status == RunStatus.COMPLETED
    if as_json:
        data: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "run_id": info.run_id,
            "status": info.status.value,
        }
        data.update({"result": info.result} if ok else {"failure": info.failure})
        echo_json(data)
    elif ok:
        click.echo(json.dumps(info.result, default=str, ensure_ascii=False))
    else:
        why = f": {render.failure_text(info.failure)}" if info.failure else ""
        click.echo(
            f"Error: workflow {info.workflow_id!r} (run {info.run_id}) "
            f"{info.status.value.lower()}{why}",
            err=True,
        )
    return 0 if ok else EXIT_FAILURE


# -- workflow list / describe / show --------------------------------------------------------------


@workflow.command("list")
@click.option("--type", "workflow_type", metavar="TYPE", help="Only runs of this workflow type.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs with this status.",
)
@click.option(
    "--query",
    metavar="QUERY",
    help="Visibility query, e.g. \"WorkflowType = 'Agent' AND Status = 'Running'\".",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@connection_options
def list_cmd(
    conn: Connection,
    workflow_type: str | None,
    status: str | None,
    query: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first (or as the query's ORDER BY says)."""

    async def action(client: Client) -> list[ExecutionInfo]:
        return await client.list_workflows(
            query, workflow_type=workflow_type, status=status, limit=limit
        )

    infos = run_action(conn, action)
    if as_json:
        echo_json([render.execution_json(info) for info in infos])
    elif not infos:
        click.echo("No workflows found.")
    else:
        echo_rich(render.executions_table(infos))


@workflow.command("count")
@click.option("--query", metavar="QUERY", help="Visibility query (default: all runs).")
@connection_options
def count_cmd(conn: Connection, query: str | None) -> None:
    """Count the runs a visibility query matches."""

    async def action(client: Client) -> int:
        return await client.count_workflows(query)

    click.echo(str(run_action(conn, action)))


@workflow.command("describe")
@click.argument("workflow_id", metavar="ID")
@run_id_option
@json_option
@connection_options
def describe_cmd(conn: Connection, workflow_id: str, run_id: str | None, as_json: bool) -> None:
    """Show a run's state and what it waits on.

    Status, times, result or failure, a failing workflow task, and the pending activities
    (attempt, next retry, last failure) and timers: what an operator asks of a stuck run.
    """

    async def action(client: Client) -> ExecutionInfo:
        return await client.get_workflow_handle(workflow_id, run_id=run_id).describe()

    info = run_action(conn, action)
    if as_json:
        echo_json(render.execution_json(info, detail=True))
    else:
        echo_rich(render.describe_view(info))


@workflow.command("show")
@click.argument("workflow_id", metavar="ID")
@run_id_option
@click.option("--json", "as_json", is_flag=True, help="Export the history as JSON.")
@connection_options
def show_cmd(conn: Connection, workflow_id: str, run_id: str | None, as_json: bool) -> None:
    """Show a run's history, event by event.

    With --json, print the export that replay checks read: {"workflow_id", "run_id",
    "events": [...]}.
    """

    async def action(client: Client) -> tuple[ExecutionInfo, list[Event]]:
        info = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        return info, await client.store.get_history(info.run_id)

    info, events = run_action(conn, action)
    if as_json:
        echo_json(render.history_json(info.workflow_id, info.run_id, events))
    else:
        title = f"{info.workflow_id}  run {info.run_id}  {info.workflow_type}  {info.status.value}"
        echo_rich(render.history_table(events, title))


# -- workflow signal / query / cancel / terminate -------------------------------------------------


@workflow.command("signal")
@click.argument("workflow_id", metavar="ID")
@click.argument("name")
@inputs_option
@run_id_option
@click.option("--request-id", help="Sending twice with the same request id signals once.")
@connection_options
def signal_cmd(
    conn: Connection,
    workflow_id: str,
    name: str,
    inputs: tuple[str, ...],
    run_id: str | None,
    request_id: str | None,
) -> None:
    """Send signal NAME to a running workflow."""
    args = parse_args(inputs)

    async def action(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        await handle.signal(name, *args, request_id=request_id)

    run_action(conn, action)
    click.echo(f"Signaled {name!r} to workflow {workflow_id!r}.")


@workflow.command("query")
@click.argument("workflow_id", metavar="ID")
@click.argument("name")
@inputs_option
@run_id_option
@click.option("--timeout", type=float, default=10.0, show_default=True, metavar="SECONDS")
@connection_options
def query_cmd(
    conn: Connection,
    workflow_id: str,
    name: str,
    inputs: tuple[str, ...],
    run_id: str | None,
    timeout: float,
) -> None:
    """Query a run; print the answer as JSON.

    A worker of the run's queue answers from the run's state; history is not touched.
    """
    args = parse_args(inputs)

    async def action(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        return await handle.query(name, *args, timeout=timeout)

    echo_json(run_action(conn, action))


@workflow.command("update")
@click.argument("workflow_id", metavar="ID")
@click.argument("name")
@inputs_option
@run_id_option
@click.option("--update-id", help="Idempotency key: the same id is one update.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Give up after (default: never).")
@click.option(
    "--start", "start_type", metavar="TYPE", help="Update-with-start: start TYPE unless ID runs."
)
@click.option("--start-input", "start_inputs", multiple=True, metavar="JSON", help="For --start.")
@click.option("--task-queue", default="default", show_default=True, help="For --start.")
@connection_options
def update_cmd(
    conn: Connection,
    workflow_id: str,
    name: str,
    inputs: tuple[str, ...],
    run_id: str | None,
    update_id: str | None,
    timeout: float | None,
    start_type: str | None,
    start_inputs: tuple[str, ...],
    task_queue: str,
) -> None:
    """Send update NAME to a running workflow; print its handler's result as JSON.

    The update's validator runs first: a rejected update changes nothing and exits 1. With
    --start, the workflow is started in the same transaction when ID is not running.
    """
    args = parse_args(inputs)
    if start_type is None and start_inputs:
        raise click.UsageError("--start-input needs --start TYPE")
    if start_type is not None and run_id is not None:
        raise click.UsageError("--start and --run-id cannot be combined")
    start_args = [parse_json(t, "--start-input") for t in start_inputs]

    async def action(client: Client) -> Any:
        if start_type is not None:
            _, result = await client.execute_update_with_start(
                start_type,
                *start_args,
                id=workflow_id,
                update=name,
                update_args=args,
                update_id=update_id,
                timeout=timeout,
                task_queue=task_queue,
            )
            return result
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        return await handle.execute_update(name, *args, update_id=update_id, timeout=timeout)

    echo_json(run_action(conn, action))


def _reset_point(text: str) -> int | str:
    if text in ("first", "last"):
        return f"{text}_workflow_task"
    try:
        return int(text)
    except ValueError:
        raise CliError(f"--to must be an event id, 'first' or 'last', not {text!r}") from None


@workflow.command("reset")
@click.argument("workflow_id", metavar="ID")
@click.option("--to", "to", default="last", show_default=True, help="Event id, first or last.")
@click.option("--reason", default="", help="Recorded in both runs.")
@click.option("--no-signals", is_flag=True, help="Do not re-apply signals after the point.")
@click.option("--fork", "fork_id", metavar="NEW_ID", help="Fork into this workflow id instead.")
@run_id_option
@connection_options
def reset_cmd(
    conn: Connection,
    workflow_id: str,
    to: str,
    reason: str,
    no_signals: bool,
    fork_id: str | None,
    run_id: str | None,
) -> None:
    """Re-run a workflow from a workflow task with the current code (reset or --fork)."""
    point = _reset_point(to)

    async def action(client: Client) -> dict[str, str | None]:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        if fork_id:
            new = await handle.fork(fork_id, point, reason=reason, reapply_signals=not no_signals)
        else:
            new = await handle.reset(point, reason=reason, reapply_signals=not no_signals)
        return {"workflow_id": new.id, "run_id": new.run_id}

    echo_json(run_action(conn, action))


@workflow.command("cancel")
@click.argument("workflow_id", metavar="ID")
@run_id_option
@click.option("--reason", default="", help="Recorded in history.")
@connection_options
def cancel_cmd(conn: Connection, workflow_id: str, run_id: str | None, reason: str) -> None:
    """Ask a run to cancel (its code may clean up).

    Unlike terminate, the workflow code sees the cancellation at its await points and decides
    how to close, e.g. by compensating what it already did.
    """

    async def action(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).cancel(reason)

    run_action(conn, action)
    click.echo(f"Requested cancellation of workflow {workflow_id!r}.")


@workflow.command("terminate")
@click.argument("workflow_id", metavar="ID")
@run_id_option
@click.option("--reason", default="", help="Recorded in history.")
@connection_options
def terminate_cmd(conn: Connection, workflow_id: str, run_id: str | None, reason: str) -> None:
    """Close a run at once, without running any more of its code."""

    async def action(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason)

    run_action(conn, action)
    click.echo(f"Terminated workflow {workflow_id!r}.")


# -- replay ---------------------------------------------------------------------------------------


@cli.command("replay")
@click.argument("target")
@click.argument("files", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--query",
    metavar="QUERY",
    help="Replay the runs this visibility query selects from --db (default: running runs).",
)
@click.option("--from-db", is_flag=True, help="Replay runs from the database (see --query).")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option
@connection_options
def replay_cmd(
    conn: Connection,
    target: str,
    files: tuple[Path, ...],
    query: str | None,
    from_db: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Replay histories against the workflows of TARGET; exit 1 if any diverges.

    The check to run before a deploy: FILES are histories exported with
    `duro workflow show ID --json` (folders: every *.json inside), or, with --from-db or
    --query, the runs of the database. TARGET is loaded like `duro worker TARGET`.
    """
    workflows, _ = load_target(target)
    if not workflows:
        raise TargetError(f"{target!r} registers no workflows to replay")
    replayer = Replayer(workflows)
    results = replayer.replay_files(files) if files else []
    if query is not None or from_db or not files:

        async def action(client: Client) -> list[ReplayResult]:
            return await replayer.replay_store(client, query, limit=limit)

        results += run_action(conn, action)
    failed = [r for r in results if not r.ok]
    if as_json:
        echo_json(
            [
                {
                    "workflow_id": r.workflow_id,
                    "run_id": r.run_id,
                    "workflow_type": r.workflow_type,
                    "source": r.source,
                    "ok": r.ok,
                    "error": None if r.ok else f"{type(r.error).__name__}: {r.error}",
                }
                for r in results
            ]
        )
    else:
        for r in results:
            click.echo(str(r))
        click.echo(f"{len(results) - len(failed)} replayed cleanly, {len(failed)} diverged")
    if failed:
        sys.exit(EXIT_FAILURE)


# -- worker ---------------------------------------------------------------------------------------


@cli.command("worker")
@click.argument("target")
@click.option("--task-queue", default="default", show_default=True)
@click.option("--build-id", default="", help="Stamped on the runs this worker advances.")
@click.option("--max-concurrent-activities", type=click.IntRange(min=1), metavar="N")
@click.option("--max-concurrent-workflow-tasks", type=click.IntRange(min=1), metavar="N")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
)
@connection_options
def worker_cmd(
    conn: Connection,
    target: str,
    task_queue: str,
    build_id: str,
    max_concurrent_activities: int | None,
    max_concurrent_workflow_tasks: int | None,
    log_level: str,
) -> None:
    """Run the workflows and activities of TARGET.

    TARGET is a module (package.module: every workflow and activity in it is registered) or
    package.module:OBJ, where OBJ is a list of workflows and activities or a function returning
    one. The current directory is importable. Runs until SIGINT or SIGTERM, then finishes
    in-flight work and exits 0; a second signal stops at once.
    """
    workflows, activities = load_target(target)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limits: dict[str, Any] = {}  # only what was given: the worker owns the defaults
    if max_concurrent_activities is not None:
        limits["max_concurrent_activities"] = max_concurrent_activities
    if max_concurrent_workflow_tasks is not None:
        limits["max_concurrent_workflow_tasks"] = max_concurrent_workflow_tasks

    async def action(client: Client) -> int:
        try:
            worker = Worker(
                client,
                task_queue=task_queue,
                workflows=workflows,
                activities=activities,
                build_id=build_id,
                **limits,
            )
        except (TypeError, ValueError) as e:
            raise TargetError(f"cannot start the worker: {e}") from None
        names = [_registered_name(x) for x in [*workflows, *activities]]
        click.echo(
            f"duro worker {worker.identity} polling queue {task_queue!r} of namespace "
            f"{conn.namespace!r} ({redacted(client.store.url)}): {', '.join(names)}"
        )
        return await _serve(worker)

    sys.exit(run_action(conn, action))


async def _serve(worker: Worker) -> int:
    """Run ``worker`` until a signal; the first SIGINT/SIGTERM drains, a second one forces.

    The handlers go through the loop (``add_signal_handler``) so that stopping is an ordinary
    call on the loop, not an exception raised at an arbitrary await point; in-flight workflow
    tasks and activities then finish (up to the worker's grace period) and leases are released.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(worker.run())
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        if len(received) == 1:
            click.echo(f"{name}: finishing in-flight work (send again to stop at once)", err=True)
            worker.request_shutdown()
        else:
            task.cancel()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # no loop signal support (Windows, thread)
            pass
    try:
        await task
    except asyncio.CancelledError:
        if len(received) < 2:
            raise
        click.echo("worker stopped without draining", err=True)
        return EXIT_INTERRUPTED
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    click.echo("worker stopped", err=True)
    return 0


def load_target(target: str) -> tuple[list[Any], list[Any]]:
    """Import TARGET and return its ``(workflows, activities)``; exit 2 with a reason if not."""
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise TargetError(f"bad worker target {target!r}: expected package.module[:OBJ]")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise TargetError(
                f"cannot import {module_name!r}: no module named {e.name!r} (searched the "
                f"current directory {cwd} and the installed packages)"
            ) from None
        raise TargetError(f"cannot import {module_name!r}: {e}") from None
    except Exception as e:
        raise TargetError(f"importing {module_name!r} failed: {_exc_line(e)}") from None

    if not attr:
        found = _split(list(vars(module).values()), strict=False)
    else:
        found = _split(_resolve_attr(module, module_name, attr), strict=True)
    if not found[0] and not found[1]:
        raise TargetError(
            f"no workflows or activities found in {target!r}: decorate them with "
            "@workflow.defn / @activity.defn"
        )
    return found


def _resolve_attr(module: Any, module_name: str, attr: str) -> list[Any]:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if workflow_definition(obj) is not None or activity_definition(obj) is not None:
        return [obj]
    if callable(obj) and not isinstance(obj, list | tuple):
        try:
            obj = obj()
        except Exception as e:
            raise TargetError(f"calling {attr}() failed: {_exc_line(e)}") from None
    if not isinstance(obj, list | tuple):
        raise TargetError(
            f"{module_name}:{attr} must be a list of workflows and activities (or a function "
            f"returning one), got {type(obj).__name__}"
        )
    return list(obj)


def _split(objects: list[Any], *, strict: bool) -> tuple[list[Any], list[Any]]:
    """Sort objects into workflows and activities (each once); ``strict``: reject the rest."""
    workflows: list[Any] = []
    activities: list[Any] = []
    seen: set[int] = set()
    for obj in objects:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if workflow_definition(obj) is not None:
            workflows.append(obj)
        elif activity_definition(obj) is not None:
            activities.append(obj)
        elif strict:
            raise TargetError(f"{obj!r} is neither a workflow nor an activity")
    return workflows, activities


def _registered_name(obj: Any) -> str:
    defn = workflow_definition(obj) or activity_definition(obj)
    return defn.name if defn is not None else repr(obj)


def _exc_line(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


if __name__ == "__main__":
    main()
