"""The worker: polls a task queue and runs workflow tasks, activities, timers and queries.

One process may run several workers; several processes (or machines, on PostgreSQL) may serve
one queue. Each worker:

- polls workflow tasks and advances runs, keeping running instances in an LRU cache so a cache
  hit applies only new events (a miss replays the history);
- polls activity tasks and runs them (async ones on the loop, sync ones in a thread pool), each
  attempt fenced by its lease so a stale result is rejected;
- fires due timers, answers queries;
- heartbeats its liveness, and releases the leases of workers whose heartbeat went stale, so a
  killed worker's runs and activities move to another within seconds.

Hand-offs skip polls: a start by this worker's client leases the run's first task here (eager
start); completing a workflow task claims the activities it scheduled on this queue; and an
activity's result, for a run this worker has cached, is recorded in one transaction with the
workflow task it wakes, which the worker ran on it in memory first (``_advance_on_result``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from duro import activity as activity_api
from duro import retention
from duro.commands import Command, FailWorkflow, ScheduleActivity
from duro.converter import dumps, failure_to_dict, loads, to_payload
from duro.definitions import (
    ActivityDefinition,
    WorkflowDefinition,
    activity_definition,
    workflow_definition,
)
from duro.engine import activity as activity_rules
from duro.engine import start as start_rules
from duro.engine.start import StartRequest
from duro.errors import (
    ApplicationError,
    LeaseLostError,
    NonDeterminismError,
    PayloadError,
    StoreError,
    UnknownWorkflowTypeError,
)
from duro.errors import (
    TimeoutError as ActivityTimeoutError,
)
from duro.history import Event, EventType
from duro.runtime.instance import WorkflowInstance
from duro.runtime.replay import advance, new_instance, replay
from duro.store.protocol import (
    ActivityTaskLease,
    CompletionResult,
    FirstTask,
    QueryTask,
    StartResult,
    Store,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)
from duro.store.tx import new_run_id

if TYPE_CHECKING:
    from duro.client import Client

__all__ = ["Worker", "WorkerStatistics"]

logger = logging.getLogger("duro.worker")


_DUE_RETRY = 0.005
"""Seconds the timer loop waits before looking again at work due that it could not fire."""
_WT_POLL_BATCH = 16
"""Workflow tasks one poll asks for at most."""
_OUTCOME_ATTEMPTS = 3
"""Tries to record an activity's outcome before leaving it to the lease's expiry."""


@dataclass(frozen=True)
class WorkerStatistics:
    """A snapshot of a worker's load, from ``Worker.statistics()``."""

    workflow_tasks_in_flight: int
    activities_in_flight: int
    cached_runs: int
    workflow_tasks_completed: int
    workflow_tasks_failed: int
    activities_completed: int
    activities_failed: int
    cache_hits: int
    cache_misses: int
    fused_steps: int = 0
    """Activity results recorded in one transaction with the workflow task they woke."""
    eager_starts: int = 0
    """Runs whose first workflow task their start handed straight to this worker."""
    fused_starts: int = 0
    """Eager starts whose first workflow task ran before the start and was recorded with it
    (on stores where that saves a transaction: ``Store.fuses_first_task``)."""


