"""One workflow run in memory: its object, pending work, and the commands of an activation.

An *activation* applies a batch of input events (``_apply_<EventType>``), runs the loop until
every coroutine is blocked, and returns the commands the code produced. The worker keeps
instances in a cache between tasks, so a cache hit applies only the new events.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from duro import commands as cmd
from duro import search_attributes
from duro.converter import (
    failure_from_dict,
    failure_to_dict,
    from_payload,
    to_payload,
    to_payloads,
)
from duro.definitions import (
    DEFAULT_START_TO_CLOSE,
    WorkflowDefinition,
    activity_definition,
    handler_name,
    workflow_definition,
)
from duro.errors import (
    ActivityError,
    ChildWorkflowError,
    ExternalWorkflowError,
    NonDeterminismError,
    NondeterministicCallError,
    PayloadError,
    UnknownHandlerError,
    WorkflowAlreadyStartedError,
)
from duro.history import Event, EventType
from duro.retry import RetryPolicy
from duro.runtime import context, guards
from duro.runtime.loop import DurableTimerHandle, WorkflowEventLoop

logger = logging.getLogger("duro.workflow")


def seconds(value: timedelta | float | None) -> float | None:
    """A duration given as a timedelta or as seconds, in seconds."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class WorkflowInfo:
    """What ``workflow.info()`` returns."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    start_time: datetime
    history_length: int = 0
    """Events in the run's history when the current workflow task began."""
    history_size: int = 0
    """Bytes of history when the current workflow task began."""
    continue_as_new_suggested: bool = False
    """History passed 10,000 events or 10 MiB: time to ``workflow.continue_as_new()``."""
    continued_from: str | None = None
    """The run id this run continued, if it was started by continue-as-new."""


CONTINUE_AS_NEW_EVENTS = 10_000
CONTINUE_AS_NEW_BYTES = 10 * 1024 * 1024


class ContinueAsNewRequest(BaseException):
    """Raised by ``workflow.continue_as_new``; a ``BaseException`` so ``except Exception``
    in workflow code does not swallow it."""

    def __init__(self, args: list[Any]) -> None:
        super().__init__("continue as new")
        self.args_payload = args


class ChildWorkflowHandle:
    """A started (or starting) child workflow: await it for its result, signal it, cancel it."""

    def __init__(
        self,
        instance: WorkflowInstance,
        workflow_id: str,
        started: asyncio.Future[str],
        result: asyncio.Future[Any],
    ):
        self.id = workflow_id
        self.run_id: str | None = None
        self._instance = instance
        self._started = started
        self._result = result

    async def wait_started(self) -> str:
        """The child's run id once it started; raises if its workflow id was taken."""
        run_id = await self._started
        self.run_id = run_id
        return run_id

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None:
        """Send the child a signal (once it started; to its current run if it continued as
        new). Raises ``ExternalWorkflowError`` if the child has closed."""
        name = handler_name(signal, "signal")
        await self.wait_started()
        await self._instance.signal_external(self.id, None, name, args)

    async def cancel(self) -> None:
        """Ask the child to cancel (once it started; its current run if it continued as new).

        Awaiting the handle then raises ``ChildWorkflowError`` caused by its cancellation,
        unless the child handles it. Raises ``ExternalWorkflowError`` if the child has closed.
        """
        await self.wait_started()
        await self._instance.cancel_external(self.id, None)

    def __await__(self) -> Any:
        return self._result.__await__()


@dataclass
class _PendingChild:
    started: asyncio.Future[str]
    result: asyncio.Future[Any]
    workflow_type: str
    return_hint: Any


@dataclass
class _PendingActivity:
    future: asyncio.Future[Any]
    activity_type: str
    return_hint: Any


class WorkflowTaskFailure(Exception):
    """Workflow code broke a rule that should fail the task (retried), not the run."""


_HANDLED_FIRST = frozenset(
    {EventType.WORKFLOW_EXECUTION_SIGNALED, EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED}
)


