"""Administrative commands: ``duro db``, ``schedule``, ``namespace``, ``limits``, ``activity``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from duro import _cli_render as render
from duro._cli_common import (
    MAX_SECONDS,
    CliError,
    Connection,
    connection_options,
    echo_json,
    inputs_option,
    json_option,
    parse_args,
    parse_json,
    redacted,
    run_action,
)
from duro.client import Client
from duro.errors import DuroError
from duro.schedules import OverlapPolicy, ScheduleSpec, upcoming
from duro.store import SchemaStatus, migrate_schema, schema_status
from duro.store.protocol import FlowLimit, NamespaceSettings, ScheduleInfo

T = TypeVar("T")

# -- db -------------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Inspect and migrate the database schema."""


def _schema_json(status: SchemaStatus) -> dict[str, Any]:
    return {
        "current": status.current,
        "latest": status.latest,
        "up_to_date": status.up_to_date,
        "applied": [
            {"version": v, "name": n, "applied_at": render.json_time(t)}
            for v, n, t in status.applied
        ],
        "pending": [{"version": v, "name": n} for v, n in status.pending],
    }


def _echo_schema(status: SchemaStatus) -> None:
    for v, n, t in status.applied:
        click.echo(f"  {v:04d} {n:30s} applied {render.human_time(t)}")
    for v, n in status.pending:
        click.echo(f"  {v:04d} {n:30s} pending")
    state = "up to date" if status.up_to_date else f"{len(status.pending)} pending"
    click.echo(f"schema version {status.current} of {status.latest} ({state})")


@db.command("status")
@json_option
@connection_options
def db_status(conn: Connection, as_json: bool) -> None:
    """Show applied and pending schema migrations (changes nothing)."""
    try:
        status = asyncio.run(schema_status(conn.db))
    except (DuroError, ValueError) as e:
        raise CliError(f"cannot read the schema of {redacted(conn.db)!r}: {e}") from e
    if as_json:
        echo_json(_schema_json(status))
    else:
        _echo_schema(status)
    if status.current > status.latest:
        raise CliError(
            f"the database schema ({status.current}) is newer than this duro ({status.latest}): "
            "upgrade duro"
        )


@db.command("migrate")
@json_option
@connection_options
def db_migrate(conn: Connection, as_json: bool) -> None:
    """Apply pending schema migrations (opening a store also does this)."""
    try:
        status = asyncio.run(migrate_schema(conn.db))
    except (DuroError, ValueError) as e:
        raise CliError(f"cannot migrate {redacted(conn.db)!r}: {e}") from e
    if as_json:
        echo_json(_schema_json(status))
    else:
        _echo_schema(status)


# -- schedule -------------------------------------------------------------------------------------


@click.group()
def schedule() -> None:
    """Recurring workflow starts: create, list, describe, pause, trigger, backfill, delete."""


def _schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "schedule_id": info.schedule_id,
        "workflow_type": info.action.workflow_type,
        "task_queue": info.action.task_queue,
        "args": info.action.args,
        "spec": info.spec.to_dict(),
        "overlap": info.overlap.value,
        "catchup_window": info.catchup_window,
        "paused": info.paused,
        "note": info.note,
        "next_runs": [render.json_time(t) for t in upcoming(info)],
        "last_workflow_id": info.last_workflow_id,
        "fired": info.fired,
        "skipped": info.skipped,
    }


def _parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise CliError(f"bad duration {text!r}: use e.g. 30s, 15m, 2h or 1d")
    return seconds


