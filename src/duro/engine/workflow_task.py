"""Completing, failing and releasing a workflow task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from duro.commands import (
    CancelTimer,
    CancelWorkflow,
    Command,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordMarker,
    RequestCancelActivity,
    RequestCancelExternalWorkflow,
    ScheduleActivity,
    SignalExternalWorkflow,
    StartChildWorkflow,
    StartTimer,
    UpsertMemo,
    UpsertSearchAttributes,
)
from duro.engine.model import ActivitySpec, RunRecord, Transition, WorkflowTaskState
from duro.history import EventType, NewEvent, RunStatus
from duro.retry import RetryPolicy

WORKFLOW_TASK_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=60))
"""Backoff between attempts of a failing workflow task (1 s doubling, at most 60 s)."""

_CLOSE_COMMANDS = {
    CompleteWorkflow: RunStatus.COMPLETED,
    FailWorkflow: RunStatus.FAILED,
    CancelWorkflow: RunStatus.CANCELED,
    ContinueAsNew: RunStatus.CONTINUED_AS_NEW,
}


def complete_workflow_task(
    run: RunRecord,
    commands: Sequence[Command],
    *,
    has_buffered: bool,
    workflow_time: float,
    now: float,
    identity: str = "",
    build_id: str = "",
    history_size: int = 0,
    new_run_id: str = "",
) -> Transition:
    """Append ``WorkflowTaskCompleted``, the command events, then what arrived meanwhile.

    Invariant: the events a task saw are exactly those before its ``WorkflowTaskCompleted``;
    events buffered during the task come after the command events and schedule the next task.
    A task that would close the run while events are buffered is rejected, so a signal that
    arrived meanwhile is never silently dropped: the buffer is flushed and a new task runs.
    """
    close_status = next(
        (_CLOSE_COMMANDS[type(c)] for c in commands if type(c) in _CLOSE_COMMANDS), None
    )
    if close_status is not None and has_buffered:
        return Transition(
            rejected="new events arrived while the workflow task that closes the run was running",
            flush_buffer=True,
            wt_state=WorkflowTaskState.SCHEDULED,
            wt_visible_at=now,
        )
    t = Transition()
    completed: dict[str, Any] = {"workflow_time": workflow_time, "history_size": history_size}
    if identity:
        completed["identity"] = identity
    if build_id:
        completed["build_id"] = build_id
    t.append.append(NewEvent(EventType.WORKFLOW_TASK_COMPLETED, completed))
    for command in commands:
        t.append.append(NewEvent(command.event_type, command.attrs()))
        if isinstance(command, ScheduleActivity):
            t.schedule_activities.append(
                ActivitySpec(
                    seq=command.seq,
                    activity_type=command.activity_type,
                    task_queue=command.task_queue,
                    args=command.args,
                    start_to_close_timeout=command.start_to_close_timeout,
                    schedule_to_close_timeout=command.schedule_to_close_timeout,
                    heartbeat_timeout=command.heartbeat_timeout,
                    retry_policy=command.retry_policy,
                    schedule_to_start_timeout=command.schedule_to_start_timeout,
                    priority=command.priority,
                )
            )
        elif isinstance(command, RequestCancelActivity):
            # Try-cancel: the code already saw CancelledError; drop the task if still pending.
            t.delete_activities.append(command.seq)
        elif isinstance(command, StartTimer):
            t.start_timers.append((command.seq, workflow_time + command.duration))
        elif isinstance(command, CancelTimer):
            t.cancel_timers.append(command.seq)
        elif isinstance(command, RecordMarker):
            pass
        elif isinstance(command, UpsertSearchAttributes):
            t.search_attributes.update(command.attributes)
        elif isinstance(command, UpsertMemo):
            t.memo.update(command.memo)
        elif isinstance(command, StartChildWorkflow):
            t.start_children.append(command)
        elif isinstance(command, SignalExternalWorkflow | RequestCancelExternalWorkflow):
            t.external_requests.append(command)
        elif isinstance(command, CompleteUpdate):
            t.completed_updates.append((command.update_id, command.result, command.failure))
        elif isinstance(command, CompleteWorkflow):
            t.close, t.result = RunStatus.COMPLETED, command.result
            break
        elif isinstance(command, FailWorkflow):
            t.close, t.failure = RunStatus.FAILED, command.failure
            break
        elif isinstance(command, CancelWorkflow):
            message = command.reason or "canceled"
            t.close, t.failure = RunStatus.CANCELED, {"type": "Canceled", "message": message}
            break
        elif isinstance(command, ContinueAsNew):
            t.append[-1] = NewEvent(
                command.event_type, {**command.attrs(), "new_run_id": new_run_id}
            )
            t.close, t.result = RunStatus.CONTINUED_AS_NEW, {"new_run_id": new_run_id}
            t.continue_as_new = (new_run_id, command.args)
            break
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown command {command!r}")
    if t.close is None:
        t.flush_buffer = True
        t.wt_state = WorkflowTaskState.SCHEDULED if has_buffered else WorkflowTaskState.IDLE
        t.wt_visible_at = now
    t.wt_attempt = 1
    return t


def fail_workflow_task(run: RunRecord, failure: dict[str, Any], now: float) -> Transition:
    """The task's code raised (or replay diverged): retry it later; append nothing of its own.

    Buffered events are flushed so the next attempt sees them. The failure is kept on the run
    for ``describe`` and the UI.
    """
    delay = WORKFLOW_TASK_RETRY.backoff(run.wt_attempt)
    return Transition(
        flush_buffer=True,
        wt_state=WorkflowTaskState.SCHEDULED,
        wt_visible_at=now + delay,
        wt_attempt=run.wt_attempt + 1,
        wt_failure=failure,
    )


def release_workflow_task(run: RunRecord, now: float) -> Transition:
    """The worker holding the task is gone (or its lease expired): hand it to another at once."""
    return Transition(flush_buffer=True, wt_state=WorkflowTaskState.SCHEDULED, wt_visible_at=now)
