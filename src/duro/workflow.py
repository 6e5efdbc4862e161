"""The workflow-side API: what workflow code imports.

Workflow code is replayed after a crash, so it must decide the same things again from the same
history. Use these functions instead of clocks, randomness and I/O: ``now()``, ``random()``,
``uuid4()``, activities for anything with side effects, ``sleep()`` (or ``asyncio.sleep``) for
durable timers. Each function hands off to the running instance and fails clearly outside one.

Example::

    @workflow.defn
    class Agent:
        def __init__(self) -> None:
            self.approved = False

        @workflow.run
        async def run(self, task: str) -> str:
            plan = await workflow.execute_activity(call_model, task)
            await workflow.wait_condition(lambda: self.approved)
            return plan

        @workflow.signal
        def approve(self) -> None:
            self.approved = True
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random as _random
import sys
import uuid as _uuid
from collections.abc import Callable, Iterator, MutableMapping
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn, ParamSpec, Protocol, TypeVar, overload

from duro.converter import Signature, signature_of, to_payloads
from duro.definitions import (
    WorkflowDefinition,
    handler_mark,
    handler_name,
    make_handler,
    mark_handler,
    set_validator,
    set_workflow_definition,
)
from duro.retry import RetryPolicy
from duro.runtime import context as _context
from duro.runtime import guards as _guards
from duro.runtime.instance import ChildWorkflowHandle, ContinueAsNewRequest, WorkflowInfo
from duro.runtime.instance import seconds as _seconds
from duro.search_attributes import SearchAttributeValue

__all__ = [
    "ActivityHandle",
    "ChildWorkflowHandle",
    "ExternalWorkflowHandle",
    "UpdateMethod",
    "WorkflowInfo",
    "continue_as_new",
    "defn",
    "deprecate_patch",
    "execute_activity",
    "execute_child_workflow",
    "get_external_workflow_handle",
    "in_workflow",
    "info",
    "logger",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "signal",
    "sleep",
    "start_activity",
    "start_child_workflow",
    "unsafe",
    "update",
    "upsert_memo",
    "upsert_search_attributes",
    "uuid4",
    "wait_condition",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

ActivityHandle = asyncio.Future
"""``start_activity`` returns a future of the activity's result: await it, or cancel it."""


# -- decorators ---------------------------------------------------------------------------------


@overload
def defn(target: T, /) -> T: ...


@overload
def defn(
    *,
    name: str | None = None,
    on_nondeterminism: Literal["fail_task", "fail_run"] = "fail_task",
    versioning: Literal["auto_upgrade", "pinned"] = "auto_upgrade",
) -> Callable[[T], T]: ...


def defn(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    on_nondeterminism: Literal["fail_task", "fail_run"] = "fail_task",
    versioning: Literal["auto_upgrade", "pinned"] = "auto_upgrade",
) -> Any:
    """Declare a workflow: a class with one ``@workflow.run`` method, or an async function.

    Args:
        name: The workflow type name stored in history; default the class or function name.
            Renaming the class later keeps old runs working only if ``name`` stays the same.
        on_nondeterminism: When replay diverges from history, ``fail_task`` (default) fails
            the workflow task, which is retried until fixed code is deployed; ``fail_run``
            fails the run at once.
        versioning: ``auto_upgrade`` (default): any worker advances the run, so new code must
            replay its history (use ``patched``). ``pinned``: only workers with the ``build_id``
            that started the run advance it, so old code finishes old runs.
    """
    if on_nondeterminism not in ("fail_task", "fail_run"):
        raise ValueError(
            f"on_nondeterminism must be 'fail_task' or 'fail_run', not {on_nondeterminism!r}"
        )
    if versioning not in ("auto_upgrade", "pinned"):
        raise ValueError(f"versioning must be 'auto_upgrade' or 'pinned', not {versioning!r}")

    def decorate(obj: Any) -> Any:
        module = sys.modules.get(getattr(obj, "__module__", ""), None)
        if module is not None:
            _guards.rebind(vars(module))  # catch `from time import time` in this module too
        options: dict[str, Any] = {
            "static_findings": tuple(_guards.scan(obj)),
            "fail_run_on_nondeterminism": on_nondeterminism == "fail_run",
            "pinned": versioning == "pinned",
        }
        if inspect.isclass(obj):
            defn = _class_definition(obj, name or obj.__name__)
            set_workflow_definition(obj, dataclasses.replace(defn, **options))
        elif inspect.iscoroutinefunction(obj):
            defn = WorkflowDefinition(
                name=name or obj.__name__,
                cls=None,
                run_fn=obj,
                run_signature=_signature(obj, skip_self=False),
            )
            set_workflow_definition(obj, dataclasses.replace(defn, **options))
        else:
            raise TypeError(f"@workflow.defn goes on a class or an async function, not {obj!r}")
        return obj

    return decorate(target) if target is not None else decorate


