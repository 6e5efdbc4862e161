"""How the ``duro`` command line shows runs: rich tables for people, plain JSON for pipes.

Kept apart from ``duro.cli`` so the commands read as what they do. Everything here is pure:
values in, a rich renderable or a JSON-ready ``dict`` out; nothing touches the store or prints.

Times are UTC. People get ``2026-05-03T08:15:00.123Z`` (milliseconds are enough to order events
by eye); JSON gets the full-precision ISO form that ``Event.to_json`` also uses, so exported
values round-trip.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from duro.history import Event, RunStatus
from duro.store.protocol import ExecutionInfo, PendingActivityInfo

STATUS_STYLES = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELED: "yellow",
    RunStatus.TERMINATED: "magenta",
}

SHORT_ID = 8
"""Characters of a run id shown in tables: enough to tell runs apart, short enough to fit."""

SUMMARY_LIMIT = 80
"""Longest rendering of one attribute value in a history summary before it is cut with '…'."""


# -- values ---------------------------------------------------------------------------------------


def human_time(ts: float | None) -> str:
    """``1714724100.5`` -> ``2024-05-03T08:15:00.500Z``; ``None`` -> ``-``."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_time(ts: float | None) -> str | None:
    """Full-precision UTC ISO time, the form ``Event.to_json`` writes."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def compact(value: Any, limit: int = SUMMARY_LIMIT) -> str:
    """One-line JSON of ``value``, cut to ``limit`` characters so a table row stays a row."""
    text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_text(failure: dict[str, Any] | None) -> str:
    """``{"type": "ValueError", "message": "boom", "cause": {...}}`` -> one readable line.

    The cause chain is kept (``ActivityError: ... <- ValueError: boom``) because the outer
    failure of a workflow usually only says *which* activity failed, the cause says *why*.
    """
    parts: list[str] = []
    while failure:
        kind = failure.get("type") or "Error"
        message = failure.get("message") or ""
        parts.append(f"{kind}: {message}" if message else str(kind))
        failure = failure.get("cause")
    return " <- ".join(parts) if parts else "-"


def status_text(status: RunStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


# -- workflow lists -------------------------------------------------------------------------------


def execution_json(info: ExecutionInfo, *, detail: bool = False) -> dict[str, Any]:
    """The JSON form of a run: the list fields, plus everything ``describe`` knows if ``detail``."""
    data: dict[str, Any] = {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "workflow_type": info.workflow_type,
        "task_queue": info.task_queue,
        "status": info.status.value,
        "start_time": json_time(info.start_time),
        "close_time": json_time(info.close_time),
        "history_length": info.history_length,
    }
    if not detail:
        return data
    data.update(
        namespace=info.namespace,
        args=info.args,
        result=info.result,
        failure=info.failure,
        memo=info.memo,
        workflow_task_attempt=info.workflow_task_attempt,
        workflow_task_failure=info.workflow_task_failure,
        build_ids=info.build_ids,
        pinned_build_id=info.pinned_build_id,
        search_attributes={k: str(v) for k, v in info.search_attributes.items()},
        parent_workflow_id=info.parent_workflow_id,
        parent_run_id=info.parent_run_id,
        children=[
            {"workflow_id": w, "run_id": r, "status": st.value} for w, r, st in info.children
        ],
        pending_activities=[_pending_activity_json(p) for p in info.pending_activities],
        pending_timers=[
            {"seq": seq, "fire_at": json_time(fire_at)} for seq, fire_at in info.pending_timers
        ],
    )
    return data


def _pending_activity_json(p: PendingActivityInfo) -> dict[str, Any]:
    return {
        "seq": p.seq,
        "activity_type": p.activity_type,
        "attempt": p.attempt,
        "state": p.state,
        "scheduled_time": json_time(p.scheduled_time),
        "next_attempt_time": json_time(p.next_attempt_time),
        "last_failure": p.last_failure,
        "heartbeat_details": p.heartbeat_details,
        "worker": p.worker,
    }


def executions_table(infos: list[ExecutionInfo]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("WORKFLOW ID", no_wrap=True)
    table.add_column("RUN ID", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("STARTED (UTC)", no_wrap=True)
    table.add_column("CLOSED (UTC)", no_wrap=True)
    for info in infos:
        table.add_row(
            Text(info.workflow_id),
            Text(info.run_id[-SHORT_ID:]),  # the random end (a run id starts with its time)
            Text(info.workflow_type),
            status_text(info.status),
            human_time(info.start_time),
            human_time(info.close_time),
        )
    return table


# -- describe -------------------------------------------------------------------------------------


def describe_view(info: ExecutionInfo) -> RenderableType:
    """Everything an operator asks first: where is the run, and if stuck, on what."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("Workflow ID", Text(info.workflow_id))
    fields.add_row("Run ID", Text(info.run_id))
    fields.add_row("Type", Text(info.workflow_type))
    fields.add_row("Task queue", Text(info.task_queue))
    fields.add_row("Status", status_text(info.status))
    fields.add_row("Started", human_time(info.start_time))
    fields.add_row("Closed", human_time(info.close_time))
    fields.add_row("History", f"{info.history_length} events")
    if info.parent_workflow_id:
        fields.add_row("Parent", Text(f"{info.parent_workflow_id} ({info.parent_run_id})"))
    if info.children:
        fields.add_row(
            "Children",
            Text(", ".join(f"{wid} ({status.value})" for wid, _, status in info.children)),
        )
    if info.search_attributes:
        fields.add_row(
            "Search attrs",
            Text(", ".join(f"{k}={v!r}" for k, v in info.search_attributes.items())),
        )
    if info.build_ids:
        pinned = f" (pinned to {info.pinned_build_id})" if info.pinned_build_id else ""
        fields.add_row("Builds", Text(", ".join(info.build_ids) + pinned))
    if info.args:
        fields.add_row("Input", Text(compact(info.args, 400)))
    if info.status == RunStatus.COMPLETED:
        fields.add_row("Result", Text(compact(info.result, 400)))
    elif info.failure is not None:
        fields.add_row("Failure", Text(failure_text(info.failure), style="red"))
    if info.workflow_task_failure is not None:
        fields.add_row(
            "Workflow task",
            Text(
                f"failing (attempt {info.workflow_task_attempt}): "
                + failure_text(info.workflow_task_failure),
                style="red",
            ),
        )
    parts: list[RenderableType] = [fields]
    if info.pending_activities:
        parts.append(_pending_activities_table(info.pending_activities))
    if info.pending_timers:
        timers = Table(title="Pending timers", title_justify="left", box=None, pad_edge=False)
        timers.add_column("SEQ", justify="right")
        timers.add_column("FIRES AT (UTC)", no_wrap=True)
        for seq, fire_at in info.pending_timers:
            timers.add_row(str(seq), human_time(fire_at))
        parts.append(timers)
    return Group(*parts)


