"""Commands: what workflow code decides during a workflow task.

The runtime collects them; the engine turns each into its command event. Commands are
imperatives (``ScheduleActivity``); the events they become are facts (``ActivityTaskScheduled``).
``key()`` is what replay compares with the recorded event: kind, sequence number and name, not
arguments, so that a change of argument values alone is not reported as non-determinism.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from duro.converter import dumps
from duro.history import Event, EventType


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    seq: int
    activity_type: str
    args: list[Any]
    task_queue: str
    start_to_close_timeout: float
    retry_policy: dict[str, Any]
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    schedule_to_start_timeout: float | None = None
    priority: int = 0

    event_type = EventType.ACTIVITY_TASK_SCHEDULED

    def attrs(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "activity_type": self.activity_type,
            "args": self.args,
            "task_queue": self.task_queue,
            "start_to_close_timeout": self.start_to_close_timeout,
            "schedule_to_close_timeout": self.schedule_to_close_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "schedule_to_start_timeout": self.schedule_to_start_timeout,
            "priority": self.priority,
            "retry_policy": self.retry_policy,
        }

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq, self.activity_type)


@dataclass(frozen=True, slots=True)
class RequestCancelActivity:
    seq: int

    event_type = EventType.ACTIVITY_TASK_CANCEL_REQUESTED

    def attrs(self) -> dict[str, Any]:
        return {"seq": self.seq}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq)


@dataclass(frozen=True, slots=True)
class StartTimer:
    seq: int
    duration: float
    """Seconds from the workflow time of the task that starts the timer."""

    event_type = EventType.TIMER_STARTED

    def attrs(self) -> dict[str, Any]:
        return {"seq": self.seq, "duration": self.duration}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq)


@dataclass(frozen=True, slots=True)
class CancelTimer:
    seq: int

    event_type = EventType.TIMER_CANCELED

    def attrs(self) -> dict[str, Any]:
        return {"seq": self.seq}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq)


@dataclass(frozen=True, slots=True)
class RecordMarker:
    name: str
    details: dict[str, Any] = field(default_factory=dict)

    event_type = EventType.MARKER_RECORDED

    def attrs(self) -> dict[str, Any]:
        return {"name": self.name, "details": self.details}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.name)


@dataclass(frozen=True, slots=True)
class CompleteUpdate:
    """An update handler returned (``result``) or raised (``failure``)."""

    update_id: str
    result: Any = None
    failure: dict[str, Any] | None = None

    event_type = EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED

    def attrs(self) -> dict[str, Any]:
        data: dict[str, Any] = {"update_id": self.update_id, "result": self.result}
        if self.failure is not None:
            data["failure"] = self.failure
        return data

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.update_id)


@dataclass(frozen=True, slots=True)
class CompleteWorkflow:
    result: Any

    event_type = EventType.WORKFLOW_EXECUTION_COMPLETED

    def attrs(self) -> dict[str, Any]:
        return {"result": self.result}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


@dataclass(frozen=True, slots=True)
class FailWorkflow:
    failure: dict[str, Any]

    event_type = EventType.WORKFLOW_EXECUTION_FAILED

    def attrs(self) -> dict[str, Any]:
        return {"failure": self.failure}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


@dataclass(frozen=True, slots=True)
class CancelWorkflow:
    reason: str = ""
    """The reason given to ``handle.cancel(reason)``, shown as the run's failure."""

    event_type = EventType.WORKFLOW_EXECUTION_CANCELED

    def attrs(self) -> dict[str, Any]:
        return {"reason": self.reason} if self.reason else {}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


@dataclass(frozen=True, slots=True)
class StartChildWorkflow:
    seq: int
    workflow_type: str
    workflow_id: str
    args: list[Any]
    task_queue: str
    parent_close_policy: str = "terminate"

    event_type = EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED

    def attrs(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "workflow_type": self.workflow_type,
            "workflow_id": self.workflow_id,
            "args": self.args,
            "task_queue": self.task_queue,
            "parent_close_policy": self.parent_close_policy,
        }

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq, self.workflow_type)


@dataclass(frozen=True, slots=True)
class UpsertSearchAttributes:
    attributes: dict[str, Any]
    """Encoded values (``duro.search_attributes.encode``); None removes one."""

    event_type = EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES

    def attrs(self) -> dict[str, Any]:
        return {"search_attributes": self.attributes}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


@dataclass(frozen=True, slots=True)
class UpsertMemo:
    memo: dict[str, Any]
    """Entries to set; a None value removes one."""

    event_type = EventType.WORKFLOW_PROPERTIES_MODIFIED

    def attrs(self) -> dict[str, Any]:
        return {"memo": self.memo}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