def _parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text!r} is not an ISO time, e.g. 2026-01-01T09:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@schedule.command("create")
@click.argument("schedule_id", metavar="ID")
@click.option("--workflow", "workflow_type", required=True, help="Workflow type to start.")
@click.option("--cron", multiple=True, help="Cron expression (repeatable), e.g. '0 9 * * 1-5'.")
@click.option("--every", metavar="DURATION", help="Fixed interval, e.g. 15m.")
@click.option("--timezone", default="UTC", show_default=True, help="Time zone of --cron.")
@click.option("--jitter", metavar="DURATION", help="Delay each start by up to this.")
@click.option(
    "--overlap",
    type=click.Choice([p.value for p in OverlapPolicy]),
    default=OverlapPolicy.SKIP.value,
    show_default=True,
)
@click.option("--task-queue", default="default", show_default=True)
@click.option("--offset", metavar="DURATION", help="Shift --every times, e.g. 5m past the hour.")
@click.option("--start-at", metavar="ISO_TIME", help="Fire no earlier than this.")
@click.option("--end-at", metavar="ISO_TIME", help="Fire no later than this.")
@click.option(
    "--catchup-window",
    metavar="DURATION",
    default="1d",
    show_default=True,
    help="Times missed longer ago than this (no worker ran) are skipped.",
)
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--note", help="Why it exists (shown by describe).")
@inputs_option
@connection_options
def schedule_create(
    conn: Connection,
    schedule_id: str,
    workflow_type: str,
    cron: tuple[str, ...],
    every: str | None,
    timezone: str,
    jitter: str | None,
    overlap: str,
    task_queue: str,
    offset: str | None,
    start_at: str | None,
    end_at: str | None,
    catchup_window: str,
    paused: bool,
    note: str | None,
    inputs: tuple[str, ...],
) -> None:
    """Create schedule ID that starts --workflow at --cron times and/or --every interval."""
    try:
        spec = ScheduleSpec(
            cron=cron,
            interval=_parse_duration(every) if every else None,
            offset=_parse_duration(offset) if offset else 0.0,
            timezone=timezone,
            jitter=_parse_duration(jitter) if jitter else 0.0,
            start_at=_parse_time(start_at, "--start-at").timestamp() if start_at else None,
            end_at=_parse_time(end_at, "--end-at").timestamp() if end_at else None,
        )
    except ValueError as e:
        raise CliError(str(e)) from None
    catchup = _parse_duration(catchup_window)
    if catchup <= 0:
        raise CliError(f"--catchup-window must be positive, got {catchup_window!r}")
    args = parse_args(inputs)

    async def action(client: Client) -> ScheduleInfo:
        handle = await client.create_schedule(
            schedule_id,
            workflow_type,
            *args,
            spec=spec,
            task_queue=task_queue,
            overlap=OverlapPolicy(overlap),
            catchup_window=timedelta(seconds=catchup),
            paused=paused,
            note=note,
        )
        return await handle.describe()

    echo_json(_schedule_json(run_action(conn, action)))


@schedule.command("list")
@json_option
@connection_options
def schedule_list(conn: Connection, as_json: bool) -> None:
    """List the namespace's schedules."""

    async def action(client: Client) -> list[ScheduleInfo]:
        return await client.list_schedules()

    infos = run_action(conn, action)
    if as_json:
        echo_json([_schedule_json(i) for i in infos])
        return
    if not infos:
        click.echo("No schedules.")
    for i in infos:
        nxt = upcoming(i, 1)
        when = render.human_time(nxt[0]) if nxt else ("paused" if i.paused else "ended")
        click.echo(
            f"{i.schedule_id}: {i.action.workflow_type} next {when}, fired {i.fired}, "
            f"skipped {i.skipped}"
        )


@schedule.command("describe")
@click.argument("schedule_id", metavar="ID")
@connection_options
def schedule_describe(conn: Connection, schedule_id: str) -> None:
    """Show a schedule: its spec, policy, next times and counts."""

    async def action(client: Client) -> ScheduleInfo:
        return await client.get_schedule_handle(schedule_id).describe()

    echo_json(_schedule_json(run_action(conn, action)))


def _schedule_op(name: str, help_text: str) -> None:
    @schedule.command(name, help=help_text)
    @click.argument("schedule_id", metavar="ID")
    @click.option("--note", default="", help="Why (pause / unpause).")
    @connection_options
    def command(conn: Connection, schedule_id: str, note: str) -> None:
        async def action(client: Client) -> str:
            handle = client.get_schedule_handle(schedule_id)
            if name == "pause":
                await handle.pause(note)
            elif name == "unpause":
                await handle.unpause(note)
            elif name == "trigger":
                return await handle.trigger()
            else:
                await handle.delete()
            return ""

        out = run_action(conn, action)
        click.echo(out or f"{name}: {schedule_id}")


