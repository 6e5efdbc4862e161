"""Event types: the append-only facts that make up a run's history.

History is the only source of truth for a run. Events are past-tense facts. Two families:

- *command events* are written right after a ``WorkflowTaskCompleted`` and record what the
  workflow code decided in that task (schedule an activity, start a timer, complete...). Replay
  checks that the code decides the same again.
- *input events* are what happened to the run (started, an activity finished, a timer fired, a
  signal arrived). Replay feeds them to the code in the same batches as the first execution.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class EventType(enum.StrEnum):
    WORKFLOW_EXECUTION_STARTED = "WorkflowExecutionStarted"
    WORKFLOW_TASK_COMPLETED = "WorkflowTaskCompleted"
    ACTIVITY_TASK_SCHEDULED = "ActivityTaskScheduled"
    ACTIVITY_TASK_CANCEL_REQUESTED = "ActivityTaskCancelRequested"
    ACTIVITY_TASK_COMPLETED = "ActivityTaskCompleted"
    ACTIVITY_TASK_FAILED = "ActivityTaskFailed"
    ACTIVITY_TASK_TIMED_OUT = "ActivityTaskTimedOut"
    ACTIVITY_TASK_CANCELED = "ActivityTaskCanceled"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    TIMER_CANCELED = "TimerCanceled"
    MARKER_RECORDED = "MarkerRecorded"
    WORKFLOW_EXECUTION_SIGNALED = "WorkflowExecutionSignaled"
    WORKFLOW_EXECUTION_CANCEL_REQUESTED = "WorkflowExecutionCancelRequested"
    WORKFLOW_EXECUTION_UPDATE_ACCEPTED = "WorkflowExecutionUpdateAccepted"
    WORKFLOW_EXECUTION_UPDATE_COMPLETED = "WorkflowExecutionUpdateCompleted"
    WORKFLOW_EXECUTION_COMPLETED = "WorkflowExecutionCompleted"
    WORKFLOW_EXECUTION_FAILED = "WorkflowExecutionFailed"
    WORKFLOW_EXECUTION_CANCELED = "WorkflowExecutionCanceled"
    WORKFLOW_EXECUTION_TERMINATED = "WorkflowExecutionTerminated"
    WORKFLOW_EXECUTION_CONTINUED_AS_NEW = "WorkflowExecutionContinuedAsNew"
    WORKFLOW_EXECUTION_TIMED_OUT = "WorkflowExecutionTimedOut"
    UPSERT_WORKFLOW_SEARCH_ATTRIBUTES = "UpsertWorkflowSearchAttributes"
    WORKFLOW_EXECUTION_RESET = "WorkflowExecutionReset"
    WORKFLOW_PROPERTIES_MODIFIED = "WorkflowPropertiesModified"
    START_CHILD_WORKFLOW_EXECUTION_INITIATED = "StartChildWorkflowExecutionInitiated"
    START_CHILD_WORKFLOW_EXECUTION_FAILED = "StartChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_STARTED = "ChildWorkflowExecutionStarted"
    CHILD_WORKFLOW_EXECUTION_COMPLETED = "ChildWorkflowExecutionCompleted"
    CHILD_WORKFLOW_EXECUTION_FAILED = "ChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_CANCELED = "ChildWorkflowExecutionCanceled"
    CHILD_WORKFLOW_EXECUTION_TERMINATED = "ChildWorkflowExecutionTerminated"
    CHILD_WORKFLOW_EXECUTION_TIMED_OUT = "ChildWorkflowExecutionTimedOut"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED = "SignalExternalWorkflowExecutionInitiated"
    REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED = (
        "RequestCancelExternalWorkflowExecutionInitiated"
    )
    EXTERNAL_WORKFLOW_EXECUTION_SIGNALED = "ExternalWorkflowExecutionSignaled"
    EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED = "ExternalWorkflowExecutionCancelRequested"
    EXTERNAL_WORKFLOW_REQUEST_FAILED = "ExternalWorkflowRequestFailed"


COMMAND_EVENTS = frozenset(
    {
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
        EventType.TIMER_STARTED,
        EventType.TIMER_CANCELED,
        EventType.MARKER_RECORDED,
        EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.WORKFLOW_PROPERTIES_MODIFIED,
        EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
        EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
"""Events written from workflow commands, right after a ``WorkflowTaskCompleted``."""

CLOSE_EVENTS = frozenset(
    {
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
        EventType.WORKFLOW_EXECUTION_TERMINATED,
        EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.WORKFLOW_EXECUTION_TIMED_OUT,
    }
)
"""Events that close a run; exactly one ends every closed history."""


class RunStatus(enum.StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    TIMED_OUT = "TimedOut"

    @property
    def closed(self) -> bool:
        return self is not RunStatus.RUNNING


CLOSE_STATUS = {
    EventType.WORKFLOW_EXECUTION_COMPLETED: RunStatus.COMPLETED,
    EventType.WORKFLOW_EXECUTION_FAILED: RunStatus.FAILED,
    EventType.WORKFLOW_EXECUTION_CANCELED: RunStatus.CANCELED,
    EventType.WORKFLOW_EXECUTION_TERMINATED: RunStatus.TERMINATED,
    EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW: RunStatus.CONTINUED_AS_NEW,
    EventType.WORKFLOW_EXECUTION_TIMED_OUT: RunStatus.TIMED_OUT,
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event decided by the engine, before the store gives it an id."""

    type: EventType
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One stored history event."""

    event_id: int
    type: EventType
    time: float
    """Store clock, seconds since the epoch (UTC)."""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)

    def to_json(self) -> dict[str, Any]:
        """The exported form (``duro workflow show --json``, golden histories)."""
        return {
            "event_id": self.event_id,
            "type": self.type.value,
            "time": self.datetime.isoformat(),
            "timestamp": self.time,
            "attributes": self.attrs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        t = data.get("timestamp", data["time"])
        when = datetime.fromisoformat(t).timestamp() if isinstance(t, str) else float(t)
        return cls(int(data["event_id"]), EventType(data["type"]), when, data.get("attributes", {}))