def _signature(fn: Callable[..., Any], *, skip_self: bool) -> Signature:
    return signature_of(fn, skip_self)


def _class_definition(cls: type, name: str) -> WorkflowDefinition:
    run_fns = []
    signals = {}
    queries = {}
    updates = {}
    for attr in dir(cls):
        member = getattr(cls, attr, None)
        mark = handler_mark(member)
        if mark is None:
            continue
        kind, handler_name = mark
        assert callable(member)
        if kind == "run":
            run_fns.append(member)
        elif kind == "signal":
            signals[handler_name] = make_handler(handler_name, member, skip_self=True)
        elif kind == "update":
            updates[handler_name] = make_handler(handler_name, member, skip_self=True)
        elif kind == "query":
            if inspect.iscoroutinefunction(member):
                raise TypeError(f"query {cls.__name__}.{attr} must be a plain (non-async) method")
            queries[handler_name] = make_handler(handler_name, member, skip_self=True)
    if len(run_fns) != 1:
        raise TypeError(
            f"workflow class {cls.__name__} needs exactly one @workflow.run method, "
            f"found {len(run_fns)}"
        )
    run_fn = run_fns[0]
    if not inspect.iscoroutinefunction(run_fn):
        raise TypeError(f"{cls.__name__}.{run_fn.__name__}: @workflow.run must be async")
    try:
        inspect.signature(cls).bind()
    except TypeError as e:
        raise TypeError(
            f"workflow class {cls.__name__} must be constructible without arguments"
        ) from e
    return WorkflowDefinition(
        name=name,
        cls=cls,
        run_fn=run_fn,
        run_signature=_signature(run_fn, skip_self=True),
        signals=signals,
        queries=queries,
        updates=updates,
    )


def run(fn: F) -> F:
    """Mark the async method that is the workflow's body; its return value is the result."""
    mark_handler(fn, "run", fn.__name__)
    return fn


@overload
def signal(fn: F, /) -> F: ...


@overload
def signal(*, name: str | None = None) -> Callable[[F], F]: ...


def signal(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method that handles a signal (sync or async). Default name: the method name."""

    def decorate(f: F) -> F:
        mark_handler(f, "signal", name)
        return f

    return decorate(fn) if fn is not None else decorate


V = TypeVar("V", bound=Callable[..., Any])
R_co = TypeVar("R_co", covariant=True)


class UpdateMethod(Protocol[P, R_co]):
    """What ``@workflow.update`` returns: the method unchanged, plus ``.validator``."""

    __name__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    # Like a function: read from the class it stays itself (``Agent.ask`` for the client);
    # read from an instance it is the bound method (``self.ask(...)`` in workflow code).
    @overload
    def __get__(self, obj: None, objtype: type | None = None, /) -> UpdateMethod[P, R_co]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None, /) -> Callable[..., R_co]: ...

    def validator(self, fn: V, /) -> V:
        """Register ``fn`` (same arguments, returns None) as the update's validator."""
        ...


@overload
def update(fn: Callable[P, R], /) -> UpdateMethod[P, R]: ...


@overload
def update(*, name: str | None = None) -> Callable[[Callable[P, R]], UpdateMethod[P, R]]: ...


def update(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method that handles an update: like a signal, but the caller gets its result.

    The handler may be async and await activities and timers. Add a validator with
    ``@<handler>.validator``: a plain method taking the same arguments, run (read-only) before
    the update is accepted; if it raises, the caller gets the error and history is untouched.

    Example::

        @workflow.update
        async def ask(self, question: str) -> str:
            return await workflow.execute_activity(answer, question)

        @ask.validator
        def _check_ask(self, question: str) -> None:
            if not question.strip():
                raise ValueError("empty question")
    """

    def decorate(f: Callable[..., Any]) -> Any:
        mark_handler(f, "update", name)

        def validator(v: V) -> V:
            set_validator(f, v)
            return v

        f.validator = validator  # type: ignore[attr-defined]
        return f

    return decorate(fn) if fn is not None else decorate


@overload
def query(fn: F, /) -> F: ...


@overload
def query(*, name: str | None = None) -> Callable[[F], F]: ...


def query(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a plain method that answers a query from the workflow's state; it must not mutate."""

    def decorate(f: F) -> F:
        mark_handler(f, "query", name)
        return f

    return decorate(fn) if fn is not None else decorate


# -- activities ---------------------------------------------------------------------------------


def start_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
    schedule_to_start_timeout: timedelta | None = None,
    priority: int = 0,
) -> asyncio.Future[Any]:
    """Schedule an activity durably and return a future of its (decoded) result.

    Options not given here come from the activity's ``@activity.defn``, then the defaults:
    ``start_to_close_timeout`` 5 minutes, the default ``RetryPolicy`` (unlimited attempts),
    the workflow's task queue. Cancelling the future cancels the activity.

    Args:
        activity: An ``@activity.defn`` function, or an activity type name.
        result_type: The type to decode the result into, when ``activity`` is a name.
        priority: Attempts of higher priority start first on their queue. Default 0.
    """
    return _context.current().start_activity(
        activity,
        args,
        task_queue=task_queue,
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        result_type=result_type,
        schedule_to_start_timeout=schedule_to_start_timeout,
        priority=priority,
    )


async def execute_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
    schedule_to_start_timeout: timedelta | None = None,
    priority: int = 0,
) -> Any:
    """Run an activity durably and return its result (``start_activity`` then await).

    Raises:
        ActivityError: the activity failed after its last attempt; ``.cause`` says why.
    """
    return await start_activity(
        activity,
        *args,
        task_queue=task_queue,
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        result_type=result_type,
        schedule_to_start_timeout=schedule_to_start_timeout,
        priority=priority,
    )