_schedule_op("pause", "Stop firing until unpause; times passed meanwhile are skipped.")
_schedule_op("unpause", "Resume firing from now on.")
_schedule_op("trigger", "Start a run now, outside the schedule's times; prints its workflow id.")
_schedule_op("delete", "Delete the schedule (runs it started are not affected).")


@schedule.command("backfill")
@click.argument("schedule_id", metavar="ID")
@click.option("--start", "start", required=True, help="ISO time, e.g. 2026-01-01T00:00:00Z.")
@click.option("--end", "end", required=True, help="ISO time.")
@connection_options
def schedule_backfill(conn: Connection, schedule_id: str, start: str, end: str) -> None:
    """Start the runs of every time in [start, end] not run already; prints their ids."""
    start_at, end_at = _parse_time(start, "--start"), _parse_time(end, "--end")

    async def action(client: Client) -> list[str]:
        return await client.get_schedule_handle(schedule_id).backfill(start_at, end_at)

    echo_json(run_action(conn, action))


# -- namespace ------------------------------------------------------------------------------------


@click.group()
def namespace() -> None:
    """Per-namespace settings: retention of closed runs."""


def _settings_json(settings: NamespaceSettings) -> dict[str, Any]:
    return {
        "namespace": settings.namespace,
        "retention_days": settings.retention_seconds / 86400,
        "archive_dir": settings.archive_dir,
    }


@namespace.command("describe")
@json_option
@connection_options
def namespace_describe(conn: Connection, as_json: bool) -> None:
    """Show the namespace's retention period and archive directory."""

    async def action(client: Client) -> NamespaceSettings:
        return await client.namespace_settings()

    data = _settings_json(run_action(conn, action))
    if as_json:
        echo_json(data)
    else:
        click.echo(
            f"namespace {data['namespace']}: closed runs kept {data['retention_days']:g} days"
            + (f", archived to {data['archive_dir']}" if data["archive_dir"] else "")
        )


@namespace.command("search-attributes")
@click.option("--add", "names", multiple=True, metavar="NAME", help="Register NAME (repeatable).")
@connection_options
def namespace_search_attributes(conn: Connection, names: tuple[str, ...]) -> None:
    """List the namespace's search attribute names; --add registers names before any run sets
    them, so queries naming them match nothing instead of failing as a likely typo."""

    async def action(client: Client) -> list[str]:
        if names:
            try:
                await client.register_search_attributes(*names)
            except ValueError as e:
                raise CliError(str(e)) from None
        return await client.search_attribute_names()

    echo_json(run_action(conn, action))


@namespace.command("set")
@click.option("--retention-days", type=click.FloatRange(min=0, min_open=True), required=True)
@click.option("--archive-dir", metavar="DIR", help="Export closed runs here before deleting.")
@connection_options
def namespace_set(conn: Connection, retention_days: float, archive_dir: str | None) -> None:
    """Set how long closed runs are kept (workers delete them afterwards)."""

    async def action(client: Client) -> NamespaceSettings:
        return await client.set_retention(timedelta(days=retention_days), archive_dir=archive_dir)

    echo_json(_settings_json(run_action(conn, action)))


# -- limits ---------------------------------------------------------------------------------------


@click.group()
def limits() -> None:
    """Flow limits every worker obeys: concurrency and rate per activity type or task queue,
    and concurrency per key of a workflow type."""


def _limit_json(limit: FlowLimit) -> dict[str, Any]:
    return {
        "scope": limit.scope,
        "name": limit.name,
        "max_concurrent": limit.max_concurrent,
        "rate_per_second": limit.rate,
        "burst": limit.burst,
    }


