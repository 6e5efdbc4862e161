"""Reset and fork: a new run whose history is an old run's up to a workflow task.

The new run re-runs that workflow task with the current code (after fixing a prompt, say) and
goes on from there; events recorded after the point are dropped, except signals, which are
re-applied if asked. Work the copied prefix left pending (activities scheduled but not finished,
timers started but not fired) is recreated, so the new run waits on it as the old one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from duro.engine.model import ActivitySpec
from duro.history import Event, EventType

_ACTIVITY_DONE = {
    EventType.ACTIVITY_TASK_COMPLETED,
    EventType.ACTIVITY_TASK_FAILED,
    EventType.ACTIVITY_TASK_TIMED_OUT,
    EventType.ACTIVITY_TASK_CANCELED,
    EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
}
_CHILD_DONE = {
    EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED,
    EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED,
    EventType.CHILD_WORKFLOW_EXECUTION_FAILED,
    EventType.CHILD_WORKFLOW_EXECUTION_CANCELED,
    EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED,
    EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
}


class ResetError(ValueError):
    """The reset point is not usable (not a workflow task, or children in flight there)."""


@dataclass
class ResetPlan:
    prefix: list[Event]
    """Events ``1 .. point - 1``: what the re-run workflow task starts from."""
    reapplied: list[Event] = field(default_factory=list)
    """Signals recorded after the point, delivered again to the new run."""
    activities: list[ActivitySpec] = field(default_factory=list)
    timers: list[tuple[int, float]] = field(default_factory=list)
    """``(seq, fire_at)`` of timers still running at the point."""


def resolve_point(events: Sequence[Event], point: int | str) -> int:
    """The ``WorkflowTaskCompleted`` event id a reset goes back to.

    ``point`` is an event id (the latest workflow task at or before it is used),
    ``"last_workflow_task"`` or ``"first_workflow_task"``.
    """
    completed = [e.event_id for e in events if e.type == EventType.WORKFLOW_TASK_COMPLETED]
    if not completed:
        raise ResetError("the run has no completed workflow task to reset to")
    if point == "last_workflow_task":
        return completed[-1]
    if point == "first_workflow_task":
        return completed[0]
    if not isinstance(point, int):
        raise ResetError(
            f"reset point must be an event id, 'first_workflow_task' or 'last_workflow_task', "
            f"not {point!r}"
        )
    at_or_before = [c for c in completed if c <= point]
    if not at_or_before:
        raise ResetError(f"no workflow task completed at or before event {point}")
    return at_or_before[-1]


def plan_reset(events: Sequence[Event], point: int, *, reapply_signals: bool) -> ResetPlan:
    """Split history at workflow task ``point`` and find the work pending there."""
    prefix = [e for e in events if e.event_id < point]
    plan = ResetPlan(prefix=prefix)
    if reapply_signals:
        plan.reapplied = [
            e
            for e in events
            if e.event_id >= point and e.type == EventType.WORKFLOW_EXECUTION_SIGNALED
        ]
    scheduled: dict[Any, tuple[Event, float]] = {}
    timers: dict[Any, float] = {}
    children: set[Any] = set()
    workflow_time = prefix[0].time if prefix else 0.0
    for e in prefix:
        seq = e.attrs.get("seq")
        if e.type == EventType.WORKFLOW_TASK_COMPLETED:
            workflow_time = float(e.attrs.get("workflow_time", e.time))
        elif e.type == EventType.ACTIVITY_TASK_SCHEDULED:
            scheduled[seq] = (e, e.time)
        elif e.type in _ACTIVITY_DONE:
            scheduled.pop(seq, None)
        elif e.type == EventType.TIMER_STARTED and seq is not None and seq > 0:
            timers[seq] = workflow_time + float(e.attrs.get("duration", 0.0))
        elif e.type in (EventType.TIMER_FIRED, EventType.TIMER_CANCELED):
            timers.pop(seq, None)
        elif e.type == EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            children.add(seq)
        elif e.type in _CHILD_DONE:
            children.discard(seq)
    if children:
        raise ResetError(
            "child workflows are running at that point; reset to a workflow task before they "
            "started or after they finished"
        )
    for e, _ in scheduled.values():
        a: dict[str, Any] = e.attrs
        plan.activities.append(
            ActivitySpec(
                seq=a["seq"],
                activity_type=a["activity_type"],
                task_queue=a["task_queue"],
                args=a.get("args", []),
                start_to_close_timeout=a["start_to_close_timeout"],
                schedule_to_close_timeout=a.get("schedule_to_close_timeout"),
                heartbeat_timeout=a.get("heartbeat_timeout"),
                retry_policy=a["retry_policy"],
                schedule_to_start_timeout=a.get("schedule_to_start_timeout"),
            )
        )
    plan.timers = sorted(timers.items())
    return plan