# -- child workflows ------------------------------------------------------------------------------


def start_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    parent_close_policy: Literal["terminate", "request_cancel", "abandon"] = "terminate",
) -> ChildWorkflowHandle:
    """Start a child workflow (a sub-agent) and return its handle; await it for the result.

    The child is a full workflow run of its own (its own history, visible in ``list``); its
    outcome is recorded in this run's history. ``await handle.wait_started()`` gives its run
    id (raises ``WorkflowAlreadyStartedError`` if ``id`` is taken).

    Args:
        id: The child's workflow id; default ``<parent id>/<type>-<n>`` (deterministic).
        task_queue: Default the parent's.
        parent_close_policy: What happens to the child if this run closes first: ``terminate``
            (default), ``request_cancel`` or ``abandon`` (it runs on alone).
    """
    return _context.current().start_child(
        workflow,
        args,
        workflow_id=id,
        task_queue=task_queue,
        parent_close_policy=parent_close_policy,
    )


async def execute_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    parent_close_policy: Literal["terminate", "request_cancel", "abandon"] = "terminate",
) -> Any:
    """Start a child workflow and wait for its result.

    Raises:
        ChildWorkflowError: the child failed, was canceled or terminated (``.cause``).
    """
    return await start_child_workflow(
        workflow, *args, id=id, task_queue=task_queue, parent_close_policy=parent_close_policy
    )


class ExternalWorkflowHandle:
    """Another workflow, seen from workflow code: signal it or ask it to cancel.

    Both are recorded in this run's history and delivered in the same transaction; awaiting
    them raises ``ExternalWorkflowError`` if the target does not exist or is closed.
    """

    def __init__(self, workflow_id: str, run_id: str | None = None) -> None:
        self.id = workflow_id
        self.run_id = run_id

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None:
        name = handler_name(signal, "signal")
        await _context.current().signal_external(self.id, self.run_id, name, args)

    async def cancel(self) -> None:
        await _context.current().cancel_external(self.id, self.run_id)


def get_external_workflow_handle(
    workflow_id: str, *, run_id: str | None = None
) -> ExternalWorkflowHandle:
    """A handle to another workflow (its current run unless ``run_id``), to signal or cancel."""
    _context.current()
    return ExternalWorkflowHandle(workflow_id, run_id)


# -- time, randomness, waiting ------------------------------------------------------------------


def now() -> datetime:
    """The current workflow time (UTC): the time of the current workflow task, stable on replay."""
    return _context.current().now()


def random() -> _random.Random:
    """A ``random.Random`` seeded from the run: the same numbers on every replay."""
    return _context.current().random


def uuid4() -> _uuid.UUID:
    """A version-4 UUID drawn from ``random()``: the same value on every replay."""
    return _context.current().uuid4()


def info() -> WorkflowInfo:
    """Ids, type, task queue, start time and history size of the running workflow.

    ``continue_as_new_suggested`` turns true past 10,000 events or 10 MiB of history: a
    long-lived agent should then ``continue_as_new`` with its essential state.
    """
    return _context.current().current_info()