def _parse_rate(text: str) -> float:
    """``5``, ``5/s`` or ``300/m`` -> starts per second."""
    number, slash, unit = text.partition("/")
    per = {"s": 1.0, "m": 60.0}.get(unit.strip()) if slash else 1.0
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if per is None or not math.isfinite(value) or value <= 0:
        raise CliError(f"--rate {text!r} must be a positive rate per second or minute: 5/s, 300/m")
    return value / per


@limits.command("set")
@click.argument("scope", type=click.Choice(["activity_type", "task_queue", "workflow_key"]))
@click.argument("name")
@click.option("--max-concurrent", type=click.IntRange(min=1))
@click.option("--rate", "rate_text", metavar="N[/s|/m]", help="Starts per second (or /m: minute).")
@click.option("--burst", type=click.FloatRange(min=1))
@connection_options
def limits_set(
    conn: Connection,
    scope: str,
    name: str,
    max_concurrent: int | None,
    rate_text: str | None,
    burst: float | None,
) -> None:
    """Set the limit of SCOPE NAME (e.g. activity_type call_model --max-concurrent 8 --rate 60/m).

    A rate is starts per second (``5`` or ``5/s``) or per minute (``300/m``).
    """
    rate = _parse_rate(rate_text) if rate_text is not None else None

    async def action(client: Client) -> FlowLimit:
        try:
            return await client.set_flow_limit(
                scope, name, max_concurrent=max_concurrent, rate_per_second=rate, burst=burst
            )
        except ValueError as e:
            raise CliError(str(e)) from None

    echo_json(_limit_json(run_action(conn, action)))


@limits.command("list")
@connection_options
def limits_list(conn: Connection) -> None:
    """List the namespace's flow limits."""

    async def action(client: Client) -> list[FlowLimit]:
        return await client.flow_limits()

    echo_json([_limit_json(lim) for lim in run_action(conn, action)])


@limits.command("delete")
@click.argument("scope", type=click.Choice(["activity_type", "task_queue", "workflow_key"]))
@click.argument("name")
@connection_options
def limits_delete(conn: Connection, scope: str, name: str) -> None:
    """Remove the limit of SCOPE NAME."""

    async def action(client: Client) -> None:
        await client.delete_flow_limit(scope, name)

    run_action(conn, action)
    click.echo(f"removed the {scope} limit of {name}")


# -- activity -------------------------------------------------------------------------------------


@click.group()
def activity() -> None:
    """Finish activities that complete asynchronously (``activity.raise_complete_async()``)."""


def _by_token(conn: Connection, call: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``call(client)``; a malformed token is a one-line error (an attempt that is over is
    ``LeaseLostError``, which ``run_action`` already reports)."""

    async def action(client: Client) -> T:
        try:
            return await call(client)
        except ValueError as e:
            raise CliError(str(e)) from None

    return run_action(conn, action)


@activity.command("complete")
@click.argument("token")
@click.option("--result", "result_json", metavar="JSON", help="The activity's result as JSON.")
@connection_options
def activity_complete(conn: Connection, token: str, result_json: str | None) -> None:
    """Complete the activity attempt identified by TOKEN with a result."""
    result = parse_json(result_json, "--result") if result_json is not None else None
    _by_token(conn, lambda c: c.complete_activity(token, result))
    click.echo("completed")


@activity.command("fail")
@click.argument("token")
@click.option("--reason", required=True, help="The failure message (the activity is retried).")
@connection_options
def activity_fail(conn: Connection, token: str, reason: str) -> None:
    """Fail the activity attempt identified by TOKEN; its retry policy decides what follows."""
    _by_token(conn, lambda c: c.fail_activity(token, reason))
    click.echo("failed")


@activity.command("heartbeat")
@click.argument("token")
@click.option("--details", "details_json", metavar="JSON", help="Progress details as JSON.")
@connection_options
def activity_heartbeat(conn: Connection, token: str, details_json: str | None) -> None:
    """Heartbeat the attempt; exits 1 if it was cancelled or is over."""
    details = parse_json(details_json, "--details") if details_json is not None else None
    if not _by_token(conn, lambda c: c.heartbeat_activity(token, details)):
        raise CliError("the activity was cancelled or its attempt is over; stop working on it")
    click.echo("heartbeat recorded")