def _delivery_order(event: Event) -> int:
    """Signals and updates of a task reach their handlers before the code resumes.

    Otherwise a signal recorded just after an activity's result in the same task would be
    handled only after the code, woken by that result, has moved on (say, continued as new
    without it). Temporal orders a task's jobs the same way. The sort is stable, so replay
    sees the same order.
    """
    return 0 if event.type in _HANDLED_FIRST else 1


def _seed(run_id: str) -> int:
    """The run's deterministic random seed. A time-ordered (UUIDv7) id starts with its time,
    which runs started in the same millisecond share, so all of it is used; a random (uuid4)
    id, as runs recorded before had, keeps its original seed, so their replays draw the same."""
    digits = run_id.replace("-", "")
    if len(digits) == 32 and digits[12] == "7":
        return int(digits, 16)
    return int(digits[:16], 16)


_TASK_FAILURES = (
    NonDeterminismError,
    NondeterministicCallError,
    WorkflowTaskFailure,
    guards.DeadlockDetected,
)
"""Raised by workflow code, these fail the workflow task (retried), never the run."""


class WorkflowInstance:
    """See the module docstring."""

    def __init__(self, defn: WorkflowDefinition, info: WorkflowInfo) -> None:
        self.defn = defn
        self.info = info
        # typeshed marks every loop method abstract; asyncio itself does not.
        self.loop = WorkflowEventLoop(self)  # type: ignore[abstract]
        self.workflow_time = info.start_time.timestamp()
        self._cancel_reason = ""
        self.replaying = False
        self.last_event_id = 0
        self.closed = False
        self.random = random.Random(_seed(info.run_id))
        self.obj: Any = defn.cls() if defn.cls is not None else None
        self.commands: list[cmd.Command] = []
        self.task_error: BaseException | None = None
        self._main: asyncio.Task[Any] | None = None
        self._activity_seq = 0
        self._timer_seq = 0
        self._child_seq = 0
        self._children: dict[int, _PendingChild] = {}
        self._external_seq = 0
        self._externals: dict[int, asyncio.Future[None]] = {}
        self._activities: dict[int, _PendingActivity] = {}
        self._timers: dict[int, DurableTimerHandle] = {}
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        self._unhandled_signals: list[tuple[str, list[Any]]] = []
        self.history_length = 0
        self.task_history_length = 0
        self.task_history_size = 0
        self.stored_history_size = 0
        """Bytes of stored history after this instance's last completed task (worker's)."""
        # Determinism guards (runtime/guards.py): read on every guarded call, so plain fields.
        self.guards_enabled = True
        self.guards_suspended = False
        self.allowed_kinds: dict[str, int] = {}
        self.deadlock_timeout: float | None = 2.0
        self._static_checked = False
        # Versioning: patch ids decided so far, and the patch markers of the batch being replayed.
        self._patches: dict[str, bool] = {}
        self.recorded_markers: frozenset[str] = frozenset()

    # -- activation ------------------------------------------------------------------------------

    def activate(
        self, events: list[Event], workflow_time: float, *, replaying: bool
    ) -> list[cmd.Command]:
        """Apply ``events``, run the code until it blocks, return the commands it produced.

        Raises ``WorkflowTaskFailure`` / ``NonDeterminismError`` when the task must fail.
        """
        self.commands = []
        self.task_error = None
        self.workflow_time = max(self.workflow_time, workflow_time)
        self.replaying = replaying
        if not self._static_checked:
            self._static_checked = True
            guards.report_static(self, self.defn.static_findings)
            if self.task_error is not None:
                raise self.task_error
        previous = context.set_current(self)
        previous_loop = asyncio._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        watch = (
            guards.watchdog.watch(self, self.deadlock_timeout)
            if self.deadlock_timeout
            else contextlib.nullcontext()
        )
        try:
            with watch:
                for event in sorted(events, key=_delivery_order):
                    self.history_length = max(self.history_length, event.event_id)
                    self._apply(event)
                self._run_until_blocked()
        except guards.DeadlockDetected:
            pass  # the watchdog already recorded a DeadlockError as the task error
        except (SystemExit, KeyboardInterrupt) as e:
            # asyncio re-raises these out of the task step; in workflow code they are a bug
            # of the code (sys.exit in a workflow), so the task fails and the worker lives on.
            if self.task_error is None:
                self.task_error = WorkflowTaskFailure(
                    f"workflow code raised {type(e).__name__}({e}); fix the code"
                )
        finally:
            asyncio.events._set_running_loop(previous_loop)
            context.set_current(previous)
        if self.task_error is not None:
            raise self.task_error
        return self.commands

    def _run_until_blocked(self) -> None:
        loop = self.loop
        while True:
            loop.run_ready()
            if self.closed:
                return
            progressed = False
            for fn, fut in list(self._conditions):
                if fut.done():
                    continue
                try:
                    ok = fn()
                except BaseException as e:  # a broken condition fails like the code that awaits it
                    fut.set_exception(e)
                    progressed = True
                    continue
                if ok:
                    fut.set_result(True)
                    progressed = True
            if not progressed and not loop.has_ready():
                return

    def add_command(self, command: cmd.Command) -> None:
        if not self.closed:
            self.commands.append(command)

    # -- applying events -------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        handler = getattr(self, f"_apply_{event.type.value}", None)
        if handler is None:
            raise NonDeterminismError(
                event.event_id, f"{event.type.value} (not an input event)", None
            )
        handler(event)

    def _apply_WorkflowExecutionStarted(self, event: Event) -> None:
        args = event.attrs.get("args", [])
        self._main = self.loop.create_task(self._run_main(args), name="workflow main")
        self._main.add_done_callback(self._on_main_done)

    def _apply_ActivityTaskCompleted(self, event: Event) -> None:
        pending = self._activities.pop(event.attrs["seq"], None)
        if pending is None or pending.future.done():
            return  # canceled by the code before the result arrived
        try:
            value = from_payload(
                event.attrs.get("result"),
                pending.return_hint,
                what=f"result of activity {pending.activity_type!r}",
            )
        except PayloadError as e:
            pending.future.set_exception(e)
        else:
            pending.future.set_result(value)

    def _resolve_activity_failure(self, event: Event) -> None:
        seq = event.attrs["seq"]
        pending = self._activities.pop(seq, None)
        if pending is None or pending.future.done():
            return
        cause = failure_from_dict(event.attrs.get("failure") or {})
        pending.future.set_exception(
            ActivityError(
                pending.activity_type, str(seq), int(event.attrs.get("attempt", 1)), cause
            )
        )

    _apply_ActivityTaskFailed = _resolve_activity_failure
    _apply_ActivityTaskTimedOut = _resolve_activity_failure

    def _apply_ActivityTaskCanceled(self, event: Event) -> None:
        pending = self._activities.pop(event.attrs["seq"], None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()

    def _apply_TimerFired(self, event: Event) -> None:
        handle = self._timers.pop(event.attrs["seq"], None)
        if handle is not None:
            self.loop.fire_timer(handle)

    def _apply_WorkflowExecutionSignaled(self, event: Event) -> None:
        name, args = event.attrs["name"], event.attrs.get("args", [])
        if name not in self.defn.signals:
            # Kept until a handler exists; a class can't add handlers later, so this is logged.
            self._unhandled_signals.append((name, args))
            if not self.replaying:
                logger.warning(
                    "workflow %s (%s) has no signal handler %r; signal dropped",
                    self.info.workflow_id,
                    self.defn.name,
                    name,
                )
            return
        handler = self.defn.signals[name]
        try:
            decoded = handler.signature.decode_args(args)
        except PayloadError as e:
            if not self.replaying:
                logger.warning("signal %r to %s not delivered: %s", name, self.info.workflow_id, e)
            return
        bound: Any = handler.fn.__get__(self.obj) if self.obj is not None else handler.fn
        if handler.is_async:
            task = self.loop.create_task(bound(*decoded), name=f"signal {name}")
            task.add_done_callback(self._on_handler_done)
        else:
            self.loop.call_soon(self._run_sync_handler, bound, decoded)

    def _apply_WorkflowExecutionUpdateAccepted(self, event: Event) -> None:
        update_id, name = event.attrs["update_id"], event.attrs["name"]
        handler = self.defn.updates.get(name)
        if handler is None:  # validated by a worker that had it; this code lost it
            err = UnknownHandlerError("update", name, self.defn.name, list(self.defn.updates))
            self.add_command(cmd.CompleteUpdate(update_id, failure=failure_to_dict(err)))
            return
        bound: Any = handler.fn.__get__(self.obj) if self.obj is not None else handler.fn

        async def run_update() -> None:
            try:
                args = handler.signature.decode_args(event.attrs.get("args", []))
                result = bound(*args)
                if handler.is_async:
                    result = await result
                payload = to_payload(result, what=f"result of update {name!r}")
            except _TASK_FAILURES:
                raise
            except Exception as e:  # the caller gets the failure; the run goes on
                self.add_command(cmd.CompleteUpdate(update_id, failure=failure_to_dict(e)))
            else:
                self.add_command(cmd.CompleteUpdate(update_id, result=payload))

        task = self.loop.create_task(run_update(), name=f"update {name}")
        task.add_done_callback(self._on_handler_done)

    def validate_update(self, name: str, args: list[Any]) -> None:
        """Run the update's validator against the current state; raises to reject it."""
        handler = self.defn.updates.get(name)
        if handler is None:
            raise UnknownHandlerError("update", name, self.defn.name, list(self.defn.updates))
        decoded = handler.signature.decode_args(args)
        if handler.validator is None:
            return
        bound: Any = (
            handler.validator.__get__(self.obj) if self.obj is not None else handler.validator
        )
        previous = context.set_current(self)
        try:
            bound(*decoded)
        finally:
            context.set_current(previous)

    def _apply_ChildWorkflowExecutionStarted(self, event: Event) -> None:
        child = self._children.get(event.attrs["seq"])
        if child is not None and not child.started.done():
            child.started.set_result(event.attrs["run_id"])

    def _apply_StartChildWorkflowExecutionFailed(self, event: Event) -> None:
        child = self._children.pop(event.attrs["seq"], None)
        if child is None:
            return
        err = WorkflowAlreadyStartedError(event.attrs["workflow_id"], "?")
        for fut in (child.started, child.result):
            if not fut.done():
                fut.set_exception(err)
        child.result.exception()  # retrieved: awaiting only the start is fine

    def _apply_ChildWorkflowExecutionCompleted(self, event: Event) -> None:
        child = self._children.pop(event.attrs["seq"], None)
        if child is None or child.result.done():
            return
        try:
            value = from_payload(
                event.attrs.get("result"),
                child.return_hint,
                what=f"result of child workflow {child.workflow_type!r}",
            )
        except PayloadError as e:
            child.result.set_exception(e)
        else:
            child.result.set_result(value)

    def _resolve_child_failure(self, event: Event) -> None:
        child = self._children.pop(event.attrs["seq"], None)
        if child is None or child.result.done():
            return
        cause = failure_from_dict(event.attrs.get("failure") or {})
        status = event.type.value.removeprefix("ChildWorkflowExecution")
        child.result.set_exception(ChildWorkflowError(child.workflow_type, status, cause))

    _apply_ChildWorkflowExecutionFailed = _resolve_child_failure
    _apply_ChildWorkflowExecutionCanceled = _resolve_child_failure
    _apply_ChildWorkflowExecutionTerminated = _resolve_child_failure
    _apply_ChildWorkflowExecutionTimedOut = _resolve_child_failure

    def _resolve_external(self, event: Event) -> None:
        fut = self._externals.pop(event.attrs["seq"], None)
        if fut is None or fut.done():
            return
        if event.type == EventType.EXTERNAL_WORKFLOW_REQUEST_FAILED:
            fut.set_exception(ExternalWorkflowError(str(event.attrs.get("error", ""))))
        else:
            fut.set_result(None)

    _apply_ExternalWorkflowExecutionSignaled = _resolve_external
    _apply_ExternalWorkflowExecutionCancelRequested = _resolve_external
    _apply_ExternalWorkflowRequestFailed = _resolve_external

    def signal_external(
        self, workflow_id: str, run_id: str | None, name: str, args: tuple[Any, ...]
    ) -> asyncio.Future[None]:
        self._external_seq += 1
        seq = self._external_seq
        payloads = to_payloads(args, what=f"argument of signal {name!r}:")
        self.add_command(cmd.SignalExternalWorkflow(seq, workflow_id, run_id, name, payloads))
        fut: asyncio.Future[None] = self.loop.create_future()
        self._externals[seq] = fut
        return fut

    def cancel_external(self, workflow_id: str, run_id: str | None) -> asyncio.Future[None]:
        self._external_seq += 1
        seq = self._external_seq
        self.add_command(cmd.RequestCancelExternalWorkflow(seq, workflow_id, run_id))
        fut: asyncio.Future[None] = self.loop.create_future()
        self._externals[seq] = fut
        return fut

    def start_child(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        *,
        workflow_id: str | None,
        task_queue: str | None,
        parent_close_policy: str,
    ) -> ChildWorkflowHandle:
        defn = workflow_definition(workflow) if not isinstance(workflow, str) else None
        if defn is None and not isinstance(workflow, str):
            raise TypeError(f"{workflow!r} is not a workflow: decorate it with @workflow.defn")
        workflow_type = defn.name if defn is not None else str(workflow)
        if parent_close_policy not in ("terminate", "request_cancel", "abandon"):
            raise ValueError(
                "parent_close_policy must be 'terminate', 'request_cancel' or 'abandon', "
                f"not {parent_close_policy!r}"
            )
        self._child_seq += 1
        seq = self._child_seq
        child_id = workflow_id or f"{self.info.workflow_id}/{workflow_type}-{seq}"
        self.add_command(
            cmd.StartChildWorkflow(
                seq=seq,
                workflow_type=workflow_type,
                workflow_id=child_id,
                args=to_payloads(args, what=f"argument of child workflow {workflow_type!r}:"),
                task_queue=task_queue or self.info.task_queue,
                parent_close_policy=parent_close_policy,
            )
        )
        started: asyncio.Future[str] = self.loop.create_future()
        result: asyncio.Future[Any] = self.loop.create_future()
        hint = defn.run_signature.return_hint if defn is not None else Any
        self._children[seq] = _PendingChild(started, result, workflow_type, hint)
        return ChildWorkflowHandle(self, child_id, started, result)

    def _apply_WorkflowExecutionCancelRequested(self, event: Event) -> None:
        self._cancel_reason = self._cancel_reason or str(event.attrs.get("reason") or "")
        if self._main is not None and not self._main.done():
            self._main.cancel()

    def _apply_WorkflowExecutionReset(self, event: Event) -> None:
        pass  # a record of where this run came from; nothing for the code to do

    def _apply_WorkflowExecutionTerminated(self, event: Event) -> None:
        self.closed = True

    # -- main coroutine and handlers -------------------------------------------------------------

    async def _run_main(self, args: list[Any]) -> Any:
        decoded = self.defn.run_signature.decode_args(args)
        if self.obj is not None:
            return await self.defn.run_fn(self.obj, *decoded)
        return await self.defn.run_fn(*decoded)

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        if self.task_error is not None:
            return
        if task.cancelled():
            self.add_command(cmd.CancelWorkflow(self._cancel_reason))
            self.closed = True
            return
        exc = task.exception()
        if isinstance(exc, ContinueAsNewRequest):
            self.add_command(cmd.ContinueAsNew(exc.args_payload))
            self.closed = True
            return
        if exc is not None:
            if isinstance(exc, _TASK_FAILURES):
                self.task_error = exc
                return
            self.add_command(cmd.FailWorkflow(failure_to_dict(exc)))
            self.closed = True
            return
        try:
            result = to_payload(task.result(), what=f"result of workflow {self.defn.name!r}")
        except PayloadError as e:
            self.add_command(cmd.FailWorkflow(failure_to_dict(e)))
        else:
            self.add_command(cmd.CompleteWorkflow(result))
        self.closed = True

    def _run_sync_handler(self, fn: Callable[..., Any], args: list[Any]) -> None:
        try:
            fn(*args)
        except BaseException as e:
            self._fail_from_handler(e)

    def _on_handler_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            self._fail_from_handler(exc)

    def _fail_from_handler(self, exc: BaseException) -> None:
        """A signal handler raised: the run fails, as if its main code had raised."""
        if self.task_error is not None:
            return
        if isinstance(exc, _TASK_FAILURES):
            self.task_error = exc
            return
        if self.closed:
            return
        self.add_command(cmd.FailWorkflow(failure_to_dict(exc)))
        self.closed = True
        if self._main is not None and not self._main.done():
            self._main.remove_done_callback(self._on_main_done)
            self._main.cancel()

    def query(self, name: str, args: list[Any]) -> Any:
        """Run a query handler against the current state; returns the JSON payload."""
        handler = self.defn.queries.get(name)
        if handler is None:
            raise UnknownHandlerError("query", name, self.defn.name, list(self.defn.queries))
        decoded = handler.signature.decode_args(args)
        bound: Any = handler.fn.__get__(self.obj) if self.obj is not None else handler.fn
        previous = context.set_current(self)
        try:
            return to_payload(bound(*decoded), what=f"result of query {name!r}")
        finally:
            context.set_current(previous)

    # -- what workflow code calls (through duro.workflow) ----------------------------------------

    def start_activity(
        self,
        activity: Any,
        args: tuple[Any, ...],
        *,
        task_queue: str | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        result_type: Any = None,
        schedule_to_start_timeout: timedelta | None = None,
        priority: int = 0,
    ) -> asyncio.Future[Any]:
        """Resolve options (call, then ``@activity.defn``, then defaults) and schedule it."""
        adefn = activity_definition(activity) if not isinstance(activity, str) else None
        if isinstance(activity, str):
            activity_type, return_hint = activity, result_type
        elif adefn is not None:
            activity_type = adefn.name
            return_hint = result_type if result_type is not None else adefn.signature.return_hint
        else:
            raise TypeError(
                f"{activity!r} is not an activity: decorate it with @activity.defn or pass its name"
            )
        s2c = start_to_close_timeout or (adefn.start_to_close_timeout if adefn else None)
        s2c = s2c or DEFAULT_START_TO_CLOSE
        policy = retry_policy or (adefn.retry_policy if adefn else None) or RetryPolicy()
        return self.schedule_activity(
            activity_type,
            args,
            task_queue=task_queue or (adefn.task_queue if adefn else None),
            start_to_close_timeout=s2c.total_seconds(),
            schedule_to_close_timeout=seconds(
                schedule_to_close_timeout or (adefn.schedule_to_close_timeout if adefn else None)
            ),
            heartbeat_timeout=seconds(
                heartbeat_timeout or (adefn.heartbeat_timeout if adefn else None)
            ),
            retry_policy=policy.to_dict(),
            return_hint=return_hint if return_hint is not None else Any,
            schedule_to_start_timeout=seconds(
                schedule_to_start_timeout or (adefn.schedule_to_start_timeout if adefn else None)
            ),
            priority=priority,
        )

    def schedule_activity(
        self,
        activity_type: str,
        args: tuple[Any, ...],
        *,
        task_queue: str | None,
        start_to_close_timeout: float,
        schedule_to_close_timeout: float | None,
        heartbeat_timeout: float | None,
        retry_policy: dict[str, Any],
        return_hint: Any,
        schedule_to_start_timeout: float | None = None,
        priority: int = 0,
    ) -> asyncio.Future[Any]:
        self._activity_seq += 1
        seq = self._activity_seq
        payloads = to_payloads(args, what=f"argument of activity {activity_type!r}:")
        self.add_command(
            cmd.ScheduleActivity(
                seq=seq,
                activity_type=activity_type,
                args=payloads,
                task_queue=task_queue or self.info.task_queue,
                start_to_close_timeout=start_to_close_timeout,
                schedule_to_close_timeout=schedule_to_close_timeout,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=retry_policy,
                schedule_to_start_timeout=schedule_to_start_timeout,
                priority=priority,
            )
        )
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._activities[seq] = _PendingActivity(fut, activity_type, return_hint)

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and self._activities.pop(seq, None) is not None:
                self.add_command(cmd.RequestCancelActivity(seq))

        fut.add_done_callback(on_done)
        return fut

    def _start_timer(
        self,
        delay: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context_: contextvars.Context | None,
    ) -> DurableTimerHandle:
        self._timer_seq += 1
        seq = self._timer_seq
        handle = DurableTimerHandle(
            seq, self.workflow_time + delay, callback, args, self.loop, context_
        )
        self._timers[seq] = handle
        self.add_command(cmd.StartTimer(seq, delay))
        return handle

    def only_sleeping(self, at_least: float) -> bool:
        """Whether the run waits on nothing but durable timers ``at_least`` seconds away.

        Such a run needs no memory until a timer fires: the worker may drop it from its cache
        and replay it then. Anything else pending (an activity, a child, a condition a signal
        may satisfy) keeps it cached.
        """
        if (
            not self._timers
            or self._activities
            or self._children
            or self._externals
            or self._conditions
        ):
            return False
        soonest = min(handle.when() for handle in self._timers.values())
        return soonest - self.workflow_time >= at_least

    def _cancel_timer(self, handle: DurableTimerHandle) -> None:
        if self._timers.pop(handle.seq, None) is not None:
            self.add_command(cmd.CancelTimer(handle.seq))

    def wait_condition(self, fn: Callable[[], bool]) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = self.loop.create_future()
        entry = (fn, fut)
        self._conditions.append(entry)
        fut.add_done_callback(lambda _: self._conditions.remove(entry))
        return fut

    @contextlib.contextmanager
    def allow(self, kinds: tuple[str, ...]) -> Iterator[None]:
        """Lift the determinism guards of ``kinds`` (all when empty) for a block."""
        names = list(guards.iter_kinds(kinds)) or ["*"]
        for k in names:
            self.allowed_kinds[k] = self.allowed_kinds.get(k, 0) + 1
        try:
            yield
        finally:
            for k in names:
                self.allowed_kinds[k] -= 1
                if not self.allowed_kinds[k]:
                    del self.allowed_kinds[k]

    def upsert_memo(self, memo: dict[str, Any]) -> None:
        self.add_command(cmd.UpsertMemo(to_payload(memo, what="memo")))

    def upsert_search_attributes(self, attributes: dict[str, Any]) -> None:
        self.add_command(cmd.UpsertSearchAttributes(search_attributes.encode_all(attributes)))

    def record_marker(self, name: str, details: dict[str, Any]) -> None:
        self.add_command(cmd.RecordMarker(name, details))

    def patched(self, patch_id: str) -> bool:
        """True on the new code path: for new runs and for code that is past the patch point.

        Live, the first call records a ``patch:<id>`` marker and returns True. Replaying, it
        returns True only if the batch being replayed recorded that marker, so histories written
        by the old code take the old path. The answer is memoized for the rest of the run.
        """
        if patch_id in self._patches:
            return self._patches[patch_id]
        name = cmd.patch_marker_name(patch_id)
        taken = name in self.recorded_markers if self.replaying else True
        if taken:
            self.record_marker(name, {"patch_id": patch_id})
        self._patches[patch_id] = taken
        return taken

    def deprecate_patch(self, patch_id: str) -> None:
        """The patch is now unconditional: replay histories written with or without it.

        Records the marker only when replaying a batch that has it, so both kinds of history
        match; new runs record nothing.
        """
        if patch_id in self._patches:
            return
        name = cmd.patch_marker_name(patch_id)
        if self.replaying and name in self.recorded_markers:
            self.record_marker(name, {"patch_id": patch_id, "deprecated": True})
        self._patches[patch_id] = True

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.workflow_time, UTC)

    def current_info(self) -> WorkflowInfo:
        """``info`` with the history figures of the current task (stable on replay)."""
        return dataclasses.replace(
            self.info,
            history_length=self.task_history_length,
            history_size=self.task_history_size,
            continue_as_new_suggested=(
                self.task_history_length >= CONTINUE_AS_NEW_EVENTS
                or self.task_history_size >= CONTINUE_AS_NEW_BYTES
            ),
        )

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)
