"""What the engine reads (records of a run and its tasks) and what it decides (a Transition).

The store loads records inside its transaction, calls one engine rule with the store clock's
``now``, and persists the returned ``Transition`` in the same transaction. Rules never do I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from duro.history import NewEvent, RunStatus


class WorkflowTaskState(enum.IntEnum):
    IDLE = 0
    """No workflow task exists: the run waits for an input event."""
    SCHEDULED = 1
    """A workflow task waits for a worker; new input events are appended to history."""
    STARTED = 2
    """A worker holds the task; new input events are buffered until it completes."""


@dataclass(slots=True)
class RunRecord:
    """The parts of an execution row the rules need."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    next_event_id: int
    wt_state: WorkflowTaskState
    wt_attempt: int = 1
    sticky_worker: str | None = None
    """Store bookkeeping: the worker that cached the run (its next task waits for it)."""
    has_buffered: bool = False
    """Store bookkeeping: input events are buffered for the task in flight."""
    build_ids: list[str] = field(default_factory=list)
    """Store bookkeeping: builds that completed workflow tasks of the run."""
    pinned_build_id: str | None = None
    """Store bookkeeping: the only build that may advance a pinned run."""
    history_size: int = 0
    """Store bookkeeping: bytes of stored history."""
    parent_run_id: str | None = None
    """Store bookkeeping: the parent run of a child workflow."""
    parent_seq: int | None = None
    priority: int = 0
    """Store bookkeeping: the run's workflow tasks are polled by priority (higher first)."""
    concurrency_key: str | None = None
    """Store bookkeeping: runs sharing a key share that key's concurrency limit."""


@dataclass(slots=True)
class ActivityTaskRecord:
    """A pending activity: scheduled, maybe leased by a worker, maybe between retries."""

    task_id: int
    run_id: str
    seq: int
    activity_type: str
    attempt: int
    retry_policy: dict[str, Any]
    scheduled_time: float
    start_to_close_timeout: float
    schedule_to_close_timeout: float | None = None
    lease_id: str | None = None
    started_time: float | None = None
    """When the current attempt was handed out (None between attempts)."""
    heartbeat_timeout: float | None = None


@dataclass(slots=True)
class ActivitySpec:
    """An activity task to create (from a ``ScheduleActivity`` command)."""

    seq: int
    activity_type: str
    task_queue: str
    args: list[Any]
    start_to_close_timeout: float
    schedule_to_close_timeout: float | None
    heartbeat_timeout: float | None
    retry_policy: dict[str, Any]
    schedule_to_start_timeout: float | None = None
    priority: int = 0


@dataclass(slots=True)
class ActivityRetry:
    """Re-enqueue an activity task for its next attempt; appends no history."""

    task_id: int
    attempt: int
    visible_at: float
    last_failure: dict[str, Any]


@dataclass(slots=True)
class Transition:
    """Everything one state change does to a run, applied by the store in one transaction."""

    append: list[NewEvent] = field(default_factory=list)
    """Events appended to history, numbered from the run's ``next_event_id``."""
    buffer: list[NewEvent] = field(default_factory=list)
    """Input events held back while a workflow task is in flight."""
    flush_buffer: bool = False
    """Append the run's buffered events after ``append`` (they arrived during the task)."""
    append_after: list[NewEvent] = field(default_factory=list)
    """Events appended after the flushed buffer (a terminate closes after what arrived)."""
    wt_state: WorkflowTaskState | None = None
    """New workflow-task state; SCHEDULED creates the task row if missing, IDLE deletes it."""
    wt_visible_at: float | None = None
    wt_attempt: int | None = None
    wt_failure: dict[str, Any] | None = None
    close: RunStatus | None = None
    """Closing status: deletes every task and timer of the run."""
    continue_as_new: tuple[str, list[Any]] | None = None
    """``(new_run_id, args)``: start the next run of the workflow id in the same transaction;
    signals and updates buffered during the closing task are carried over to it."""
    result: Any = None
    failure: dict[str, Any] | None = None
    schedule_activities: list[ActivitySpec] = field(default_factory=list)
    delete_activities: list[int] = field(default_factory=list)
    """Activity seqs whose task rows go away (final outcome recorded, or canceled)."""
    retry_activity: ActivityRetry | None = None
    start_timers: list[tuple[int, float]] = field(default_factory=list)
    """``(seq, fire_at)`` rows to create."""
    cancel_timers: list[int] = field(default_factory=list)
    delete_timer: int | None = None
    """The fired timer's seq."""
    search_attributes: dict[str, Any] = field(default_factory=dict)
    """Search attributes to set (or, with a None value, remove) on the run."""
    memo: dict[str, Any] = field(default_factory=dict)
    """Memo entries to set (or, with a None value, remove)."""
    external_requests: list[Any] = field(default_factory=list)
    """Signals and cancel requests to other workflows, delivered in the same transaction."""
    start_children: list[Any] = field(default_factory=list)
    """``StartChildWorkflow`` commands: the store starts each child in the same transaction."""
    completed_updates: list[tuple[str, Any, dict[str, Any] | None]] = field(default_factory=list)
    """``(update_id, result, failure)`` of update handlers that finished in this task."""
    rejected: str | None = None
    """Set when the request was refused; nothing but ``flush_buffer``/``wt_state`` applies."""

    def add_input(self, run: RunRecord, event: NewEvent) -> None:
        """Record an input event: buffered while a workflow task is in flight, else appended.

        Appending schedules a workflow task (if none is scheduled) so the code sees the event.
        """
        if run.wt_state == WorkflowTaskState.STARTED:
            self.buffer.append(event)
        else:
            self.append.append(event)
            if run.wt_state == WorkflowTaskState.IDLE:
                self.wt_state = WorkflowTaskState.SCHEDULED
