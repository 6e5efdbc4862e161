"""``WorkflowEnvironment``: the real engine in-process, on SQLite, with a clock tests can move.

Everything time-based in duro reads the store's clock: timers' ``fire_at``, retry backoffs
(``visible_at``), activity leases, worker liveness, and the workflow time that
``workflow.now()`` and ``asyncio.sleep`` see. The environment gives its store a
``SkippingClock`` and moves it:

- **Time skipping.** While a test awaits ``handle.result()`` (or ``execute_workflow``), the
  environment watches the store. When no task is leased or visible, no timer is due and its
  workers have nothing in flight — every run is blocked on a timer, a backoff or a signal — it
  jumps the clock to the next due time and fires what is due. A workflow that sleeps three days
  finishes in milliseconds, yet nothing runs early or out of order: only idle time is skipped.
  A running activity blocks skipping (as in Temporal's test server), so real work never races
  a skipped timeout.
- **By hand.** ``sleep(duration)`` lets time pass in steps, through each due time, waiting for
  the work of each step; ``advance(duration)`` jumps at once (from anywhere, even inside an
  activity, e.g. to push an attempt past its ``start_to_close_timeout``).

Skipping happens only while a result is awaited, so a test can start a run, signal it and only
then wait: the signal is not raced by a skipped timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from duro.client import Client, WorkflowHandle
from duro.converter import failure_from_dict
from duro.errors import DuroError
from duro.store.protocol import ExecutionInfo
from duro.store.sqlite import SQLiteStore
from duro.testing._activities import ActivityTable, activity_name
from duro.testing._clock import SkippingClock
from duro.worker import Worker

__all__ = ["WorkflowEnvironment", "WorkflowTaskFailedError"]

T = TypeVar("T")

_NEVER = timedelta(days=365 * 100)
"""Liveness timeout of the environment's workers: a jump of days must not make the store
believe they died (their leases would be released and their attempts retried)."""

_POLL = 0.001
"""Seconds between two looks at the store while work is running. The look is one read-only
query on a local database; 1 ms keeps a skipped day to a few milliseconds of real time."""


class WorkflowTaskFailedError(DuroError):
    """A run awaited in a ``WorkflowEnvironment`` is stuck on a failing workflow task.

    A worker retries a failing workflow task (a bug, a determinism guard, a
    ``NonDeterminismError``) until the code is fixed, so the run never closes. In a test that
    would hang; the environment raises this instead. ``cause`` is the task's failure.
    """

    def __init__(self, workflow_id: str, run_id: str, attempts: int, cause: Exception) -> None:
        super().__init__(
            f"workflow task of {workflow_id!r} (run {run_id}) failed {attempts} time(s), and a "
            f"worker would retry it until the code changes: {cause}"
        )
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.attempts = attempts
        self.cause = cause
        self.__cause__ = cause


class _Probe(NamedTuple):
    idle: bool
    """Nothing can run now: every run waits on time or on something from outside."""
    next_due: float | None
    """Store time at which the next timer, backoff or sticky timeout becomes due."""


def _seconds(duration: timedelta | float) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


class WorkflowEnvironment:
    """An in-process duro (SQLite store, client, worker) whose clock tests control.

    Example::

        async with WorkflowEnvironment(workflows=[Approval], activities=[notify]) as env:
            handle = await env.client.start_workflow(Approval.run, "doc-7", id="a-1")
            assert await handle.result() == "expired"  # 3 days skipped in milliseconds
    """

    def __init__(
        self,
        *,
        workflows: Sequence[Any] = (),
        activities: Sequence[Callable[..., Any]] = (),
        task_queue: str = "default",
        namespace: str = "default",
        time_skipping: bool = True,
        start_time: datetime | None = None,
        path: str | os.PathLike[str] | None = None,
        worker_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Configure the environment; ``start()`` (or ``async with``) brings it up.

        Args:
            workflows: Workflows for the default worker (on ``task_queue``).
            activities: Activities for the default worker. With neither, no worker starts;
                add some with ``start_worker``.
            task_queue: Queue of the default worker. Default ``"default"``.
            namespace: Namespace of ``client``. Default ``"default"``.
            time_skipping: Skip idle time while a result is awaited. Default on; off, time
                flows as on a wall clock and moves only by ``sleep`` and ``advance``.
            start_time: Store time at start (aware datetime). Default: now.
            path: SQLite file to use. Default: an in-memory database.
            worker_options: Extra ``Worker`` arguments for every worker of the environment.
        """
        if start_time is not None and start_time.tzinfo is None:
            raise ValueError("start_time must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
        self.time_skipping = time_skipping
        """Whether awaiting a result skips idle time; may be changed at any moment."""
        self._clock = SkippingClock(start_time.timestamp() if start_time is not None else None)
        self.store = SQLiteStore(
            os.fspath(path) if path is not None else ":memory:",
            clock=self._clock,
            synchronous="OFF",  # a test database need not survive a power cut
        )
        self.client: Client = _EnvClient(self.store, namespace=namespace, env=self)
        """A client whose handles skip time while their result is awaited."""
        self.worker: Worker | None = None
        """The default worker, if ``workflows`` or ``activities`` were given."""
        self._task_queue = task_queue
        self._workflows = list(workflows)
        self._activities = list(activities)
        self._worker_options = dict(worker_options or {})
        self._table = ActivityTable()
        self._workers: list[tuple[Worker, asyncio.Task[None]]] = []
        self._jump_lock = asyncio.Lock()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> WorkflowEnvironment:
        """Open the store and start the default worker; returns the environment."""
        if self._started:
            raise RuntimeError("the environment is already started")
        self._started = True
        await self.store.start()
        try:
            if self._workflows or self._activities:
                self.worker = await self.start_worker(
                    task_queue=self._task_queue,
                    workflows=self._workflows,
                    activities=self._activities,
                )
        except BaseException:
            await self.close()  # ``async with`` does not call __aexit__ when __aenter__ raises
            raise
        return self

    async def close(self) -> None:
        """Stop the workers (in-flight activities are cancelled) and close the store."""
        workers, self._workers = self._workers, []
        try:
            for worker, _ in workers:
                worker.request_shutdown()
            results = await asyncio.gather(*(t for _, t in workers), return_exceptions=True)
        finally:
            await self.store.close()
            self._table.close()
        for r in results:
            if isinstance(r, Exception):
                raise r

    async def __aenter__(self) -> WorkflowEnvironment:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_worker(
        self,
        *,
        task_queue: str = "default",
        workflows: Sequence[Any] = (),
        activities: Sequence[Callable[..., Any]] = (),
        **options: Any,
    ) -> Worker:
        """Start another worker in the environment (e.g. for a second task queue).

        Its activities can be mocked like the default worker's, it survives clock jumps, and
        ``close()`` stops it. ``options`` are ``Worker`` arguments.
        """
        opts: dict[str, Any] = {
            "liveness_timeout": _NEVER,
            # Closing a test environment should not wait for activities a test left hanging.
            "graceful_shutdown_timeout": timedelta(0),
        }
        opts.update(self._worker_options)
        opts.update(options)
        worker = Worker(
            self.client,
            task_queue=task_queue,
            workflows=workflows,
            activities=self._table.stand_ins(activities),
            **opts,
        )
        task = asyncio.create_task(worker.run(), name=f"duro test worker {task_queue}")
        self._workers.append((worker, task))
        await self._wait_registered(worker, task, workflows)
        return worker

    async def _wait_registered(
        self, worker: Worker, task: asyncio.Task[None], workflows: Sequence[Any]
    ) -> None:
        """Return once the store knows the worker's workflow types (so starting a workflow by
        name is checked as in production), or raise what stopped the worker."""
        if not workflows:
            return
        while True:
            if task.done():
                task.result()  # raises the worker's error
                raise RuntimeError("the worker stopped while starting")
            known = await self.store.known_workflow_types(worker.namespace, worker.task_queue)
            if known:
                return
            await asyncio.sleep(_POLL)

    # -- time ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The environment's current time (UTC): the store clock that workflows see."""
        return datetime.fromtimestamp(self._clock(), UTC)

    async def sleep(self, duration: timedelta | float) -> None:
        """Let ``duration`` of environment time pass, skipping what is idle.

        Time moves in steps to each due timer, backoff or timeout within ``duration``, and each
        step's work (workflow tasks, activities) runs before the next jump; returns when the
        time has passed and the environment is idle. Works whether or not ``time_skipping`` is
        on. Call it from the test, not from inside an activity (which would wait for itself;
        use ``advance`` there).
        """
        target = self._clock() + _seconds(duration)
        while True:
            async with self._jump_lock:
                probe = await self._probe()
                if probe.idle:
                    if self._clock() >= target:
                        return
                    step = target if probe.next_due is None else min(probe.next_due, target)
                    if self._clock.jump_to(step):
                        await self._after_jump()
                        continue
            await asyncio.sleep(_POLL)

    async def advance(self, duration: timedelta | float) -> None:
        """Jump the clock forward by ``duration`` at once, whatever is running.

        Everything that became due fires at the new time (timers, backoffs), and leases that
        expired are released: an activity attempt still running past its
        ``start_to_close_timeout`` times out and is retried per its policy, its late result
        rejected, as in production. Safe to call from inside an activity.
        """
        seconds = _seconds(duration)
        if seconds < 0:
            raise ValueError("time only moves forward: duration must be >= 0")
        async with self._jump_lock:
            if self._clock.jump_to(self._clock() + seconds):
                await self._after_jump()

    async def wait_idle(self) -> None:
        """Wait until nothing can run without time passing or outside input (e.g. after a
        signal, until the workflow has handled it). Does not move the clock."""
        while not (await self._probe()).idle:
            await asyncio.sleep(_POLL)

    async def _probe(self) -> _Probe:
        busy, next_due = await self.store.pending_work()
        if busy == 0:
            for worker, _ in self._workers:
                stats = worker.statistics()
                if stats.workflow_tasks_in_flight or stats.activities_in_flight:
                    busy += 1
        return _Probe(idle=busy == 0, next_due=next_due)

    async def _after_jump(self) -> None:
        # The workers' timer loops would notice within a second; firing here makes a skipped
        # timer's work start at once. Reaping applies the new time to running leases.
        await self.store.fire_due_timers()
        await self.store.reap(_NEVER.total_seconds())

    async def _skip_once(self) -> bool:
        """Jump to the next due time if everything is idle; True if the clock moved."""
        async with self._jump_lock:
            probe = await self._probe()
            if not probe.idle or probe.next_due is None:
                return False
            if not self._clock.jump_to(probe.next_due):
                return False
            await self._after_jump()
            return True

    # -- awaiting results ------------------------------------------------------------------------

    async def _wait_result(self, handle: WorkflowHandle, waiting: Awaitable[T]) -> T:
        """Await ``waiting`` (a handle's result) while watching the run (see module doc)."""
        result = asyncio.ensure_future(waiting)
        watcher = asyncio.ensure_future(self._watch(handle))
        try:
            await asyncio.wait([result, watcher], return_when=asyncio.FIRST_COMPLETED)
            if not result.done():
                watcher.result()  # raises WorkflowTaskFailedError
            return await result
        finally:
            for t in (result, watcher):
                t.cancel()
            await asyncio.gather(result, watcher, return_exceptions=True)

    async def _watch(self, handle: WorkflowHandle) -> None:
        """Skip idle time for an awaited run; fail fast if its workflow task keeps failing.

        Returns when the run is closed (the result is then at hand).
        """
        while True:
            probe = await self._probe()
            if probe.idle:
                info = await handle.describe()
                if info.status.closed:
                    return
                _raise_if_task_failing(info)
                if self.time_skipping and await self._skip_once():
                    continue
            await asyncio.sleep(_POLL)

    # -- activities ------------------------------------------------------------------------------

    def mock_activity(
        self,
        activity: Callable[..., Any] | str,
        replacement: Callable[..., Any] | None = None,
    ) -> None:
        """Run ``replacement`` instead of an activity, for this environment, from the next attempt.

        ``activity`` is the real ``@activity.defn`` function or its name; ``replacement`` any
        function (async or sync) taking the same arguments, which arrive decoded by the real
        activity's type hints. The real activity's options (timeouts, retry policy) still
        apply: they are the workflow's. Alternatively pass one ``@activity.defn(name=...)``
        function, which replaces the activity of that name. Inside the replacement,
        ``activity.info()`` and ``heartbeat()`` work as in the real one.

        Raises:
            ValueError: the environment is started and none of its workers registers an
                activity of that name (pass it in ``activities=``, or mock before ``start()``).
        """
        if replacement is None:
            if isinstance(activity, str):
                raise TypeError("mock_activity(name, replacement): the replacement is missing")
            replacement = activity
        name = activity_name(activity)
        if self._started and name not in self._table.names():
            raise ValueError(
                f"no worker of this environment registers activity {name!r} "
                f"(registered: {', '.join(sorted(self._table.names())) or 'none'}); "
                "pass it in activities=, or mock it before the environment starts"
            )
        self._table.mock(name, replacement)


def _raise_if_task_failing(info: ExecutionInfo) -> None:
    if info.workflow_task_attempt > 1 and info.workflow_task_failure is not None:
        raise WorkflowTaskFailedError(
            info.workflow_id,
            info.run_id,
            info.workflow_task_attempt - 1,
            failure_from_dict(info.workflow_task_failure),
        )


class _EnvClient(Client):
    """A client whose handles skip time while their result is awaited."""

    def __init__(self, store: SQLiteStore, *, namespace: str, env: WorkflowEnvironment) -> None:
        super().__init__(store, namespace=namespace)
        self.env = env

    async def close(self) -> None:
        """The environment owns the store and closes it; closing its client is a no-op."""

    async def start_workflow(
        self, workflow: Any, *args: Any, id: str, **options: Any
    ) -> WorkflowHandle:
        handle = await super().start_workflow(workflow, *args, id=id, **options)
        return _EnvHandle.of(handle)

    def get_workflow_handle(
        self, workflow_id: str, *, run_id: str | None = None, result_type: Any = None
    ) -> WorkflowHandle:
        return _EnvHandle.of(
            super().get_workflow_handle(workflow_id, run_id=run_id, result_type=result_type)
        )


@dataclasses.dataclass
class _EnvHandle(WorkflowHandle):
    @classmethod
    def of(cls, handle: WorkflowHandle) -> _EnvHandle:
        return cls(**{f.name: getattr(handle, f.name) for f in dataclasses.fields(handle)})

    async def result(self, *, timeout: timedelta | float | None = None) -> Any:
        """Wait for the run's result, skipping idle time (see ``WorkflowEnvironment``).

        Raises:
            WorkflowTaskFailedError: the run's workflow task keeps failing (it would never close).
        """
        waiting = super().result(timeout=timeout)
        client = self.client
        if not isinstance(client, _EnvClient):
            return await waiting
        return await client.env._wait_result(self, waiting)