def continue_as_new(*args: Any) -> NoReturn:
    """End this run and start a fresh one of the same workflow id with ``args``.

    For conversations and loops that never end: the new run starts with an empty history.
    Signals and updates that arrived during the closing task are delivered to the new run;
    ``handle.result()`` follows the chain to the last run. Raises a ``BaseException``, so
    call it from the run method (not from a handler) and do not catch it.
    """
    _context.current()  # fail clearly outside a workflow
    raise ContinueAsNewRequest(to_payloads(args, what="argument of continue_as_new:"))


def in_workflow() -> bool:
    """True while workflow code runs (False in activities, clients and tests)."""
    return _context.current_or_none() is not None


async def sleep(duration: timedelta | float) -> None:
    """Sleep durably: a timer in the store, no memory held while it runs, survives restarts."""
    await asyncio.sleep(_seconds(duration) or 0.0)


async def wait_condition(
    fn: Callable[[], bool], *, timeout: timedelta | float | None = None
) -> None:
    """Wait until ``fn()`` is true; it is checked each time the workflow's state may change.

    Raises:
        TimeoutError: ``timeout`` (a durable timer) passed first.
    """
    fut = _context.current().wait_condition(fn)
    seconds = _seconds(timeout)
    if seconds is None:
        await fut
    else:
        await asyncio.wait_for(fut, seconds)


def upsert_search_attributes(attributes: dict[str, SearchAttributeValue]) -> None:
    """Set (None: remove) search attributes of this run, to find it with a visibility query.

    Example: ``workflow.upsert_search_attributes({"Stage": "awaiting-approval"})``, then
    ``client.list_workflows("Stage = 'awaiting-approval'")``. Recorded in history.
    """
    _context.current().upsert_search_attributes(dict(attributes))


def upsert_memo(memo: dict[str, Any]) -> None:
    """Set (None: remove) memo entries: notes shown by ``describe``, not indexed for queries."""
    _context.current().upsert_memo(dict(memo))


# -- versioning ---------------------------------------------------------------------------------


def patched(patch_id: str) -> bool:
    """Guard a change to workflow code: True on the new path, False when replaying old runs.

    Runs that passed this point before the change replay the old path; new runs (and runs that
    reach this point after the deploy) take the new path and record a marker. See
    docs/determinism.md for the whole procedure.

    Example::

        if workflow.patched("summarize-with-gpt5"):
            summary = await summarize_v2(text)
        else:
            summary = await summarize(text)
    """
    return _context.current().patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Step two of a patch: the new path is unconditional, old markers still replay.

    Replace ``if workflow.patched(id): new else: old`` by ``workflow.deprecate_patch(id); new``
    once no run that took the old path is still open; remove the call once no run that
    recorded the marker is open.
    """
    _context.current().deprecate_patch(patch_id)


# -- escape hatch ------------------------------------------------------------------------------


class _Unsafe:
    """``workflow.unsafe``: deliberate exceptions to the determinism rules."""

    @contextlib.contextmanager
    def allow(self, *kinds: str) -> Iterator[None]:
        """Let the guarded calls of ``kinds`` through for this block (all kinds if none given).

        Kinds: ``time``, ``random``, ``network``, ``file``, ``subprocess``, ``thread``. Use it
        only for calls whose result does not steer the workflow (say, a debug print to a file):
        replay will not repeat their answers.
        """
        with _context.current().allow(kinds):
            yield

    @staticmethod
    def is_replaying() -> bool:
        """True while the code re-runs recorded history (e.g. to skip side-channel metrics)."""
        return _context.current().replaying


unsafe = _Unsafe()


# -- replay-aware logging -----------------------------------------------------------------------


class _ReplayAwareLogger(logging.LoggerAdapter[logging.Logger]):
    """Logs only when the code runs live, not when it replays, and tags records with ids."""

    def isEnabledFor(self, level: int) -> bool:
        inst = _context.current_or_none()
        if inst is not None and inst.replaying:
            return False
        return self.logger.isEnabledFor(level)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        inst = _context.current_or_none()
        if inst is not None:
            extra = dict(kwargs.get("extra") or {})
            extra.setdefault("workflow_id", inst.info.workflow_id)
            extra.setdefault("run_id", inst.info.run_id)
            kwargs["extra"] = extra
            msg = f"[{inst.info.workflow_type} {inst.info.workflow_id}] {msg}"
        return msg, kwargs


logger = _ReplayAwareLogger(logging.getLogger("duro.workflow"), {})
"""Use instead of ``logging`` in workflow code: silent during replay, tagged with run ids."""