def _pending_activities_table(pending: list[PendingActivityInfo]) -> Table:
    table = Table(title="Pending activities", title_justify="left", box=None, pad_edge=False)
    table.add_column("SEQ", justify="right")
    table.add_column("TYPE", no_wrap=True)
    table.add_column("ATTEMPT", justify="right")
    table.add_column("STATE", no_wrap=True)
    table.add_column("NEXT ATTEMPT (UTC)", no_wrap=True)
    table.add_column("LAST FAILURE", overflow="fold")
    for p in pending:
        table.add_row(
            str(p.seq),
            Text(p.activity_type),
            str(p.attempt),
            p.state,
            human_time(p.next_attempt_time),
            Text(failure_text(p.last_failure) if p.last_failure else "-", style="red"),
        )
    return table


# -- history --------------------------------------------------------------------------------------

_SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    # (attribute, label); an empty label shows the bare value. Order is display order.
    ("workflow_type", ""),
    ("activity_type", ""),
    ("name", ""),
    ("seq", "seq"),
    ("attempt", "attempt"),
    ("duration", "duration"),
    ("task_queue", "queue"),
    ("args", "args"),
    ("result", "result"),
    ("details", "details"),
    ("failure", "failure"),
    ("reason", "reason"),
    ("identity", "by"),
)
"""What a history row shows. Ids repeated in every run, timeouts and retry policies are left to
``--json``: a row should say what happened, not restate the configuration."""


def event_summary(event: Event) -> str:
    """``ActivityTaskScheduled`` -> ``call_model seq=1 queue=default args=["hi"]``."""
    parts: list[str] = []
    attrs = event.attrs
    for key, label in _SUMMARY_FIELDS:
        if key not in attrs:
            continue
        value = attrs[key]
        if value in (None, "", [], {}) and key != "result":
            continue
        if key == "failure":
            text = failure_text(value)
        elif key == "duration" and isinstance(value, int | float):
            text = f"{value:g}s"
        elif isinstance(value, str) and key not in ("args", "result", "details"):
            text = value
        else:
            text = compact(value)
        parts.append(f"{label}={text}" if label else text)
    return " ".join(parts)


def history_table(events: list[Event], title: str) -> Table:
    table = Table(
        title=Text(title), title_justify="left", box=None, header_style="bold", pad_edge=False
    )
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("TIME (UTC)", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("DETAILS", overflow="fold")
    for event in events:
        table.add_row(
            str(event.event_id),
            human_time(event.time),
            Text(event.type.value),
            Text(event_summary(event)),
        )
    return table


def history_json(workflow_id: str, run_id: str, events: list[Event]) -> dict[str, Any]:
    """The history export read by the replay checker. Keep these keys stable."""
    return {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "events": [event.to_json() for event in events],
    }
