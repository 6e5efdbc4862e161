"""Starting a run, and what happens when its workflow id is already taken."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from duro.engine.model import RunRecord, Transition, WorkflowTaskState
from duro.engine.timers import EXECUTION_TIMEOUT_SEQ, RUN_TIMEOUT_SEQ
from duro.errors import WorkflowAlreadyStartedError
from duro.history import EventType, NewEvent, RunStatus


class IdConflictPolicy(enum.StrEnum):
    """What a start does when a run with the same workflow id is still running."""

    FAIL = "fail"
    """Raise ``WorkflowAlreadyStartedError`` (default)."""
    USE_EXISTING = "use_existing"
    """Return a handle to the running run; start nothing."""
    TERMINATE_EXISTING = "terminate_existing"
    """Terminate the running run, then start a new one."""


class IdReusePolicy(enum.StrEnum):
    """Whether a workflow id whose last run is closed may be started again."""

    ALLOW_DUPLICATE = "allow_duplicate"
    """Always (default)."""
    ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
    """Only if the last run failed, was canceled or terminated."""
    REJECT_DUPLICATE = "reject_duplicate"
    """Never."""


@dataclass(slots=True)
class StartRequest:
    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    args: list[Any]
    id_conflict_policy: IdConflictPolicy = IdConflictPolicy.FAIL
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    memo: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    """Makes a retried start idempotent: the same request id returns the run it started."""
    signal: tuple[str, list[Any]] | None = None
    """Signal-with-start: ``(name, args)`` delivered to the started (or existing) run."""
    update: tuple[str, list[Any], str] | None = None
    """Update-with-start: ``(name, args, update_id)`` queued for the started (or existing) run."""
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    """Set when a workflow starts this run as its child."""
    parent_seq: int | None = None
    parent_close_policy: str | None = None
    priority: int = 0
    """Workflow tasks of the run are polled by priority (higher first). Default 0."""
    concurrency_key: str | None = None
    """Runs of one workflow type sharing a key share that key's limit (``workflow_key``)."""
    search_attributes: dict[str, Any] = field(default_factory=dict)
    """Encoded search attributes (``duro.search_attributes.encode_all``)."""
    execution_timeout: float | None = None
    """Seconds the whole chain of runs (continue-as-new included) may take; None: no limit."""
    run_timeout: float | None = None
    """Seconds each run may take; None: no limit."""
    eager_worker_id: str | None = None
    """Eager start: lease the run's first workflow task to this worker in the same transaction."""
    eager_build_id: str = ""


class StartDecision(enum.Enum):
    START = "start"
    USE_EXISTING = "use_existing"
    TERMINATE_AND_START = "terminate_and_start"


def decide_start(req: StartRequest, current: RunRecord | None) -> StartDecision:
    """Apply the id conflict and reuse policies to the current run of the workflow id."""
    if current is None:
        return StartDecision.START
    if current.status == RunStatus.RUNNING:
        if req.id_conflict_policy == IdConflictPolicy.USE_EXISTING:
            return StartDecision.USE_EXISTING
        if req.id_conflict_policy == IdConflictPolicy.TERMINATE_EXISTING:
            return StartDecision.TERMINATE_AND_START
        raise WorkflowAlreadyStartedError(current.workflow_id, current.run_id)
    if req.id_reuse_policy == IdReusePolicy.REJECT_DUPLICATE or (
        req.id_reuse_policy == IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
        and current.status == RunStatus.COMPLETED
    ):
        raise WorkflowAlreadyStartedError(current.workflow_id, current.run_id)
    return StartDecision.START


def start_workflow(req: StartRequest, run_id: str, now: float) -> Transition:
    """The first event of a run, and its first workflow task (visible at once)."""
    started = NewEvent(
        EventType.WORKFLOW_EXECUTION_STARTED,
        {
            "workflow_type": req.workflow_type,
            "workflow_id": req.workflow_id,
            "run_id": run_id,
            "namespace": req.namespace,
            "task_queue": req.task_queue,
            "args": req.args,
            "memo": req.memo,
            "search_attributes": req.search_attributes,
        },
    )
    t = Transition(
        append=[started],
        wt_state=WorkflowTaskState.SCHEDULED,
        wt_visible_at=now,
        wt_attempt=1,
        search_attributes=dict(req.search_attributes),
    )
    if req.run_timeout:
        t.start_timers.append((RUN_TIMEOUT_SEQ, now + req.run_timeout))
    if req.execution_timeout:
        t.start_timers.append((EXECUTION_TIMEOUT_SEQ, now + req.execution_timeout))
    return t
