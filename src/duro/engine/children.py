"""Child workflows: their start and their outcome, as seen by the parent's history."""

from __future__ import annotations

from typing import Any

from duro.engine.model import RunRecord, Transition
from duro.history import EventType, NewEvent, RunStatus

_CHILD_CLOSE_EVENTS = {
    RunStatus.COMPLETED: EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED,
    RunStatus.FAILED: EventType.CHILD_WORKFLOW_EXECUTION_FAILED,
    RunStatus.CANCELED: EventType.CHILD_WORKFLOW_EXECUTION_CANCELED,
    RunStatus.TERMINATED: EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED,
    RunStatus.TIMED_OUT: EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
}


def child_started(parent: RunRecord, seq: int, workflow_id: str, run_id: str) -> Transition:
    t = Transition()
    if parent.status == RunStatus.RUNNING:
        t.add_input(
            parent,
            NewEvent(
                EventType.CHILD_WORKFLOW_EXECUTION_STARTED,
                {"seq": seq, "workflow_id": workflow_id, "run_id": run_id},
            ),
        )
    return t


def child_start_failed(parent: RunRecord, seq: int, workflow_id: str, reason: str) -> Transition:
    """The child's workflow id was taken (a run with that id is open)."""
    t = Transition()
    if parent.status == RunStatus.RUNNING:
        t.add_input(
            parent,
            NewEvent(
                EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED,
                {"seq": seq, "workflow_id": workflow_id, "reason": reason},
            ),
        )
    return t


def child_closed(
    parent: RunRecord,
    seq: int,
    status: RunStatus,
    result: Any,
    failure: dict[str, Any] | None,
) -> Transition:
    """The child's last run closed: its outcome becomes an input of the parent."""
    t = Transition()
    kind = _CHILD_CLOSE_EVENTS.get(status)
    if kind is None or parent.status != RunStatus.RUNNING:
        return t  # continued-as-new is not an outcome; a closed parent takes no input
    attrs: dict[str, Any] = {"seq": seq}
    if status == RunStatus.COMPLETED:
        attrs["result"] = result
    else:
        attrs["failure"] = failure or {"type": status.value, "message": status.value.lower()}
    t.add_input(parent, NewEvent(kind, attrs))
    return t
