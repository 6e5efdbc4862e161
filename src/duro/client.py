"""The client: start workflows, and signal, query, cancel, inspect and await their runs.

Example::

    client = await Client.connect("sqlite:///duro.db")
    handle = await client.start_workflow(Agent.run, "plan a trip", id="trip-42")
    await handle.signal(Agent.approve)
    print(await handle.result())
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from duro import search_attributes as sa
from duro.converter import (
    failure_from_dict,
    failure_to_dict,
    from_payload,
    to_payload,
    to_payloads,
)
from duro.definitions import handler_name, workflow_definition
from duro.engine.schedules import OverlapPolicy, ScheduleAction, ScheduleSpec
from duro.engine.start import IdConflictPolicy, IdReusePolicy, StartRequest
from duro.errors import (
    ApplicationError,
    QueryError,
    UnknownHandlerError,
    UnknownWorkflowTypeError,
    UpdateFailedError,
    WorkflowFailureError,
)
from duro.history import Event, RunStatus
from duro.schedules import ScheduleHandle
from duro.search_attributes import SearchAttributeValue
from duro.store import Store, open_store
from duro.store.protocol import (
    ExecutionInfo,
    FlowLimit,
    NamespaceSettings,
    PendingActivityInfo,
    RunOutcome,
    ScheduleInfo,
    StartResult,
)
from duro.visibility import FIELDS, parse_query

__all__ = [
    "Client",
    "IdConflictPolicy",
    "IdReusePolicy",
    "PendingActivityInfo",
    "WorkflowExecution",
    "WorkflowHandle",
]

DEFAULT_DB = "sqlite:///duro.db"

WorkflowExecution = ExecutionInfo
"""What ``describe()`` and ``list_workflows()`` return: ids, status, times, result/failure."""


class _LocalWorker(Protocol):
    """What an eager start needs of a worker running on this client (``duro.worker``, a
    layer above, registers itself)."""

    worker_id: str
    build_id: str
    task_queue: str

    def _reserve_eager_start(self, workflow_type: str) -> bool: ...

    async def _start_eagerly(self, req: StartRequest) -> StartResult: ...


def _retrieve(call: asyncio.Future[StartResult]) -> None:
    """An eager start's outcome, when its caller was cancelled: seen, so asyncio logs nothing."""
    if not call.cancelled():
        call.exception()


