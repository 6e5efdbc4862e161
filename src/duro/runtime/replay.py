"""Replay: feed a history to workflow code in the batches it first saw, and check its commands.

A history reads as repeated ``inputs, WorkflowTaskCompleted, command events``. Activation *i*
gets batch *i*'s input events; the commands it produces must match, in order, kind and name,
the command events recorded after that batch's ``WorkflowTaskCompleted``. Input events after the
last recorded batch are new: the activation that gets them produces the task's commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from duro.commands import (
    PATCH_MARKER_PREFIX,
    Command,
    describe_command,
    describe_event,
    event_key,
)
from duro.definitions import WorkflowDefinition
from duro.errors import NonDeterminismError
from duro.history import COMMAND_EVENTS, Event, EventType
from duro.runtime import guards
from duro.runtime.instance import WorkflowInfo, WorkflowInstance


@dataclass
class Batch:
    inputs: list[Event] = field(default_factory=list)
    completed: Event | None = None
    """The ``WorkflowTaskCompleted`` that ended this batch; None for new, unprocessed events."""
    commands: list[Event] = field(default_factory=list)


def split_batches(events: Sequence[Event]) -> list[Batch]:
    batches: list[Batch] = []
    current = Batch()
    for event in events:
        if event.type == EventType.WORKFLOW_TASK_COMPLETED:
            if current.completed is not None:  # a task that produced no commands
                batches.append(current)
                current = Batch()
            current.completed = event
        elif event.type in COMMAND_EVENTS:
            if current.completed is None:
                raise NonDeterminismError(
                    event.event_id, f"{describe_event(event)} outside a workflow task", None
                )
            current.commands.append(event)
        else:
            if current.completed is not None:
                batches.append(current)
                current = Batch()
            current.inputs.append(event)
    if current.inputs or current.completed is not None:
        batches.append(current)
    return batches


def check_commands(produced: Sequence[Command], batch: Batch) -> None:
    """Raise ``NonDeterminismError`` at the first difference between code and history."""
    recorded = batch.commands
    assert batch.completed is not None
    for i in range(max(len(produced), len(recorded))):
        p = produced[i] if i < len(produced) else None
        r = recorded[i] if i < len(recorded) else None
        if p is not None and r is not None and p.key() == event_key(r):
            continue
        if r is not None:
            event_id = r.event_id
        elif recorded:
            event_id = recorded[-1].event_id + 1
        else:
            event_id = batch.completed.event_id + 1
        hint = None
        name = str(r.attrs.get("name", "")) if r is not None else ""
        if r is not None and name.startswith(PATCH_MARKER_PREFIX):
            patch_id = name.removeprefix(PATCH_MARKER_PREFIX)
            hint = (
                f"this run took the new path of patch {patch_id!r}, but the code no longer "
                f"calls workflow.patched({patch_id!r}): keep workflow.deprecate_patch("
                f"{patch_id!r}) at that point until every run started before the patch closed"
            )
        raise NonDeterminismError(
            event_id,
            describe_event(r) if r is not None else None,
            describe_command(p) if p is not None else None,
            hint=hint,
        )


def new_instance(
    defn: WorkflowDefinition,
    started: Event,
    *,
    determinism_guards: bool = True,
    deadlock_timeout: float | None = 2.0,
) -> WorkflowInstance:
    """An empty instance for the run whose first event is ``started``."""
    if started.type != EventType.WORKFLOW_EXECUTION_STARTED:
        raise NonDeterminismError(started.event_id, started.type.value, "WorkflowExecutionStarted")
    a = started.attrs
    info = WorkflowInfo(
        namespace=a.get("namespace", "default"),
        workflow_id=a["workflow_id"],
        run_id=a["run_id"],
        workflow_type=a["workflow_type"],
        task_queue=a["task_queue"],
        start_time=datetime.fromtimestamp(started.time, UTC),
        continued_from=a.get("continued_from"),
    )
    instance = WorkflowInstance(defn, info)
    instance.guards_enabled = determinism_guards
    instance.deadlock_timeout = deadlock_timeout
    if determinism_guards:
        guards.install()
    return instance


def advance(
    instance: WorkflowInstance,
    events: Sequence[Event],
    task_time: float,
    *,
    task_history: tuple[int, int] | None = None,
) -> list[Command]:
    """Feed events after ``instance.last_event_id``; returns the commands for the new events.

    Recorded batches are replayed and checked; the final unrecorded batch (if any) runs live.
    ``task_history`` is ``(length, bytes)`` of history when the live task was handed out; for
    a recorded batch both come from its ``WorkflowTaskCompleted``, so ``workflow.info()``
    answers the same on replay.
    """
    commands: list[Command] = []
    for batch in split_batches(events):
        if batch.completed is not None:
            instance.task_history_length = batch.completed.event_id - 1
            instance.task_history_size = int(batch.completed.attrs.get("history_size", 0))
            workflow_time = float(batch.completed.attrs.get("workflow_time", batch.completed.time))
            instance.recorded_markers = frozenset(
                e.attrs.get("name", "")
                for e in batch.commands
                if e.type == EventType.MARKER_RECORDED
            )
            try:
                produced = instance.activate(batch.inputs, workflow_time, replaying=True)
            finally:
                instance.recorded_markers = frozenset()
            check_commands(produced, batch)
            last = batch.commands[-1] if batch.commands else batch.completed
            instance.last_event_id = last.event_id
        else:
            if task_history is not None:
                instance.task_history_length, instance.task_history_size = task_history
            elif batch.inputs:
                instance.task_history_length = batch.inputs[-1].event_id
            commands = instance.activate(batch.inputs, task_time, replaying=False)
            if batch.inputs:
                instance.last_event_id = batch.inputs[-1].event_id
    return commands


def replay(defn: WorkflowDefinition, events: Sequence[Event]) -> WorkflowInstance:
    """Replay a whole history (the ``duro replay`` check); raises on any divergence.

    Input events after the last recorded task are applied too, so the returned instance holds
    the state a live worker would (queries on closed runs use this).
    """
    if not events:
        raise ValueError("empty history")
    instance = new_instance(defn, events[0])
    last_time = events[-1].time
    advance(instance, events, last_time)
    return instance