class _RunCache:
    """LRU of running workflow instances, keyed by run id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._runs: collections.OrderedDict[str, WorkflowInstance] = collections.OrderedDict()

    def get(self, run_id: str) -> WorkflowInstance | None:
        inst = self._runs.get(run_id)
        if inst is not None:
            self._runs.move_to_end(run_id)
        return inst

    def put(self, run_id: str, inst: WorkflowInstance) -> None:
        self._runs[run_id] = inst
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.capacity:
            self._runs.popitem(last=False)

    def evict(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def pop(self, run_id: str) -> WorkflowInstance | None:
        return self._runs.pop(run_id, None)

    def upto(self, run_id: str) -> int:
        inst = self._runs.get(run_id)
        return inst.last_event_id if inst is not None else 0

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)


class Worker:
    """Runs registered workflows and activities from one task queue.

    Example::

        async with await Client.connect("sqlite:///duro.db") as client:
            worker = Worker(client, task_queue="agents", workflows=[Agent], activities=[call_model])
            await worker.run()  # until SIGTERM / shutdown()
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = "default",
        workflows: Sequence[Any] = (),
        activities: Sequence[Callable[..., Any]] = (),
        max_concurrent_workflow_tasks: int = 64,
        max_concurrent_activities: int = 256,
        max_cached_workflows: int = 10_000,
        uncache_sleeping_after: timedelta | None = timedelta(minutes=1),
        activity_executor: concurrent.futures.Executor | None = None,
        identity: str | None = None,
        build_id: str = "",
        liveness_timeout: timedelta = timedelta(seconds=5),
        heartbeat_interval: timedelta = timedelta(seconds=1),
        graceful_shutdown_timeout: timedelta = timedelta(seconds=10),
        max_poll_wait: timedelta = timedelta(seconds=1),
        determinism_guards: bool = True,
        deadlock_timeout: timedelta | None = timedelta(seconds=2),
        retention_sweep_interval: timedelta | None = timedelta(minutes=1),
        eager_start: bool = True,
    ) -> None:
        """Configure a worker; nothing runs until ``run()``.

        Args:
            max_concurrent_workflow_tasks: Workflow tasks processed at once. Default 64.
            max_concurrent_activities: Activity attempts running at once. Default 256.
            max_cached_workflows: Running instances kept in memory (LRU). Default 10,000.
            uncache_sleeping_after: A run left waiting only on durable timers at least this
                far away is not kept in memory (it is replayed when a timer fires), so runs that
                sleep for hours cost no worker memory. Default 1 minute; None keeps them.
            activity_executor: Thread pool for sync activities; default one sized to
                ``max_concurrent_activities``.
            liveness_timeout: After this long without a heartbeat from a worker, any worker
                releases its leases. Default 5 s.
            heartbeat_interval: How often this worker proves it is alive. Default 1 s.
            graceful_shutdown_timeout: How long ``shutdown()`` lets running activities finish
                before cancelling them (their leases are then released at once). Default 10 s.
            max_poll_wait: Longest idle wait between polls when no wake-up arrives. Default 1 s.
            determinism_guards: Catch clocks, randomness and I/O in workflow code on the first
                run (docs/determinism.md). Default on.
            deadlock_timeout: Fail a workflow task whose code runs this long without yielding.
                Default 2 s; None turns detection off (e.g. while stepping in a debugger).
            eager_start: Runs that this worker's client starts on its queue hand their first
                workflow task to this worker in the start's own transaction, when it has a free
                slot (no poll in between). Default on; off leaves every start to the pollers.
            retention_sweep_interval: How often this worker deletes (and archives) its
                namespace's closed runs past their retention (``duro.retention``). Default
                1 minute; None: this worker never sweeps.
        """
        self.client = client
        self.store: Store = client.store
        self.namespace = client.namespace
        self.task_queue = task_queue
        self.worker_id = uuid.uuid4().hex
        self.identity = identity or f"{os.getpid()}@{socket.gethostname()}"
        self.build_id = build_id
        self._workflows: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            wdefn = workflow_definition(wf)
            if wdefn is None:
                raise TypeError(f"{wf!r} is not a workflow: decorate it with @workflow.defn")
            self._workflows[wdefn.name] = wdefn
        self._activities: dict[str, ActivityDefinition] = {}
        for act in activities:
            adefn = activity_definition(act)
            if adefn is None:
                raise TypeError(f"{act!r} is not an activity: decorate it with @activity.defn")
            self._activities[adefn.name] = adefn
        if not self._workflows and not self._activities:
            raise ValueError("a worker needs at least one workflow or activity")
        if max_concurrent_workflow_tasks < 1 or max_concurrent_activities < 1:
            raise ValueError("worker concurrency limits must be at least 1")
        self._max_wt = max_concurrent_workflow_tasks
        self._max_act = max_concurrent_activities
        self._cache = _RunCache(max_cached_workflows)
        self._uncache_sleeping_after = (
            None if uncache_sleeping_after is None else uncache_sleeping_after.total_seconds()
        )
        self._executor = activity_executor
        self._own_executor = activity_executor is None
        self._liveness_timeout = liveness_timeout.total_seconds()
        self._heartbeat_interval = heartbeat_interval.total_seconds()
        self._graceful_timeout = graceful_shutdown_timeout.total_seconds()
        self._max_poll_wait = max_poll_wait.total_seconds()
        self._guards = determinism_guards
        self._sweep_interval = (
            retention_sweep_interval.total_seconds() if retention_sweep_interval else None
        )
        self._deadlock_timeout = deadlock_timeout.total_seconds() if deadlock_timeout else None
        self._wt_in_flight = 0
        self._act_in_flight = 0
        self._act_reserved = 0
        self._wt_slot_freed = asyncio.Event()
        self._act_slot_freed = asyncio.Event()
        self._activity_tasks: dict[int, asyncio.Task[None]] = {}
        self._wt_tasks: set[asyncio.Task[None]] = set()
        self._run_locks: dict[str, list[Any]] = {}  # run id -> [lock, users]
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._running = False
        self._eager_start = eager_start
        self._eager_reserved = 0
        self._stats = collections.Counter[str]()
        self._wt_topic = ("workflow", self.namespace, task_queue)
        self._act_topic = ("activity", self.namespace, task_queue)
        self._query_topic = ("query", self.namespace, task_queue)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``shutdown()`` (or cancellation); then stop gracefully."""
        if self._running:
            raise RuntimeError("worker is already running")
        self._running = True
        if self._own_executor and self._activities:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_act, thread_name_prefix="duro-activity"
            )
        await self._register()
        logger.info(
            "worker %s on queue %r: %d workflow(s), %d activity(ies)",
            self.identity,
            self.task_queue,
            len(self._workflows),
            len(self._activities),
        )
        if not self._workflows:
            self._ready.set()
        if self._eager_start and self._workflows:
            self.client._local_workers.append(self)
        loops = [self._liveness_loop(), self._timer_loop()]
        if self._sweep_interval is not None:
            loops.append(self._retention_loop(self._sweep_interval))
        if self._workflows:
            loops += [self._workflow_poller(), self._query_poller()]
        if self._activities:
            loops.append(self._activity_poller())
        tasks = [asyncio.create_task(c) for c in loops]
        try:
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            self._stopping.set()
            with contextlib.suppress(ValueError):
                self.client._local_workers.remove(self)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._drain()
            self._running = False
            self._stopped.set()

    async def _register(self) -> None:
        await self.store.register_worker(
            self.worker_id,
            self.namespace,
            self.task_queue,
            self.identity,
            {name: d.handler_names() for name, d in self._workflows.items()},
        )

    async def _drain(self) -> None:
        """Finish in-flight work, cancel what outlives the grace period, release leases."""
        # Work finishing now may still spawn more (a task handed over in the same transaction
        # that recorded an outcome), so wait until nothing is left or the grace period ends.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._graceful_timeout
        while self._wt_tasks or self._activity_tasks or self._eager_reserved:
            left = deadline - loop.time()
            if left <= 0:
                break
            running = [*self._wt_tasks, *self._activity_tasks.values()]
            if self._eager_reserved:  # a start's store call is in flight: look again shortly
                left = min(left, 0.01)
            if running:
                await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(left)
        pending = [*self._activity_tasks.values()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        with contextlib.suppress(StoreError):
            await self.store.unregister_worker(self.worker_id)
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def request_shutdown(self) -> None:
        """Ask ``run()`` to stop (safe from a signal handler); returns at once."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Stop polling, let in-flight work finish (up to the grace period), and return."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    async def __aenter__(self) -> Worker:
        """Start ``run()`` in the background; return once the worker is registered and its
        first poll is done (or raise what stopped it from starting)."""
        self._background = asyncio.create_task(self.run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([ready, self._background], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._background.done() and not self._ready.is_set():
            self._background.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self._background

    def statistics(self) -> WorkerStatistics:
        s = self._stats
        return WorkerStatistics(
            workflow_tasks_in_flight=self._wt_in_flight,
            activities_in_flight=self._act_in_flight,
            cached_runs=len(self._cache),
            workflow_tasks_completed=s["wt_completed"],
            workflow_tasks_failed=s["wt_failed"],
            activities_completed=s["act_completed"],
            activities_failed=s["act_failed"],
            cache_hits=s["cache_hit"],
            cache_misses=s["cache_miss"],
            fused_steps=s["fused"],
            eager_starts=s["eager_start"],
            fused_starts=s["fused_start"],
        )

    # -- background loops ------------------------------------------------------------------------

    async def _idle(self, topics: Iterable[Any], since: dict[Any, int], timeout: float) -> None:
        await self.store.wait_for(topics, since, timeout)

    async def _liveness_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if not await self.store.heartbeat_worker(self.worker_id):
                    # Taken for dead (a stall longer than the liveness timeout): its leases were
                    # released and its late results will be rejected; be visible again.
                    logger.warning(
                        "worker %s was reaped while alive; registering again", self.identity
                    )
                    await self._register()
                reaped = await self.store.reap(self._liveness_timeout)
                if reaped.dead_workers:
                    logger.warning(
                        "released %d workflow task(s) and %d activity(ies) of %d stopped worker(s)",
                        reaped.released_workflow_tasks,
                        reaped.released_activities,
                        len(reaped.dead_workers),
                    )
            except StoreError as e:
                logger.warning("liveness heartbeat failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._heartbeat_interval)

    async def _retention_loop(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                deleted = await retention.sweep(self.store, self.namespace)
                if deleted:
                    logger.info("retention: deleted %d closed run(s)", deleted)
            except (StoreError, OSError) as e:
                logger.warning("retention sweep failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _timer_loop(self) -> None:
        store = self.store
        while not self._stopping.is_set():
            since = {"timer": store.version("timer")}
            try:
                fired = await store.fire_due_timers()
                if fired:
                    continue
                nxt = await store.next_timer_time()
            except StoreError as e:
                logger.warning("timer loop: %s", e)
                nxt = None
            wait = self._max_poll_wait
            if nxt is not None:
                # Due but not fired (its run held by another transaction, say): look again
                # shortly rather than at once, or the loop would spin.
                delay = nxt - store.now()
                wait = min(wait, delay if delay > 0 else _DUE_RETRY)
            await self._idle(["timer"], since, wait)

    async def _workflow_poller(self) -> None:
        store = self.store
        topic = self._wt_topic
        while not self._stopping.is_set():
            free = self._max_wt - self._wt_in_flight
            if free <= 0:
                self._wt_slot_freed.clear()
                await self._wt_slot_freed.wait()  # set by _wt_done
                continue
            since = {topic: store.version(topic)}
            # The slots asked for are held while the poll is in flight, so an eager start
            # cannot take one that the poll then fills too; asking for a few at a time leaves
            # the rest to eager starts meanwhile.
            want = min(free, _WT_POLL_BATCH)
            self._wt_in_flight += want
            try:
                leases = await store.poll_workflow_tasks(
                    self.namespace,
                    self.task_queue,
                    self.worker_id,
                    want,
                    self._cache.upto,
                    self.build_id,
                )
            except StoreError as e:
                logger.warning("workflow task poll failed: %s", e)
                leases = []
            finally:
                self._wt_in_flight -= want
                self._ready.set()  # the first poll is done: `async with Worker` returns
            for lease in leases:
                self._spawn_workflow_task(lease)
            if not leases:
                await self._idle([topic], since, self._max_poll_wait)

    def _reserve_eager_start(self, workflow_type: str) -> bool:
        """Hold a workflow-task slot for the first task of a run this worker's client is
        starting; ``_take_eager_start`` fills or frees it once the start returns. Held from now,
        so concurrent starts and the poller cannot overfill the worker, and a drain waits."""
        if (
            not self._running
            or self._stopping.is_set()
            or workflow_type not in self._workflows
            or self._wt_in_flight >= self._max_wt
        ):
            return False
        self._wt_in_flight += 1
        self._eager_reserved += 1
        return True

    async def _start_eagerly(self, req: StartRequest) -> StartResult:
        """Start a run whose first task this worker holds a slot for (``_reserve_eager_start``);
        the slot is filled or freed before this returns, whatever the start did.

        Where the store fuses (``Store.fuses_first_task``), the task runs first, on the first
        event the start is about to write, and the store records both in one transaction, as
        ``_advance_on_result`` does for a result. Otherwise, or if the code raised, the start
        leases the task here and it runs as usual.
        """
        ahead = self._run_first_task(req) if self.store.fuses_first_task else None
        if ahead is None:
            try:
                result = await self.store.start_workflow(req)
            except BaseException:
                self._take_eager_start(None)
                raise
            self._take_eager_start(result.workflow_lease)
            return result
        inst, first = ahead
        lease = None
        try:
            async with self._run_lock(first.run_id):
                reserved = first.completion.eager_activities
                try:
                    result = await self.store.start_workflow(req, first)
                finally:
                    if reserved:
                        self._release_slots(reserved)
                if result.completion is not None:
                    self._stats["eager_start"] += 1
                    self._stats["fused_start"] += 1
                    self._task_completed(first.run_id, inst, result.completion)
                lease = result.workflow_lease  # started, but the task could not go with it
        finally:
            self._take_eager_start(lease)
        return result

    def _run_first_task(self, req: StartRequest) -> tuple[WorkflowInstance, FirstTask] | None:
        """Run a new run's first task ahead of its start: the instance and what to record.
        None if the code raised: the usual path runs the task again and records the failure."""
        defn = self._workflows[req.workflow_type]
        run_id = new_run_id()
        now = self.store.now()
        started = start_rules.start_workflow(req, run_id, now).append[0]
        # The code gets a decoded copy of its arguments, as from the store: what it does to
        # them must not change what the start records.
        encoded = dumps(started.attrs)
        event = Event(1, started.type, now, loads(encoded))
        self._stats["cache_miss"] += 1
        inst = new_instance(
            defn, event, determinism_guards=self._guards, deadlock_timeout=self._deadlock_timeout
        )
        try:
            commands = advance(inst, [event], now, task_history=(1, len(encoded)))
        except (Exception, SystemExit, KeyboardInterrupt):
            return None
        return inst, FirstTask(run_id, now, self._completion(inst, commands, now, len(encoded)))

    def _take_eager_start(self, lease: WorkflowTaskLease | None) -> None:
        """The start returned (or failed): run the task it leased here, or free the slot."""
        self._eager_reserved -= 1
        if lease is None:
            self._wt_in_flight -= 1
            self._wt_slot_freed.set()
            return
        self._stats["eager_start"] += 1
        self._spawn_workflow_task(lease, reserved=True)

    def _spawn_workflow_task(self, lease: WorkflowTaskLease, *, reserved: bool = False) -> None:
        if not reserved:
            self._wt_in_flight += 1
        task = asyncio.create_task(self._workflow_task(lease))
        self._wt_tasks.add(task)
        task.add_done_callback(self._wt_done)

    def _wt_done(self, task: asyncio.Task[None]) -> None:
        self._wt_in_flight -= 1
        self._wt_slot_freed.set()
        self._wt_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("workflow task crashed", exc_info=task.exception())

    async def _activity_poller(self) -> None:
        store = self.store
        topic = self._act_topic
        while not self._stopping.is_set():
            free = self._max_act - self._act_in_flight - self._act_reserved
            if free <= 0:
                self._act_slot_freed.clear()
                await self._act_slot_freed.wait()  # set when an activity or reservation ends
                continue
            since = {topic: store.version(topic)}
            want = min(free, 64)
            self._act_reserved += want  # held while the poll is in flight
            try:
                leases = await store.poll_activity_tasks(
                    self.namespace, self.task_queue, self.worker_id, want
                )
            except StoreError as e:
                logger.warning("activity poll failed: %s", e)
                leases = []
            finally:
                self._release_slots(want)
            for lease in leases:
                self._spawn_activity(lease)
            if not leases:
                await self._idle([topic], since, self._max_poll_wait)

    async def _query_poller(self) -> None:
        store = self.store
        topic = self._query_topic
        while not self._stopping.is_set():
            since = {topic: store.version(topic)}
            try:
                queries = await store.poll_queries(
                    self.namespace, self.task_queue, self.worker_id, 16
                )
            except StoreError as e:
                logger.warning("query poll failed: %s", e)
                queries = []
            for q in queries:
                await self._answer_query(q)
            if not queries:
                await self._idle([topic], since, self._max_poll_wait)

    # -- workflow tasks --------------------------------------------------------------------------

    async def _workflow_task(self, lease: WorkflowTaskLease) -> None:
        async with self._run_lock(lease.run_id):
            await self._process_workflow_task(lease)

    @contextlib.asynccontextmanager
    async def _run_lock(self, run_id: str) -> AsyncIterator[None]:
        """Tasks of one run (a task, an eager hand-off, a result) never advance it at once."""
        entry = self._run_locks.get(run_id)
        if entry is None:
            entry = self._run_locks[run_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._run_locks[run_id]

    async def _process_workflow_task(self, lease: WorkflowTaskLease) -> None:
        """Advance one run by one task.

        Invariant: the instance is out of the cache while the task is processed and goes back
        only once the store accepted its commands, so no failure path (a store error, a bug,
        a cancellation) can leave a cached instance that ran ahead of history.
        """
        run_id = lease.run_id
        inst = self._cache.pop(run_id)
        events = lease.history
        if inst is not None and (
            lease.history_after != inst.last_event_id
            or not events
            or any(e.type == EventType.WORKFLOW_TASK_COMPLETED for e in events)
        ):
            # Another worker advanced the run since we cached it (or nothing is new, which a
            # cached run never sees): replay from the start.
            inst = None
        if inst is None:
            self._stats["cache_miss"] += 1
        else:
            self._stats["cache_hit"] += 1
        reserved = 0
        try:
            if inst is None:
                if lease.history_after != 0:
                    events = await self.store.get_history(run_id)
                defn = self._workflows.get(lease.workflow_type)
                if defn is None:
                    err = UnknownWorkflowTypeError(lease.workflow_type, list(self._workflows))
                    await self._fail_workflow_task(lease, err)
                    return
                inst = new_instance(
                    defn,
                    events[0],
                    determinism_guards=self._guards,
                    deadlock_timeout=self._deadlock_timeout,
                )
            try:
                commands = advance(
                    inst,
                    events,
                    lease.started_time,
                    task_history=(lease.next_event_id - 1, lease.history_size),
                )
            except NonDeterminismError as e:
                if not inst.defn.fail_run_on_nondeterminism:
                    await self._fail_workflow_task(lease, e)
                    return
                logger.error("run %s failed: %s", run_id, e)
                commands = [FailWorkflow(failure_to_dict(e))]  # on_nondeterminism="fail_run"
            except (Exception, SystemExit, KeyboardInterrupt) as e:
                await self._fail_workflow_task(lease, e)
                return
            completion = self._completion(inst, commands, lease.started_time, lease.history_size)
            reserved = completion.eager_activities
            try:
                result = await self.store.complete_workflow_task(lease, completion)
            except LeaseLostError:
                logger.info("workflow task of run %s was taken over; result dropped", run_id)
                return
            except Exception as e:
                # Not recorded (the store rolled back); hand the task back now rather than
                # at lease expiry. The instance stays out of the cache: it ran ahead.
                logger.warning("completing workflow task of run %s failed: %s", run_id, e)
                await self._fail_workflow_task(lease, e)
                return
        finally:
            if reserved:
                self._release_slots(reserved)
        self._task_completed(run_id, inst, result)

    def _completion(
        self,
        inst: WorkflowInstance,
        commands: Sequence[Command],
        workflow_time: float,
        history_size: int,
    ) -> WorkflowTaskCompletion:
        """A task's completion, offering (and reserving) slots for the activities it schedules;
        the caller releases ``eager_activities`` slots once the store answered."""
        reserved = self._reserve_eager_slots(commands)
        return WorkflowTaskCompletion(
            commands=commands,
            workflow_time=workflow_time,
            identity=self.identity,
            build_id=self.build_id,
            eager_activity_queue=self.task_queue if reserved > 0 else None,
            eager_activities=reserved,
            worker_id=self.worker_id,
            pin=inst.defn.pinned,
            history_size=history_size,
        )

    def _reserve_eager_slots(self, commands: Sequence[Command]) -> int:
        """Reserve the activity slots offered for eager hand-off with a task's completion.

        Reserved so that concurrent tasks cannot claim more activities than
        max_concurrent_activities between them; only as many as this task schedules here, so
        a burst of concurrent tasks does not have the first take every slot and leave the
        others' activities to a poll.
        """
        if self._stopping.is_set():
            return 0  # shutting down: take no new activities
        wanted = sum(
            1
            for c in commands
            if isinstance(c, ScheduleActivity)
            and c.task_queue == self.task_queue
            and c.activity_type in self._activities
        )
        free = max(0, self._max_act - self._act_in_flight - self._act_reserved)
        reserved = min(free, wanted)
        self._act_reserved += reserved
        return reserved

    def _task_completed(
        self, run_id: str, inst: WorkflowInstance, result: CompletionResult, *, keep: bool = False
    ) -> ActivityTaskLease | None:
        """The store took a task's commands: cache the instance, run the activities it got.
        ``keep``: return the first of them for the caller's task to run next, spawn the rest."""
        if not result.accepted:
            return None
        self._stats["wt_completed"] += 1
        inst.last_event_id = result.last_event_id
        inst.stored_history_size = result.history_size
        sleeping = self._uncache_sleeping_after is not None and inst.only_sleeping(
            self._uncache_sleeping_after
        )
        if not inst.closed and not sleeping:
            self._cache.put(run_id, inst)
        leases = result.activity_leases
        kept = leases[0] if keep and leases else None
        for activity_lease in leases[1:] if kept is not None else leases:
            self._spawn_activity(activity_lease)
        return kept

    async def _fail_workflow_task(self, lease: WorkflowTaskLease, error: BaseException) -> None:
        self._stats["wt_failed"] += 1
        logger.error(
            "workflow task of %s %s (run %s) failed (attempt %d): %s",
            lease.workflow_type,
            lease.workflow_id,
            lease.run_id,
            lease.attempt,
            error,
            exc_info=error if lease.attempt == 1 else None,
        )
        try:
            await self.store.fail_workflow_task(lease, failure_to_dict(error))
        except StoreError as e:  # LeaseLostError included: someone else has the task now
            logger.warning("recording the failure of run %s's task failed: %s", lease.run_id, e)

    async def _answer_query(self, q: QueryTask) -> None:
        """Answer a query, or validate an update (accepting it into history or rejecting it)."""
        result: Any = None
        error: str | None = None
        try:
            inst = self._cache.get(q.run_id)
            if inst is None:
                defn = self._workflows.get(q.workflow_type)
                if defn is None:
                    raise UnknownWorkflowTypeError(q.workflow_type, list(self._workflows))
                inst = replay(defn, await self.store.get_history(q.run_id))
            if q.kind == "update":
                inst.validate_update(q.name, q.args)
            else:
                result = inst.query(q.name, q.args)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        try:
            if q.kind == "update" and error is None:
                await self.store.accept_update(q.query_id, q.lease_id)
            else:
                await self.store.answer_query(q.query_id, q.lease_id, result, error)
        except StoreError as e:
            logger.warning("answering %s %r failed: %s", q.kind, q.name, e)

    # -- activities ------------------------------------------------------------------------------

    def _spawn_activity(self, lease: ActivityTaskLease) -> None:
        self._act_in_flight += 1
        running = [lease.task_id]  # the attempt the task runs now (it may run a chain of them)
        task = asyncio.create_task(self._activities_from(lease, running))
        self._activity_tasks[lease.task_id] = task
        task.add_done_callback(lambda t: self._activity_done(running[0], t))

    async def _activities_from(self, lease: ActivityTaskLease, running: list[int]) -> None:
        """Run an attempt, then the activity its result's step leased here, and so on: a
        sequence of steps runs in one task (and one slot), not a new task per attempt."""
        task = self._activity_tasks[lease.task_id]
        following: ActivityTaskLease | None = lease
        while following is not None:
            current = following
            following = await self._activity(current)
            if following is not None:
                del self._activity_tasks[current.task_id]
                self._activity_tasks[following.task_id] = task
                running[0] = following.task_id

    def _release_slots(self, reserved: int) -> None:
        self._act_reserved -= reserved
        self._act_slot_freed.set()

    def _activity_done(self, task_id: int, task: asyncio.Task[None]) -> None:
        self._act_in_flight -= 1
        self._act_slot_freed.set()
        self._activity_tasks.pop(task_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("activity runner crashed", exc_info=task.exception())

    async def _activity(self, lease: ActivityTaskLease) -> ActivityTaskLease | None:
        """Run one attempt and record its outcome; the next attempt to run in this task (an
        activity that the step woken by this result leased to this worker), if any."""
        store = self.store
        adefn = self._activities.get(lease.activity_type)
        outcome_ok = False
        value: Any
        cancelled = False
        heartbeats = _Heartbeats(self, lease)
        try:
            if adefn is None:
                raise ApplicationError(
                    f"activity type {lease.activity_type!r} is not registered on worker "
                    f"{self.identity} (queue {lease.task_queue!r}); registered: "
                    f"{', '.join(sorted(self._activities)) or 'none'}",
                    type="ActivityNotRegistered",
                )
            try:
                args = adefn.signature.decode_args(lease.args)
            except PayloadError as e:
                raise ApplicationError(str(e), type="PayloadDecodeError", non_retryable=True) from e
            actx = activity_api._ActivityContext(
                lambda: _activity_info(lease), heartbeats.record, heartbeats.is_cancelled
            )
            result = await self._invoke(adefn, args, actx, lease, heartbeats)
            try:
                value = to_payload(result, what=f"result of activity {adefn.name!r}")
            except PayloadError as e:
                raise ApplicationError(str(e), type="PayloadEncodeError", non_retryable=True) from e
            outcome_ok = True
        except activity_api.CompleteAsync:
            heartbeats.stop()
            try:
                await store.detach_activity_task(lease.task_id, lease.lease_id)
            except StoreError as e:
                logger.warning("detaching asynchronously completed activity failed: %s", e)
            self._stats["act_async"] += 1
            return None
        except asyncio.CancelledError:
            if self._stopping.is_set() and not heartbeats.cancelled:
                raise  # shutdown: the lease is released and the attempt retried elsewhere
            cancelled = True
            value = failure_to_dict(ApplicationError("activity cancelled", type="CancelledError"))
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            # SystemExit from an activity (an argparse error, a sys.exit) fails the attempt;
            # it must not stop the worker and, retried elsewhere, every other worker too.
            value = failure_to_dict(e)
        finally:
            heartbeats.stop()
        if cancelled and heartbeats.cancelled:
            return None  # the task is gone (workflow cancelled it or the lease moved)
        cached = lease.run_id in self._cache and not self._stopping.is_set()
        if cached and outcome_ok:
            recorded, following = await self._advance_on_result(lease, value)
            if recorded:
                return following
        eager = self.worker_id if cached and lease.run_id in self._cache else None
        wt = await self._record_outcome(lease, outcome_ok, value, eager)
        if wt is not None:
            self._spawn_workflow_task(wt)
        return None

    async def _advance_on_result(
        self, lease: ActivityTaskLease, value: Any
    ) -> tuple[bool, ActivityTaskLease | None]:
        """Run the cached run's code on an activity result, then record both in one transaction.

        The usual path takes two: the result (which hands this worker the task it wakes), then
        that task's completion. Here the worker runs the task first, on the event the store
        is about to write, and the store checks that nothing else reached the run meanwhile;
        if something did, it records the result alone and hands over the task as usual, and the
        instance, which ran ahead, is dropped. Returns whether it was recorded (if not, take
        the usual path) and an activity the step leased here, for the caller to run next.
        """
        run_id = lease.run_id
        wt: WorkflowTaskLease | None = None
        following: ActivityTaskLease | None = None
        async with self._run_lock(run_id):
            inst = self._cache.pop(run_id)
            if inst is None:
                return False, None  # a task of this run took it meanwhile
            seen = inst.last_event_id
            # The code gets a decoded copy, as from the store: what it does to its result must
            # not change what is recorded (the store encodes ``value`` after the code ran).
            encoded = dumps(activity_rules.completed_attrs(lease.seq, value, lease.attempt))
            now = self.store.now()
            event = Event(seen + 1, EventType.ACTIVITY_TASK_COMPLETED, now, loads(encoded))
            size = inst.stored_history_size + len(encoded)
            try:
                commands = advance(inst, [event], now, task_history=(seen + 1, size))
            except (Exception, SystemExit, KeyboardInterrupt):
                # The task fails: let the usual path record the result and run the task again
                # from history, where the failure is handled (and retried) as for any task.
                return False, None
            self._stats["cache_hit"] += 1
            completion = self._completion(inst, commands, now, size)
            reserved = completion.eager_activities
            try:
                step = await self.store.complete_activity_and_task(
                    lease, value, seen, completion, cached_upto=self._cache.upto
                )
            except LeaseLostError:
                _log_rejected(lease)
                return True, None
            except Exception as e:
                # Maybe recorded (a connection lost during the commit), or a bug: the usual path
                # records the result, fenced by the lease; the instance ran ahead and is dropped.
                logger.warning("recording the result of run %s's activity failed: %s", run_id, e)
                return False, None
            finally:
                if reserved:
                    self._release_slots(reserved)
            self._stats["act_completed"] += 1
            if step.completion is not None:
                self._stats["fused"] += 1
                following = self._task_completed(run_id, inst, step.completion, keep=True)
            else:
                wt = step.workflow_lease
        if wt is not None:
            self._spawn_workflow_task(wt)
        return True, following

    async def _record_outcome(
        self, lease: ActivityTaskLease, ok: bool, value: Any, eager: str | None
    ) -> WorkflowTaskLease | None:
        """Record an attempt's outcome; the workflow task handed over with it, if any.

        A store error here may leave the outcome recorded or not (a connection lost during the
        commit): trying again is safe, as the lease refuses a second recording, and it saves
        re-running the activity once its lease expires.
        """
        store = self.store
        for attempt in range(_OUTCOME_ATTEMPTS):
            try:
                if ok:
                    wt = await store.complete_activity_task(
                        lease,
                        value,
                        eager_worker_id=eager,
                        cached_upto=self._cache.upto,
                        build_id=self.build_id,
                    )
                    self._stats["act_completed"] += 1
                else:
                    wt = await store.fail_activity_task(
                        lease,
                        value,
                        eager_worker_id=eager,
                        cached_upto=self._cache.upto,
                        build_id=self.build_id,
                    )
                    self._stats["act_failed"] += 1
                return wt
            except LeaseLostError:
                if attempt == 0:
                    _log_rejected(lease)
                return None
            except StoreError as e:
                if attempt == _OUTCOME_ATTEMPTS - 1:
                    logger.warning("recording activity outcome failed: %s", e)
                    return None
                await asyncio.sleep(0.1 * (attempt + 1))
        return None

    async def _invoke(
        self,
        adefn: ActivityDefinition,
        args: list[Any],
        actx: activity_api._ActivityContext,
        lease: ActivityTaskLease,
        heartbeats: _Heartbeats,
    ) -> Any:
        remaining = lease.start_to_close_timeout - (self.store.now() - lease.started_time)
        token = activity_api._current.set(actx)
        try:
            if adefn.is_async:
                # A task of its own: the attempt runs in a copy of the context, so what its code
                # sets in context variables does not reach the next attempt this task runs.
                task = asyncio.ensure_future(adefn.fn(*args))
                heartbeats.task = task
                # Awaiting the task itself (a timeout cancels it through this await) costs one
                # loop turn and one future less per attempt than asyncio.wait_for in 3.11.
                try:
                    async with asyncio.timeout(max(0.0, remaining)):
                        return await task
                except TimeoutError:
                    if task.cancelled():
                        raise ActivityTimeoutError("start_to_close") from None
                    if task.done():
                        # It ended on its own (a result, or its own TimeoutError) just as the
                        # deadline passed: its outcome stands, as with asyncio.wait_for.
                        return task.result()
                    raise
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._executor, ctx.run, adefn.fn, *args)
            try:
                return await asyncio.wait_for(fut, max(0.0, remaining))
            except TimeoutError:
                if fut.cancelled():
                    raise ActivityTimeoutError("start_to_close") from None
                raise
        finally:
            activity_api._current.reset(token)


class _Heartbeats:
    """Throttled heartbeats of one attempt; learns of cancellation from the store's answer."""

    MIN_INTERVAL = 0.5

    def __init__(self, worker: Worker, lease: ActivityTaskLease) -> None:
        self.worker = worker
        self.lease = lease
        self.loop = asyncio.get_running_loop()
        self.cancelled = False
        self.task: asyncio.Future[Any] | None = None
        self._pending: Any = None
        self._has_pending = False
        self._sending = False
        self._last_sent = 0.0
        self._stopped = False

    def record(self, details: Any) -> None:
        """Called from the activity (any thread)."""
        try:
            payload = to_payload(details, what="heartbeat details")
        except PayloadError:
            logger.warning(
                "heartbeat details of %s are not JSON; ignored", self.lease.activity_type
            )
            return
        self.loop.call_soon_threadsafe(self._queue, payload)

    def _queue(self, payload: Any) -> None:
        self._pending, self._has_pending = payload, True
        if not self._sending and not self._stopped:
            self._sending = True
            self.loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._has_pending and not self._stopped:
                wait = self._last_sent + self.MIN_INTERVAL - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                details, self._has_pending = self._pending, False
                self._last_sent = time.monotonic()
                try:
                    alive = await self.worker.store.heartbeat_activity_task(self.lease, details)
                except StoreError as e:
                    logger.warning("activity heartbeat failed: %s", e)
                    continue
                if not alive:
                    self.cancelled = True
                    if self.task is not None and not self.task.done():
                        self.task.cancel()
                    return
        finally:
            self._sending = False

    def is_cancelled(self) -> bool:
        return self.cancelled

    def stop(self) -> None:
        self._stopped = True


def _log_rejected(lease: ActivityTaskLease) -> None:
    logger.info(
        "result of activity %s (run %s, attempt %d) rejected: its lease moved on",
        lease.activity_type,
        lease.run_id,
        lease.attempt,
    )


def task_token(task_id: int, lease_id: str) -> str:
    """An opaque token naming one activity attempt (its task and lease)."""
    raw = json.dumps([task_id, lease_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _activity_info(lease: ActivityTaskLease) -> activity_api.ActivityInfo:
    return activity_api.ActivityInfo(
        activity_id=str(lease.seq),
        activity_type=lease.activity_type,
        attempt=lease.attempt,
        namespace=lease.namespace,
        workflow_id=lease.workflow_id,
        run_id=lease.run_id,
        workflow_type=lease.workflow_type,
        task_queue=lease.task_queue,
        scheduled_time=datetime.fromtimestamp(lease.scheduled_time, UTC),
        started_time=datetime.fromtimestamp(lease.started_time, UTC),
        start_to_close_timeout=timedelta(seconds=lease.start_to_close_timeout),
        heartbeat_details=lease.heartbeat_details,
        task_token=task_token(lease.task_id, lease.lease_id),
    )
