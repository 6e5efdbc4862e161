"""Requests from outside the run: signals, cancel requests and termination."""

from __future__ import annotations

from typing import Any

from duro.engine.model import RunRecord, Transition
from duro.errors import WorkflowClosedError
from duro.history import EventType, NewEvent, RunStatus


def _require_running(run: RunRecord) -> None:
    if run.status != RunStatus.RUNNING:
        raise WorkflowClosedError(run.workflow_id, run.run_id, run.status.value)


def signal_workflow(run: RunRecord, name: str, args: list[Any], now: float) -> Transition:
    _require_running(run)
    t = Transition()
    t.add_input(run, NewEvent(EventType.WORKFLOW_EXECUTION_SIGNALED, {"name": name, "args": args}))
    return t


def accept_update(
    run: RunRecord, update_id: str, name: str, args: list[Any], now: float
) -> Transition:
    """A validated update enters history; the workflow task runs its handler."""
    _require_running(run)
    t = Transition()
    t.add_input(
        run,
        NewEvent(
            EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            {"update_id": update_id, "name": name, "args": args},
        ),
    )
    return t


def request_cancel(run: RunRecord, reason: str, now: float) -> Transition:
    """Ask the run to cancel: the code sees ``asyncio.CancelledError`` at its await points."""
    _require_running(run)
    t = Transition()
    t.add_input(run, NewEvent(EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED, {"reason": reason}))
    return t


def terminate(run: RunRecord, reason: str, now: float) -> Transition:
    """Close the run at once, without running its code; a task in flight is then rejected."""
    _require_running(run)
    return Transition(
        flush_buffer=True,
        append_after=[NewEvent(EventType.WORKFLOW_EXECUTION_TERMINATED, {"reason": reason})],
        close=RunStatus.TERMINATED,
        failure={"type": "Terminated", "message": reason or "terminated"},
    )


def external_request_done(run: RunRecord, seq: int, kind: str, error: str | None) -> Transition:
    """Tell the sender how its signal / cancel request to another workflow went."""
    t = Transition()
    if run.status != RunStatus.RUNNING:
        return t
    if error is not None:
        event = NewEvent(
            EventType.EXTERNAL_WORKFLOW_REQUEST_FAILED, {"seq": seq, "kind": kind, "error": error}
        )
    elif kind == "signal":
        event = NewEvent(EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED, {"seq": seq})
    else:
        event = NewEvent(EventType.EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED, {"seq": seq})
    t.add_input(run, event)
    return t
