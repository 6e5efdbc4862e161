"""The store contract: what the worker, client and CLI need from a database.

Every method that changes state does it in one transaction, deciding with an ``engine`` rule
and guarding the run with an optimistic check on ``next_event_id``. Times are the store's clock
(``now()``), never the caller's, so workers with skewed clocks cannot fire timers early.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from duro.commands import Command
from duro.engine.schedules import OverlapPolicy, ScheduleAction, ScheduleSpec
from duro.engine.start import StartRequest
from duro.history import Event, RunStatus
from duro.visibility import Query


@dataclass(slots=True)
class WorkflowTaskLease:
    """A workflow task handed to one worker; ``lease_id`` fences its completion."""

    task_id: int
    lease_id: str
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int
    started_time: float
    """Store time when the task was handed out; the workflow code's ``now()``."""
    next_event_id: int
    history: list[Event]
    """Events after the ``after_event_id`` the worker asked for (all when it has no cache)."""
    history_after: int
    """The event id ``history`` starts after (0 = the full history)."""
    history_size: int = 0
    """Bytes of stored history when the task was handed out (``workflow.info()``)."""


@dataclass(slots=True)
class ActivityTaskLease:
    """An activity attempt handed to one worker; ``lease_id`` fences its outcome."""

    task_id: int
    lease_id: str
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    seq: int
    activity_type: str
    task_queue: str
    args: list[Any]
    attempt: int
    scheduled_time: float
    started_time: float
    start_to_close_timeout: float
    heartbeat_timeout: float | None
    heartbeat_details: Any
    retry_policy: dict[str, Any]


@dataclass(slots=True)
class WorkflowTaskCompletion:
    commands: Sequence[Command]
    workflow_time: float
    identity: str = ""
    build_id: str = ""
    eager_activity_queue: str | None = None
    """Claim up to ``eager_activities`` of the scheduled activities on this queue at once."""
    eager_activities: int = 0
    worker_id: str = ""
    pin: bool = False
    """The workflow is pinned: hold the run to ``build_id`` from its first task on."""
    history_size: int = 0
    """The lease's ``history_size``, recorded in ``WorkflowTaskCompleted`` for replay."""


@dataclass(slots=True)
class CompletionResult:
    accepted: bool
    reason: str = ""
    last_event_id: int = 0
    """Id of the last command event written: what the worker's cached run has seen."""
    activity_leases: list[ActivityTaskLease] = field(default_factory=list)
    history_size: int = 0
    """Bytes of stored history once the task's events are written."""


@dataclass(slots=True)
class ActivityStep:
    """What ``complete_activity_and_task`` did: recorded the outcome and the workflow task it
    woke together (``completion``), or, when the run had moved past what the worker saw, only
    the outcome, handing the worker the run's next task the usual way (``workflow_lease``)."""

    completion: CompletionResult | None = None
    workflow_lease: WorkflowTaskLease | None = None


@dataclass(slots=True)
class FirstTask:
    """A run's first workflow task, run by a worker of the starting process before the start
    (fused start): the store writes the start and this task's completion in one transaction."""

    run_id: str
    """The run's id, drawn by the worker (its first event names it)."""
    time: float
    """The start's time (store clock): the first event's, and the task's ``workflow.now()``."""
    completion: WorkflowTaskCompletion


@dataclass(slots=True)
class StartResult:
    run_id: str
    started: bool
    """False when an existing run was returned (``use_existing`` or a repeated request id)."""
    update_request: int | None = None
    """With update-with-start: the request whose outcome ``take_query_outcome`` returns."""
    repeated: bool = False
    """The request id was seen before: nothing was done (the first request's signal, too)."""
    workflow_lease: WorkflowTaskLease | None = None
    """Eager start: the run's first workflow task, leased to ``StartRequest.eager_worker_id``."""
    completion: CompletionResult | None = None
    """Fused start: the first task's completion, written with the start (``FirstTask``)."""