@dataclass(frozen=True, slots=True)
class SignalExternalWorkflow:
    seq: int
    workflow_id: str
    run_id: str | None
    name: str
    args: list[Any]

    event_type = EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED

    def attrs(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "name": self.name,
            "args": self.args,
        }

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq)


@dataclass(frozen=True, slots=True)
class RequestCancelExternalWorkflow:
    seq: int
    workflow_id: str
    run_id: str | None

    event_type = EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED

    def attrs(self) -> dict[str, Any]:
        return {"seq": self.seq, "workflow_id": self.workflow_id, "run_id": self.run_id}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type, self.seq)


@dataclass(frozen=True, slots=True)
class ContinueAsNew:
    """Close this run and start a fresh one of the same workflow id with ``args``."""

    args: list[Any]
    new_run_id: str = ""
    """Filled in by the engine from the id the store chose; not part of the replay key."""

    event_type = EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW

    def attrs(self) -> dict[str, Any]:
        return {"args": self.args, "new_run_id": self.new_run_id}

    def key(self) -> tuple[Any, ...]:
        return (self.event_type,)


Command = (
    ScheduleActivity
    | RequestCancelActivity
    | StartTimer
    | CancelTimer
    | RecordMarker
    | CompleteUpdate
    | StartChildWorkflow
    | SignalExternalWorkflow
    | RequestCancelExternalWorkflow
    | UpsertSearchAttributes
    | UpsertMemo
    | CompleteWorkflow
    | FailWorkflow
    | CancelWorkflow
    | ContinueAsNew
)

_KEY_ATTRS: dict[EventType, tuple[str, ...]] = {
    EventType.ACTIVITY_TASK_SCHEDULED: ("seq", "activity_type"),
    EventType.ACTIVITY_TASK_CANCEL_REQUESTED: ("seq",),
    EventType.TIMER_STARTED: ("seq",),
    EventType.TIMER_CANCELED: ("seq",),
    EventType.MARKER_RECORDED: ("name",),
    EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED: ("update_id",),
    EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED: ("seq", "workflow_type"),
    EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: ("seq",),
    EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: ("seq",),
}


PATCH_MARKER_PREFIX = "patch:"


def patch_marker_name(patch_id: str) -> str:
    """The marker name ``workflow.patched(patch_id)`` records."""
    return f"{PATCH_MARKER_PREFIX}{patch_id}"


def event_key(event: Event) -> tuple[Any, ...]:
    """The replay key of a recorded command event, comparable with ``Command.key()``."""
    return (event.type, *(event.attrs.get(a) for a in _KEY_ATTRS.get(event.type, ())))


def describe_command(command: Command) -> str:
    """A short human form for error messages: ``ScheduleActivity(seq=2, 'call_model')``."""
    return _describe(command.event_type, command.attrs())


def describe_event(event: Event) -> str:
    return _describe(event.type, event.attrs)


_COMMAND_NAMES = {
    EventType.ACTIVITY_TASK_SCHEDULED: "ScheduleActivity",
    EventType.ACTIVITY_TASK_CANCEL_REQUESTED: "RequestCancelActivity",
    EventType.TIMER_STARTED: "StartTimer",
    EventType.TIMER_CANCELED: "CancelTimer",
    EventType.MARKER_RECORDED: "RecordMarker",
    EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED: "CompleteUpdate",
    EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED: "StartChildWorkflow",
    EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "UpsertSearchAttributes",
    EventType.WORKFLOW_PROPERTIES_MODIFIED: "UpsertMemo",
    EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "SignalExternalWorkflow",
    EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "RequestCancelExternal",
    EventType.WORKFLOW_EXECUTION_COMPLETED: "CompleteWorkflow",
    EventType.WORKFLOW_EXECUTION_FAILED: "FailWorkflow",
    EventType.WORKFLOW_EXECUTION_CANCELED: "CancelWorkflow",
    EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "ContinueAsNew",
}


def _describe(kind: EventType, attrs: dict[str, Any]) -> str:
    parts = [f"{a}={attrs[a]!r}" for a in _KEY_ATTRS.get(kind, ()) if a in attrs]
    if kind == EventType.ACTIVITY_TASK_SCHEDULED:
        digest = hashlib.sha256(dumps(attrs.get("args")).encode()).hexdigest()[:12]
        parts.append(f"args_digest={digest}")
    return f"{_COMMAND_NAMES.get(kind, kind.value)}({', '.join(parts)})"