class Client:
    """A connection to a duro store, scoped to one namespace."""

    def __init__(self, store: Store, *, namespace: str = "default") -> None:
        self.store = store
        self.namespace = namespace
        self._local_workers: list[_LocalWorker] = []
        """Running workers of this client that take eager starts (``Worker(eager_start=)``)."""
        self._handlers_seen: set[tuple[str, str, str, str]] = set()
        """(namespace, workflow type, kind, name) of handlers a worker registered: checked once.
        A name only ever checked absent is read again each time (a worker may register it)."""

    @classmethod
    async def connect(cls, url: str | None = None, *, namespace: str = "default") -> Client:
        """Open the store at ``url`` (default: ``$DURO_DB`` or ``sqlite:///duro.db``)."""
        return cls(
            await open_store(url or os.environ.get("DURO_DB") or DEFAULT_DB), namespace=namespace
        )

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- starting --------------------------------------------------------------------------------

    async def start_workflow(
        self,
        workflow: Any,
        *args: Any,
        id: str,
        task_queue: str = "default",
        id_conflict_policy: IdConflictPolicy = IdConflictPolicy.FAIL,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
        memo: dict[str, Any] | None = None,
        request_id: str | None = None,
        start_signal: tuple[Callable[..., Any] | str, Sequence[Any]] | None = None,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        search_attributes: dict[str, SearchAttributeValue] | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
    ) -> WorkflowHandle:
        """Start a run and return its handle (the run proceeds on a worker).

        Args:
            workflow: A ``@workflow.defn`` class, its run method, a workflow function, or a
                workflow type name.
            id: The workflow id; unique among running workflows of the namespace.
            id_conflict_policy: When ``id`` is running: ``FAIL`` (default, raises
                ``WorkflowAlreadyStartedError``), ``USE_EXISTING`` or ``TERMINATE_EXISTING``.
            id_reuse_policy: When ``id``'s last run is closed. Default: allow a new run.
            request_id: Retrying a start with the same request id returns the same run.
            start_signal: Signal-with-start: ``(signal, args)`` sent in the same transaction,
                to the new run or (with ``USE_EXISTING``) to the running one.
            search_attributes: Typed values to find the run by (``list_workflows("Customer =
                'c-42'")``); str, int, float, bool or datetime.
            priority: The run's workflow tasks go before lower priorities of the queue.
            concurrency_key: With a ``workflow_key`` flow limit on the workflow type, at most
                that many runs sharing the key run at once; the others wait in start order.
            execution_timeout: Limit for the whole workflow, continue-as-new runs included;
                past it the run closes as ``TimedOut``. Default: none.
            run_timeout: Limit for each run. Default: none.

        Raises:
            PayloadEncodeError: an argument has no JSON form (nothing is stored).
            UnknownWorkflowTypeError: workers of ``task_queue`` do not register that type.
        """
        handle, _ = await self._start(
            workflow,
            args,
            self._start_request(
                id=id,
                task_queue=task_queue,
                id_conflict_policy=id_conflict_policy,
                id_reuse_policy=id_reuse_policy,
                memo=memo,
                request_id=request_id,
                start_signal=start_signal,
                execution_timeout=execution_timeout,
                run_timeout=run_timeout,
                search_attributes=search_attributes,
                priority=priority,
                concurrency_key=concurrency_key,
            ),
        )
        return handle

    def _start_request(
        self,
        *,
        id: str,
        task_queue: str = "default",
        id_conflict_policy: IdConflictPolicy = IdConflictPolicy.FAIL,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
        memo: dict[str, Any] | None = None,
        request_id: str | None = None,
        start_signal: tuple[Callable[..., Any] | str, Sequence[Any]] | None = None,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        search_attributes: dict[str, SearchAttributeValue] | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
    ) -> StartRequest:
        """The request of ``start_workflow``'s options (type and arguments are set by _start)."""
        signal = None
        if start_signal is not None:
            sig_name = handler_name(start_signal[0], "signal")
            what = f"argument of signal {sig_name!r}:"
            signal = (sig_name, to_payloads(start_signal[1], what=what))
        return StartRequest(
            namespace=self.namespace,
            workflow_id=id,
            workflow_type="",
            task_queue=task_queue,
            args=[],
            id_conflict_policy=IdConflictPolicy(id_conflict_policy),
            id_reuse_policy=IdReusePolicy(id_reuse_policy),
            memo=memo or {},
            request_id=request_id,
            signal=signal,
            search_attributes=sa.encode_all(search_attributes or {}),
            priority=priority,
            concurrency_key=concurrency_key,
            execution_timeout=execution_timeout.total_seconds() if execution_timeout else None,
            run_timeout=run_timeout.total_seconds() if run_timeout else None,
        )

    async def _start(
        self, workflow: Any, args: Sequence[Any], req: StartRequest
    ) -> tuple[WorkflowHandle, StartResult]:
        """Resolve the workflow type, encode the arguments, start; ``req`` carries the rest."""
        defn = workflow_definition(workflow) if not isinstance(workflow, str) else None
        if defn is None and not isinstance(workflow, str):
            raise TypeError(f"{workflow!r} is not a workflow: decorate it with @workflow.defn")
        workflow_type = defn.name if defn is not None else str(workflow)
        req.workflow_type = workflow_type
        req.args = to_payloads(args, what=f"argument of workflow {workflow_type!r}:")
        task_queue = req.task_queue
        if defn is None:
            known = await self.store.known_workflow_types(self.namespace, task_queue)
            if known is not None and workflow_type not in known:
                raise UnknownWorkflowTypeError(workflow_type, known)
        worker = self._eager_worker(req)
        if worker is None:
            started = await self.store.start_workflow(req)
        else:
            req.eager_worker_id, req.eager_build_id = worker.worker_id, worker.build_id
            # The worker gets the task (or its slot back) whatever becomes of this caller: a
            # lease that committed but was never handed over would hold the run for 10 s.
            call = asyncio.ensure_future(worker._start_eagerly(req))
            call.add_done_callback(_retrieve)
            started = await asyncio.shield(call)
        result_type = defn.run_signature.return_hint if defn is not None else None
        handle = WorkflowHandle(
            self,
            req.workflow_id,
            started.run_id,
            result_type=result_type,
            workflow_type=workflow_type,
        )
        return handle, started

    def _eager_worker(self, req: StartRequest) -> _LocalWorker | None:
        """A worker of this process to hand the new run's first task to, in the start's own
        transaction (eager start): it serves the queue and type, and a slot is now reserved."""
        if req.signal is not None or req.update is not None or req.concurrency_key is not None:
            return None
        for worker in self._local_workers:
            if worker.task_queue == req.task_queue and worker._reserve_eager_start(
                req.workflow_type
            ):
                return worker
        return None

    async def execute_workflow(self, workflow: Any, *args: Any, id: str, **options: Any) -> Any:
        """Start a run and wait for its result (see ``start_workflow`` for the options)."""
        handle = await self.start_workflow(workflow, *args, id=id, **options)
        return await handle.result()

    async def execute_update_with_start(
        self,
        workflow: Any,
        *args: Any,
        id: str,
        update: Callable[..., Any] | str,
        update_args: Sequence[Any] = (),
        update_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> tuple[WorkflowHandle, Any]:
        """Start the workflow unless it runs already, send it an update, wait for the result.

        The start and the update request are one transaction; ``options`` are those of
        ``start_workflow``, except that the conflict policy defaults to ``USE_EXISTING`` so the
        call works whether or not the workflow is running. Returns the handle and the update's
        result.
        """
        name = handler_name(update, "update")
        payloads = to_payloads(update_args, what=f"argument of update {name!r}:")
        options.setdefault("id_conflict_policy", IdConflictPolicy.USE_EXISTING)
        req = self._start_request(id=id, **options)
        req.update = (name, payloads, update_id or uuid.uuid4().hex)
        handle, started = await self._start(workflow, args, req)
        request = started.update_request
        assert request is not None
        result_type = None
        if not isinstance(update, str):
            from duro.converter import signature_of

            result_type = signature_of(update, True).return_hint
        result = await handle._await_update(request, name, result_type, timeout)
        return handle, result

    async def create_schedule(
        self,
        schedule_id: str,
        workflow: Any,
        *args: Any,
        spec: ScheduleSpec,
        task_queue: str = "default",
        overlap: OverlapPolicy = OverlapPolicy.SKIP,
        catchup_window: timedelta = timedelta(days=1),
        paused: bool = False,
        note: str | None = None,
    ) -> ScheduleHandle:
        """Create a schedule that starts ``workflow(*args)`` at the times of ``spec``.

        Args:
            overlap: When the previous run is still open: ``SKIP`` (default), ``BUFFER_ONE``,
                ``ALLOW_ALL`` or ``CANCEL_OTHER``.
            catchup_window: Times missed for longer than this (no worker was running) are
                skipped rather than started late. Default 1 day.

        Raises:
            ScheduleError: a schedule with this id exists.
        """
        defn = workflow_definition(workflow) if not isinstance(workflow, str) else None
        if defn is None and not isinstance(workflow, str):
            raise TypeError(f"{workflow!r} is not a workflow: decorate it with @workflow.defn")
        workflow_type = defn.name if defn is not None else str(workflow)
        action = ScheduleAction(
            workflow_type,
            to_payloads(args, what=f"argument of workflow {workflow_type!r}:"),
            task_queue,
        )
        await self.store.create_schedule(
            ScheduleInfo(
                namespace=self.namespace,
                schedule_id=schedule_id,
                spec=spec,
                action=action,
                overlap=OverlapPolicy(overlap),
                catchup_window=catchup_window.total_seconds(),
                paused=paused,
                note=note,
            )
        )
        return ScheduleHandle(self, schedule_id)

    def get_schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        return ScheduleHandle(self, schedule_id)

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self.store.list_schedules(self.namespace)

    async def set_flow_limit(
        self,
        scope: str,
        name: str,
        *,
        max_concurrent: int | None = None,
        rate_per_second: float | None = None,
        rate_per_minute: float | None = None,
        burst: float | None = None,
    ) -> FlowLimit:
        """Limit, across every worker of the namespace, an activity type or task queue
        (``scope`` ``activity_type`` / ``task_queue``: concurrent attempts and starts per
        second), or the runs per concurrency key of a workflow type (``workflow_key``).

        Example: ``await client.set_flow_limit("activity_type", "call_model",
        max_concurrent=8, rate_per_second=5)`` keeps a model API under its quota.
        """
        if scope not in ("activity_type", "task_queue", "workflow_key"):
            raise ValueError(
                f"scope must be 'activity_type', 'task_queue' or 'workflow_key', not {scope!r}"
            )
        if rate_per_minute is not None:
            if rate_per_second is not None:
                raise ValueError("give rate_per_second or rate_per_minute, not both")
            if not (0 < rate_per_minute < math.inf):
                raise ValueError("rate_per_minute must be a positive number")
            rate_per_second = rate_per_minute / 60
        if max_concurrent is None and rate_per_second is None:
            raise ValueError("give max_concurrent, a rate or both")
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if rate_per_second is not None and (
            not (0 < rate_per_second < math.inf) or scope == "workflow_key"
        ):
            raise ValueError("rate_per_second must be positive (activity_type / task_queue only)")
        limit = FlowLimit(self.namespace, scope, name, max_concurrent, rate_per_second, burst)
        await self.store.set_flow_limit(limit)
        return limit

    async def delete_flow_limit(self, scope: str, name: str) -> None:
        await self.store.delete_flow_limit(self.namespace, scope, name)

    async def flow_limits(self) -> list[FlowLimit]:
        return await self.store.list_flow_limits(self.namespace)

    async def namespace_settings(self) -> NamespaceSettings:
        """This namespace's retention period and archive directory."""
        return await self.store.namespace_settings(self.namespace)

    async def set_retention(
        self, retention: timedelta, *, archive_dir: str | None = None
    ) -> NamespaceSettings:
        """Keep closed runs this long (then workers delete them, archiving them if asked)."""
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        settings = NamespaceSettings(self.namespace, retention.total_seconds(), archive_dir)
        await self.store.set_namespace_settings(settings)
        return settings

    async def register_search_attributes(self, *names: str) -> None:
        """Make names queryable before any run sets them (otherwise a query naming one fails
        as a likely typo). Names a run sets are registered by that run."""
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"search attribute name {name!r} must be an identifier")
            if name in FIELDS:
                raise ValueError(f"{name!r} is a built-in field, not a search attribute")
        await self.store.register_search_attributes(self.namespace, list(names))

    async def search_attribute_names(self) -> list[str]:
        """The namespace's search attribute names (set by runs or registered)."""
        return await self.store.search_attribute_names(self.namespace)

    async def complete_activity(self, task_token: str, result: Any = None) -> None:
        """Finish an activity that called ``activity.raise_complete_async()``.

        Raises:
            LeaseLostError: the attempt is over (timed out, retried, or already completed).
        """
        task_id, lease_id = _parse_token(task_token)
        value = to_payload(result, what="result of the activity")
        await self.store.complete_activity_by_token(task_id, lease_id, True, value)

    async def fail_activity(self, task_token: str, error: BaseException | str) -> None:
        """Fail an asynchronously completed activity; it is retried per its retry policy."""
        task_id, lease_id = _parse_token(task_token)
        exc = ApplicationError(error) if isinstance(error, str) else error
        await self.store.complete_activity_by_token(task_id, lease_id, False, failure_to_dict(exc))

    async def heartbeat_activity(self, task_token: str, details: Any = None) -> bool:
        """Heartbeat an asynchronously completed activity; False once it is cancelled or over."""
        task_id, lease_id = _parse_token(task_token)
        return await self.store.heartbeat_activity_by_token(
            task_id, lease_id, to_payload(details, what="heartbeat details")
        )

    def get_workflow_handle(
        self, workflow_id: str, *, run_id: str | None = None, result_type: Any = None
    ) -> WorkflowHandle:
        """A handle to an existing workflow (its current run unless ``run_id`` is given)."""
        return WorkflowHandle(
            self, workflow_id, run_id, result_type=result_type, pinned=run_id is not None
        )

    async def count_workflows(self, query: str | None = None) -> int:
        """How many runs of this namespace the visibility query matches."""
        return await self.store.count_workflows(
            self.namespace, parse_query(query) if query else None
        )

    async def list_workflows(
        self,
        query: str | None = None,
        *,
        workflow_type: str | None = None,
        status: RunStatus | str | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[WorkflowExecution]:
        """Runs of this namespace, newest first, filtered by a query and/or by field.

        Args:
            query: A visibility query, e.g. ``"WorkflowType = 'Agent' AND Status = 'Running'
                ORDER BY StartTime DESC"`` (see ``duro.visibility``).

        Raises:
            QuerySyntaxError: the query does not parse or names an unknown field.
        """
        return await self.store.list_workflows(
            self.namespace,
            workflow_type=workflow_type,
            status=RunStatus(status) if status else None,
            workflow_id=workflow_id,
            limit=limit,
            query=parse_query(query) if query else None,
        )


@dataclass
class WorkflowHandle:
    """A reference to a workflow: its latest run, or one run if ``pinned``.

    A handle from ``start_workflow`` knows the run it started (``run_id``) but sends signals,
    queries, updates and cancels to the workflow id's current run, so it keeps working after
    ``continue_as_new``. ``get_workflow_handle(id, run_id=...)`` pins one run.
    """

    client: Client
    id: str
    run_id: str | None = None
    result_type: Any = None
    workflow_type: str | None = None
    pinned: bool = False
    """Requests go to ``run_id`` only (they fail once it is closed)."""

    @property
    def _target_run(self) -> str | None:
        return self.run_id if self.pinned else None

    @property
    def _ns(self) -> str:
        return self.client.namespace

    async def describe(self) -> WorkflowExecution:
        """Status, times, result or failure, pending activities (with attempts and last
        failure) and pending timers of the run."""
        return await self.client.store.describe(self._ns, self.id, self._target_run)

    async def fetch_history(self) -> list[Event]:
        info = await self.describe()
        return await self.client.store.get_history(info.run_id)

    async def result(self, *, timeout: timedelta | float | None = None) -> Any:
        """Wait for the run to close and return its result, decoded by the run's return hint.

        Raises:
            WorkflowFailureError: the run failed, was canceled or terminated (``.cause``).
            TimeoutError: ``timeout`` passed first (the run goes on).
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        store = self.client.store
        topic = ("closed", self._ns, self.id)
        while True:
            since = {topic: store.version(topic)}
            info = await store.run_outcome(self._ns, self.id, self._target_run)
            if info.status == RunStatus.CONTINUED_AS_NEW:
                # Follow the chain: the result is the last run's.
                if self.pinned and isinstance(info.result, dict):
                    self.run_id = info.result.get("new_run_id", self.run_id)
                continue
            if info.status.closed:
                return self._outcome(info)
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - asyncio.get_running_loop().time())
                if wait <= 0:
                    raise TimeoutError(f"workflow {self.id!r} did not finish in {seconds} s")
            await store.wait_for([topic], since, wait)

    def _outcome(self, info: RunOutcome) -> Any:
        if info.status == RunStatus.COMPLETED:
            return from_payload(
                info.result,
                self.result_type if self.result_type is not None else Any,
                what=f"result of workflow {self.id!r}",
            )
        cause = failure_from_dict(
            info.failure or {"message": info.status.value, "type": info.status.value}
        )
        raise WorkflowFailureError(info.workflow_id, info.run_id, info.status.value, cause)

    async def signal(
        self, signal: Callable[..., Any] | str, *args: Any, request_id: str | None = None
    ) -> None:
        """Send a signal; it is recorded in history and delivered to the handler in order.

        Raises:
            UnknownHandlerError: the workflow type defines no such signal.
            WorkflowClosedError: the run is closed.
        """
        name = handler_name(signal, "signal")
        await self._check_handler("signal", name)
        payloads = to_payloads(args, what=f"argument of signal {name!r}:")
        await self.client.store.signal_workflow(
            self._ns, self.id, self._target_run, name, payloads, request_id
        )

    async def query(
        self,
        query: Callable[..., Any] | str,
        *args: Any,
        result_type: Any = None,
        timeout: float = 10.0,
    ) -> Any:
        """Ask a running or closed run a question; answered by a worker, history untouched.

        Raises:
            UnknownHandlerError: the workflow type defines no such query.
            QueryError: the handler raised, or no worker answered within ``timeout`` seconds.
        """
        name = handler_name(query, "query")
        await self._check_handler("query", name)
        if result_type is None and not isinstance(query, str):
            from duro.converter import signature_of

            result_type = signature_of(query, True).return_hint
        store = self.client.store
        payloads = to_payloads(args, what=f"argument of query {name!r}:")
        query_id = await store.submit_query(self._ns, self.id, self._target_run, name, payloads)
        topic = ("query_done", query_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            since = {topic: store.version(topic)}
            outcome = await store.take_query_outcome(query_id)
            if outcome.done:
                if outcome.error is not None:
                    raise QueryError(
                        f"query {name!r} on workflow {self.id!r} failed: {outcome.error}"
                    )
                return from_payload(
                    outcome.result, result_type or Any, what=f"result of query {name!r}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise QueryError(
                    f"query {name!r} on workflow {self.id!r}: no worker answered in {timeout} s "
                    "(is a worker running for its task queue?)"
                )
            await store.wait_for([topic], since, min(remaining, 0.5))

    async def execute_update(
        self,
        update: Callable[..., Any] | str,
        *args: Any,
        update_id: str | None = None,
        result_type: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Send an update and wait for its handler's result.

        A worker first runs the update's validator against the run's state: if it rejects
        the update, this raises and history is untouched. Accepted, the update is recorded and
        its handler runs in the workflow (it may await activities); its return value comes back.

        Args:
            update_id: Makes a retried call idempotent: the same id is one update.
            timeout: Seconds to wait (default: until the handler returns).

        Raises:
            UnknownHandlerError: the workflow type defines no such update.
            UpdateFailedError: the validator rejected it, or the handler raised.
            TimeoutError: ``timeout`` passed (the update may still complete).
        """
        name = handler_name(update, "update")
        await self._check_handler("update", name)
        if result_type is None and not isinstance(update, str):
            from duro.converter import signature_of

            result_type = signature_of(update, True).return_hint
        store = self.client.store
        payloads = to_payloads(args, what=f"argument of update {name!r}:")
        query_id = await store.submit_update(
            self._ns, self.id, self._target_run, name, payloads, update_id or uuid.uuid4().hex
        )
        return await self._await_update(query_id, name, result_type, timeout)

    async def _await_update(
        self, query_id: int, name: str, result_type: Any, timeout: float | None
    ) -> Any:
        store = self.client.store
        topic = ("query_done", query_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            since = {topic: store.version(topic)}
            outcome = await store.take_query_outcome(query_id)
            if outcome.done:
                if outcome.error is not None:
                    raise UpdateFailedError(name, self.id, outcome.error)
                return from_payload(
                    outcome.result, result_type or Any, what=f"result of update {name!r}"
                )
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError(f"update {name!r} on workflow {self.id!r}: no result yet")
            await store.wait_for([topic], since, wait)

    async def reset(
        self,
        to: int | str = "last_workflow_task",
        *,
        reason: str = "",
        reapply_signals: bool = True,
    ) -> WorkflowHandle:
        """Re-run the workflow from a workflow task of this run, with the current code.

        A new run of the same workflow id starts from the history up to ``to`` (an event id —
        the latest workflow task at or before it — or ``"first_workflow_task"`` /
        ``"last_workflow_task"``); that task runs again, so activities after it run again
        (e.g. after fixing a prompt). Signals received after the point are delivered again
        unless ``reapply_signals=False``. A running old run is terminated. Both the new run's
        history (``WorkflowExecutionReset``) and the old run's termination record the link.

        Raises:
            ResetFailedError: the point is unusable (no workflow task there, children running).
        """
        new_run = await self.client.store.reset_workflow(
            self._ns, self.id, self._target_run, to, reason, reapply_signals, None
        )
        return WorkflowHandle(
            self.client,
            self.id,
            new_run,
            result_type=self.result_type,
            workflow_type=self.workflow_type,
        )

    async def fork(
        self,
        new_id: str,
        to: int | str = "last_workflow_task",
        *,
        reason: str = "",
        reapply_signals: bool = True,
    ) -> WorkflowHandle:
        """Like ``reset``, into a new workflow id; this run is left as it is."""
        new_run = await self.client.store.reset_workflow(
            self._ns, self.id, self._target_run, to, reason, reapply_signals, new_id
        )
        return WorkflowHandle(
            self.client,
            new_id,
            new_run,
            result_type=self.result_type,
            workflow_type=self.workflow_type,
        )

    async def cancel(self, reason: str = "") -> None:
        """Request cancellation: the code sees ``asyncio.CancelledError`` at its await points."""
        await self.client.store.request_cancel(self._ns, self.id, self._target_run, reason)

    async def terminate(self, reason: str = "") -> None:
        """Close the run at once, without running any more of its code."""
        await self.client.store.terminate(self._ns, self.id, self._target_run, reason)

    async def _check_handler(self, kind: str, name: str) -> None:
        """Refuse a handler name no worker registered for the type (a typo fails here, not
        silently in the workflow); a name found once is not read again."""
        wtype = self.workflow_type
        if wtype is None:
            info = await self.describe()
            wtype = self.workflow_type = info.workflow_type
        seen = (self._ns, wtype, kind, name)
        if seen in self.client._handlers_seen:
            return
        handlers = await self.client.store.workflow_type_handlers(self._ns, wtype)
        if handlers is None:
            return  # no worker registered the type yet: nothing to check against
        names = handlers.get(
            {"signal": "signals", "query": "queries", "update": "updates"}[kind], []
        )
        if name not in names:
            raise UnknownHandlerError(kind, name, wtype, names)
        self.client._handlers_seen.add(seen)


def _parse_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        task_id, lease_id = json.loads(raw)
        return int(task_id), str(lease_id)
    except (ValueError, TypeError, binascii.Error) as e:
        raise ValueError(f"not an activity task token: {token!r}") from e


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