@dataclass(slots=True)
class PendingActivityInfo:
    seq: int
    activity_type: str
    attempt: int
    state: str
    """``scheduled`` (waiting or backing off before a retry) or ``started``."""
    scheduled_time: float
    next_attempt_time: float | None
    last_failure: dict[str, Any] | None
    heartbeat_details: Any
    worker: str | None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run's status and, once it is closed, its result or failure: what waiting for a
    result reads, in one statement (``describe`` reads five more tables)."""

    workflow_id: str
    run_id: str
    status: RunStatus
    result: Any = None
    failure: dict[str, Any] | None = None


@dataclass(slots=True)
class ExecutionInfo:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    start_time: float
    close_time: float | None
    history_length: int
    args: list[Any] | None = None
    result: Any = None
    failure: dict[str, Any] | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    workflow_task_attempt: int = 1
    workflow_task_failure: dict[str, Any] | None = None
    pending_activities: list[PendingActivityInfo] = field(default_factory=list)
    pending_timers: list[tuple[int, float]] = field(default_factory=list)
    build_ids: list[str] = field(default_factory=list)
    """Builds of the workers that advanced the run; the first one started it."""
    pinned_build_id: str | None = None
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    children: list[tuple[str, str, RunStatus]] = field(default_factory=list)
    """``(workflow_id, run_id, status)`` of the child workflows this run started."""
    search_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class QueryTask:
    """A query, or an update waiting for its validator, handed to a worker."""

    query_id: int
    lease_id: str
    run_id: str
    workflow_type: str
    name: str
    args: list[Any]
    kind: str = "query"
    """``query`` or ``update``."""
    update_id: str | None = None


@dataclass(slots=True)
class QueryOutcome:
    done: bool
    result: Any = None
    error: str | None = None


@dataclass(slots=True)
class ScheduleInfo:
    """A schedule: what it starts, when, and how its firing has gone."""

    namespace: str
    schedule_id: str
    spec: ScheduleSpec
    action: ScheduleAction
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window: float = 86400.0
    """Times missed for longer than this (the system was down) are skipped. Default 1 day."""
    paused: bool = False
    note: str | None = None
    next_nominal: float | None = None
    next_fire_at: float | None = None
    buffered_nominal: float | None = None
    last_workflow_id: str | None = None
    last_nominal: float | None = None
    fired: int = 0
    skipped: int = 0
    created: float = 0.0


@dataclass(slots=True)
class FlowLimit:
    """A limit every worker of the namespace obeys.

    ``scope`` ``activity_type`` or ``task_queue``: at most ``max_concurrent`` attempts running
    at once and at most ``rate`` starts per second (bursts up to ``burst``). ``workflow_key``
    (``name`` a workflow type): at most ``max_concurrent`` running runs per ``concurrency_key``;
    the others wait, in start order, for a slot.
    """

    namespace: str
    scope: str
    name: str
    max_concurrent: int | None = None
    rate: float | None = None
    burst: float | None = None


@dataclass(slots=True)
class NamespaceSettings:
    namespace: str
    retention_seconds: float
    """Closed runs are deleted this long after they close (default 30 days)."""
    archive_dir: str | None = None
    """If set, runs are exported there (JSONL, one file per day) before deletion."""


@dataclass(slots=True)
class ReapResult:
    dead_workers: list[str] = field(default_factory=list)
    released_workflow_tasks: int = 0
    released_activities: int = 0


class Store(Protocol):
    """The persistence boundary. Implementations: ``duro.store.sqlite.SQLiteStore``."""

    url: str
    fuses_first_task: bool
    """Whether ``start_workflow`` should be given the first task, run ahead (``FirstTask``):
    True where one transaction with both costs less than two (SQLite's group commit)."""

    def now(self) -> float: ...

    async def close(self) -> None: ...

    # -- change notification ---------------------------------------------------------------------
    def version(self, topic: Hashable) -> int: ...

    async def wait_for(
        self, topics: Iterable[Hashable], since: Mapping[Any, int], timeout: float
    ) -> None: ...

    # -- starting and external requests ----------------------------------------------------------
    async def start_workflow(
        self, req: StartRequest, first_task: FirstTask | None = None
    ) -> StartResult:
        """Start a run per the id policies. With ``first_task``, a run started by this call
        also records that task's completion; a run not started (an existing one returned)
        ignores it, and so does a start that cannot hand its task over (``started`` without
        ``completion``)."""
        ...

    async def signal_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        request_id: str | None = None,
    ) -> None: ...

    async def request_cancel(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None: ...

    async def terminate(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None: ...

    # -- workflow tasks --------------------------------------------------------------------------
    async def poll_workflow_tasks(
        self,
        namespace: str,
        task_queue: str,
        worker_id: str,
        max_tasks: int,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> list[WorkflowTaskLease]: ...

    async def get_history(self, run_id: str, after_event_id: int = 0) -> list[Event]: ...

    async def complete_workflow_task(
        self, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
    ) -> CompletionResult: ...

    async def fail_workflow_task(
        self, lease: WorkflowTaskLease, failure: dict[str, Any]
    ) -> None: ...

    # -- activity tasks --------------------------------------------------------------------------
    async def poll_activity_tasks(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[ActivityTaskLease]: ...

    async def complete_activity_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None: ...

    async def fail_activity_task(
        self,
        lease: ActivityTaskLease,
        failure: dict[str, Any],
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None: ...

    async def complete_activity_and_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        seen_upto: int,
        completion: WorkflowTaskCompletion,
        *,
        cached_upto: Callable[[str], int] | None = None,
    ) -> ActivityStep:
        """Record an activity's result and, in the same transaction, the workflow task it wakes.

        The worker has the run cached up to event ``seen_upto`` and has already run its code on
        the result (``completion``). That holds only if nothing else reached the run meanwhile:
        the result must be the next event and no workflow task pending. Otherwise only the
        result is recorded and the run's next task is leased to ``completion.worker_id``.
        """
        ...

    async def heartbeat_activity_task(self, lease: ActivityTaskLease, details: Any) -> bool: ...

    async def detach_activity_task(self, task_id: int, lease_id: str) -> None: ...

    async def complete_activity_by_token(
        self, task_id: int, lease_id: str, ok: bool, value: Any
    ) -> None: ...

    async def heartbeat_activity_by_token(
        self, task_id: int, lease_id: str, details: Any
    ) -> bool: ...

    # -- timers ----------------------------------------------------------------------------------
    async def fire_due_timers(self, limit: int = 256) -> int: ...

    async def next_timer_time(self) -> float | None: ...

    # -- queries ---------------------------------------------------------------------------------
    async def submit_query(
        self, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
    ) -> int: ...

    async def submit_update(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        update_id: str,
    ) -> int: ...

    async def accept_update(self, query_id: int, lease_id: str) -> None: ...

    async def poll_queries(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[QueryTask]: ...

    async def answer_query(
        self, query_id: int, lease_id: str, result: Any, error: str | None
    ) -> None: ...

    async def take_query_outcome(self, query_id: int) -> QueryOutcome: ...

    # -- workers ---------------------------------------------------------------------------------
    async def register_worker(
        self,
        worker_id: str,
        namespace: str,
        task_queue: str,
        identity: str,
        workflow_types: dict[str, dict[str, list[str]]],
    ) -> None: ...

    async def heartbeat_worker(self, worker_id: str) -> bool:
        """Prove liveness; False if this worker was reaped (it must register again)."""
        ...

    async def unregister_worker(self, worker_id: str) -> None: ...

    async def reap(self, liveness_timeout: float) -> ReapResult: ...

    async def workflow_type_handlers(
        self, namespace: str, workflow_type: str
    ) -> dict[str, list[str]] | None: ...

    async def known_workflow_types(self, namespace: str, task_queue: str) -> list[str] | None: ...

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, info: ScheduleInfo) -> None: ...

    async def describe_schedule(self, namespace: str, schedule_id: str) -> ScheduleInfo: ...

    async def list_schedules(self, namespace: str) -> list[ScheduleInfo]: ...

    async def pause_schedule(
        self, namespace: str, schedule_id: str, paused: bool, note: str = ""
    ) -> None: ...

    async def delete_schedule(self, namespace: str, schedule_id: str) -> None: ...

    async def trigger_schedule(self, namespace: str, schedule_id: str) -> str: ...

    async def backfill_schedule(
        self, namespace: str, schedule_id: str, start: float, end: float
    ) -> list[str]: ...

    # -- reset and fork -----------------------------------------------------------------------

    async def reset_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        point: int | str,
        reason: str,
        reapply_signals: bool,
        fork_id: str | None,
    ) -> str: ...

    # -- flow limits -----------------------------------------------------------------------------

    async def set_flow_limit(self, limit: FlowLimit) -> None: ...

    async def delete_flow_limit(self, namespace: str, scope: str, name: str) -> None: ...

    async def list_flow_limits(self, namespace: str) -> list[FlowLimit]: ...

    # -- namespaces and retention ------------------------------------------------------------

    async def namespace_settings(self, namespace: str) -> NamespaceSettings: ...

    async def set_namespace_settings(self, settings: NamespaceSettings) -> None: ...

    async def register_search_attributes(self, namespace: str, names: list[str]) -> None: ...

    async def search_attribute_names(self, namespace: str) -> list[str]: ...

    async def expired_runs(self, namespace: str, retention: float, limit: int) -> list[str]: ...

    async def delete_runs(self, run_ids: list[str]) -> int: ...

    # -- visibility ------------------------------------------------------------------------------
    async def describe(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> ExecutionInfo: ...

    async def run_outcome(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> RunOutcome:
        """The run's (the workflow id's current run if ``run_id`` is None) status and outcome.

        Raises:
            WorkflowNotFoundError: no such run.
        """
        ...

    async def count_workflows(self, namespace: str, query: Query | None = None) -> int: ...

    async def list_workflows(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        status: RunStatus | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        query: Query | None = None,
    ) -> list[ExecutionInfo]: ...
