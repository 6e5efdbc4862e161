"""The store protocol's methods, once for every SQL store.

Each method names its operation (a function of ``ops.py`` run in one transaction); how that
transaction is run is the backend's business (``_call``): SQLite batches operations into one
commit on the event loop's thread, PostgreSQL runs each on a pooled connection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from duro.engine import requests as request_rules
from duro.engine.start import StartRequest
from duro.history import Event, RunStatus
from duro.store import ops
from duro.store.notify import Notifier
from duro.store.protocol import (
    ActivityStep,
    ActivityTaskLease,
    CompletionResult,
    ExecutionInfo,
    FirstTask,
    FlowLimit,
    NamespaceSettings,
    QueryOutcome,
    QueryTask,
    ReapResult,
    RunOutcome,
    ScheduleInfo,
    StartResult,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)
from duro.store.tx import get_history
from duro.visibility import Query

T = TypeVar("T")


class SqlStore:
    """Base of the SQL stores: the protocol's methods as operations passed to ``_call``."""

    url: str
    fuses_first_task = False
    _notifier: Notifier

    def now(self) -> float:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _call(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run ``fn(tx, *args)`` in a transaction of its own (or a shared, atomic batch)."""
        raise NotImplementedError

    def version(self, topic: Hashable) -> int:
        return self._notifier.version(topic)

    async def wait_for(
        self, topics: Iterable[Hashable], since: Mapping[Any, int], timeout: float
    ) -> None:
        await self._notifier.wait(topics, since, timeout)

    # -- starting and external requests ----------------------------------------------------------

    async def start_workflow(
        self, req: StartRequest, first_task: FirstTask | None = None
    ) -> StartResult:
        return await self._call(ops.start_workflow, req, first_task)

    async def signal_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        request_id: str | None = None,
    ) -> None:
        await self._call(
            ops.signal_workflow, namespace, workflow_id, run_id, name, args, request_id
        )

    async def request_cancel(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            ops.external_request,
            request_rules.request_cancel,
            namespace,
            workflow_id,
            run_id,
            reason,
        )

    async def terminate(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            ops.external_request, request_rules.terminate, namespace, workflow_id, run_id, reason
        )

    # -- workflow tasks --------------------------------------------------------------------------

    async def poll_workflow_tasks(
        self,
        namespace: str,
        task_queue: str,
        worker_id: str,
        max_tasks: int,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> list[WorkflowTaskLease]:
        return await self._call(
            ops.poll_workflow_tasks,
            namespace,
            task_queue,
            worker_id,
            max_tasks,
            cached_upto,
            build_id,
        )

    async def get_history(self, run_id: str, after_event_id: int = 0) -> list[Event]:
        return await self._call(get_history, run_id, after_event_id, readonly=True)

    async def complete_workflow_task(
        self, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
    ) -> CompletionResult:
        return await self._call(ops.complete_workflow_task, lease, completion)

    async def fail_workflow_task(self, lease: WorkflowTaskLease, failure: dict[str, Any]) -> None:
        await self._call(ops.fail_workflow_task, lease, failure)

    # -- activity tasks --------------------------------------------------------------------------

    async def poll_activity_tasks(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[ActivityTaskLease]:
        return await self._call(
            ops.poll_activity_tasks, namespace, task_queue, worker_id, max_tasks
        )

    async def complete_activity_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None:
        return await self._call(
            ops.activity_outcome, lease, True, result, eager_worker_id, cached_upto, build_id
        )

    async def fail_activity_task(
        self,
        lease: ActivityTaskLease,
        failure: dict[str, Any],
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None:
        return await self._call(
            ops.activity_outcome, lease, False, failure, eager_worker_id, cached_upto, build_id
        )

    async def complete_activity_and_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        seen_upto: int,
        completion: WorkflowTaskCompletion,
        *,
        cached_upto: Callable[[str], int] | None = None,
    ) -> ActivityStep:
        return await self._call(
            ops.complete_activity_and_task, lease, result, seen_upto, completion, cached_upto
        )

    async def detach_activity_task(self, task_id: int, lease_id: str) -> None:
        await self._call(ops.detach_activity, task_id, lease_id)

    async def complete_activity_by_token(
        self, task_id: int, lease_id: str, ok: bool, value: Any
    ) -> None:
        await self._call(ops.activity_outcome_by_token, task_id, lease_id, ok, value)

    async def heartbeat_activity_by_token(self, task_id: int, lease_id: str, details: Any) -> bool:
        return await self._call(ops.heartbeat_by_token, task_id, lease_id, details)

    async def heartbeat_activity_task(self, lease: ActivityTaskLease, details: Any) -> bool:
        return await self._call(ops.heartbeat_activity, lease, details)

    # -- timers ----------------------------------------------------------------------------------

    async def fire_due_timers(self, limit: int = 256) -> int:
        return await self._call(ops.fire_due_timers, limit)

    async def next_timer_time(self) -> float | None:
        return await self._call(ops.next_timer_time, readonly=True)

    async def pending_work(self) -> tuple[int, float | None]:
        """Work runnable now (leased or visible tasks, due timers) and the next due time.

        For the testing toolkit's clock: with nothing runnable, jumping to the next due time
        skips no work. Not part of the ``Store`` protocol.
        """
        return await self._call(ops.pending_work, readonly=True)

    # -- queries ---------------------------------------------------------------------------------

    async def submit_query(
        self, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
    ) -> int:
        return await self._call(ops.submit_query, namespace, workflow_id, run_id, name, args)

    async def submit_update(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        update_id: str,
    ) -> int:
        return await self._call(
            ops.submit_update, namespace, workflow_id, run_id, name, args, update_id
        )

    async def accept_update(self, query_id: int, lease_id: str) -> None:
        await self._call(ops.accept_update, query_id, lease_id)

    async def poll_queries(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[QueryTask]:
        return await self._call(ops.poll_queries, namespace, task_queue, worker_id, max_tasks)

    async def answer_query(
        self, query_id: int, lease_id: str, result: Any, error: str | None
    ) -> None:
        await self._call(ops.answer_query, query_id, lease_id, result, error)

    async def take_query_outcome(self, query_id: int) -> QueryOutcome:
        return await self._call(ops.take_query_outcome, query_id)

    # -- workers ---------------------------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        namespace: str,
        task_queue: str,
        identity: str,
        workflow_types: dict[str, dict[str, list[str]]],
    ) -> None:
        await self._call(
            ops.register_worker, worker_id, namespace, task_queue, identity, workflow_types
        )

    async def heartbeat_worker(self, worker_id: str) -> bool:
        return await self._call(ops.heartbeat_worker, worker_id)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._call(ops.unregister_worker, worker_id)

    async def reap(self, liveness_timeout: float) -> ReapResult:
        return await self._call(ops.reap_workers, liveness_timeout)

    async def workflow_type_handlers(
        self, namespace: str, workflow_type: str
    ) -> dict[str, list[str]] | None:
        return await self._call(ops.type_handlers, namespace, workflow_type, readonly=True)

    async def known_workflow_types(self, namespace: str, task_queue: str) -> list[str] | None:
        return await self._call(ops.known_types, namespace, task_queue, readonly=True)

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, info: ScheduleInfo) -> None:
        await self._call(ops.create_schedule, info)

    async def describe_schedule(self, namespace: str, schedule_id: str) -> ScheduleInfo:
        return await self._call(ops.describe_schedule, namespace, schedule_id, readonly=True)

    async def list_schedules(self, namespace: str) -> list[ScheduleInfo]:
        return await self._call(ops.list_schedules, namespace, readonly=True)

    async def pause_schedule(
        self, namespace: str, schedule_id: str, paused: bool, note: str = ""
    ) -> None:
        await self._call(ops.pause_schedule, namespace, schedule_id, paused, note)

    async def delete_schedule(self, namespace: str, schedule_id: str) -> None:
        await self._call(ops.delete_schedule, namespace, schedule_id)

    async def trigger_schedule(self, namespace: str, schedule_id: str) -> str:
        return await self._call(ops.trigger_schedule, namespace, schedule_id)

    async def backfill_schedule(
        self, namespace: str, schedule_id: str, start: float, end: float
    ) -> list[str]:
        return await self._call(ops.backfill_schedule, namespace, schedule_id, start, end)

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
    ) -> str:
        return await self._call(
            ops.reset_workflow,
            namespace,
            workflow_id,
            run_id,
            point,
            reason,
            reapply_signals,
            fork_id,
        )

    # -- flow limits -----------------------------------------------------------------------------

    async def set_flow_limit(self, limit: FlowLimit) -> None:
        await self._call(ops.set_flow_limit, limit)

    async def delete_flow_limit(self, namespace: str, scope: str, name: str) -> None:
        await self._call(ops.delete_flow_limit, namespace, scope, name)

    async def list_flow_limits(self, namespace: str) -> list[FlowLimit]:
        return await self._call(ops.list_flow_limits, namespace, readonly=True)

    # -- namespaces and retention ------------------------------------------------------------

    async def namespace_settings(self, namespace: str) -> NamespaceSettings:
        return await self._call(ops.namespace_settings, namespace, readonly=True)

    async def set_namespace_settings(self, settings: NamespaceSettings) -> None:
        await self._call(ops.set_namespace_settings, settings)

    async def register_search_attributes(self, namespace: str, names: list[str]) -> None:
        await self._call(ops.register_search_attributes, namespace, names)

    async def search_attribute_names(self, namespace: str) -> list[str]:
        return await self._call(ops.search_attribute_names, namespace, readonly=True)

    async def expired_runs(self, namespace: str, retention: float, limit: int) -> list[str]:
        return await self._call(ops.expired_runs, namespace, retention, limit, readonly=True)

    async def delete_runs(self, run_ids: list[str]) -> int:
        return await self._call(ops.delete_runs, run_ids)

    # -- visibility ------------------------------------------------------------------------------

    async def describe(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> ExecutionInfo:
        return await self._call(ops.describe_run, namespace, workflow_id, run_id, readonly=True)

    async def run_outcome(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> RunOutcome:
        return await self._call(ops.run_outcome, namespace, workflow_id, run_id, readonly=True)

    async def count_workflows(self, namespace: str, query: Query | None = None) -> int:
        return await self._call(ops.count_workflows, namespace, query, readonly=True)

    async def list_workflows(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        status: RunStatus | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        query: Query | None = None,
    ) -> list[ExecutionInfo]:
        return await self._call(
            ops.list_workflows,
            namespace,
            workflow_type,
            status,
            workflow_id,
            limit,
            query,
            readonly=True,
        )

    async def resolve_run(self, namespace: str, workflow_id: str, run_id: str | None) -> str:
        """The run id of ``run_id`` or, if None, of the workflow id's current run."""
        return await self._call(ops.resolve_run, namespace, workflow_id, run_id, readonly=True)
