"""The activity-side API: declare activities, and read or report progress from inside one.

Activities are plain functions (async, or sync run in a thread pool) that do the side effects:
model calls, tool calls, database writes. They run at least once: a crash or timeout retries
them. ``info().idempotency_key`` is stable across attempts; pass it to external APIs so a retry
has the effect of one call.

Inside an activity, ``info()`` and ``heartbeat()`` find the running attempt through a
``ContextVar`` that the worker sets (and copies into the thread of a sync activity).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, ParamSpec, TypeVar, overload

from duro.converter import signature_of
from duro.definitions import ActivityDefinition, set_activity_definition
from duro.retry import RetryPolicy
from duro.runtime import context as _runtime_context

__all__ = [
    "ActivityInfo",
    "defn",
    "heartbeat",
    "in_activity",
    "info",
    "is_cancelled",
    "raise_complete_async",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityInfo:
    """What ``activity.info()`` returns for the running attempt."""

    activity_id: str
    activity_type: str
    attempt: int
    """1 for the first attempt."""
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    scheduled_time: datetime
    started_time: datetime
    start_to_close_timeout: timedelta
    heartbeat_details: Any
    """Details of the last heartbeat of a previous attempt, to resume from; None if none."""
    task_token: str = ""
    """Identifies this attempt for ``client.complete_activity`` (asynchronous completion)."""

    @property
    def idempotency_key(self) -> str:
        """``workflow_id/run_id/activity_id``: the same for every attempt of this activity."""
        return f"{self.workflow_id}/{self.run_id}/{self.activity_id}"


class _ActivityContext:
    """Set by the worker for the duration of one attempt."""

    def __init__(
        self,
        info: ActivityInfo | Callable[[], ActivityInfo],
        heartbeat: Callable[[Any], None],
        is_cancelled: Callable[[], bool],
    ) -> None:
        self._info = info
        self.heartbeat = heartbeat
        self.is_cancelled = is_cancelled

    @property
    def info(self) -> ActivityInfo:
        """Built on first use: most activities never ask, and an attempt should not pay."""
        if not isinstance(self._info, ActivityInfo):
            self._info = self._info()
        return self._info


_current: contextvars.ContextVar[_ActivityContext | None] = contextvars.ContextVar(
    "duro_activity", default=None
)


def _ctx() -> _ActivityContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("not in an activity: activity.info()/heartbeat() work only inside one")
    return ctx


def info() -> ActivityInfo:
    """Ids, attempt number, timeouts and last heartbeat details of the running attempt."""
    return _ctx().info


def heartbeat(details: Any = None) -> None:
    """Report progress; ``details`` are kept so a retried attempt can resume from them.

    Cheap to call often: the worker sends at most a few heartbeats per second to the store.
    """
    _ctx().heartbeat(details)


def is_cancelled() -> bool:
    """True once the activity was cancelled (its workflow cancelled it, or its lease was lost)."""
    return _ctx().is_cancelled()


class CompleteAsync(BaseException):
    """Raised by ``raise_complete_async`` (a ``BaseException``: ``except Exception`` skips it)."""


def raise_complete_async() -> NoReturn:
    """Return without a result: someone else completes this attempt later.

    Hand ``info().task_token`` to whoever will finish the work (a human task system, a
    webhook); they call ``client.complete_activity(token, result)`` or
    ``client.fail_activity(token, error)``. The attempt stays bounded by its
    ``start_to_close_timeout`` (set a long one) and, if set, its heartbeat timeout
    (``client.heartbeat_activity(token)``); a worker stopping no longer affects it.
    """
    _ctx()  # fail clearly outside an activity
    raise CompleteAsync()


def in_activity() -> bool:
    return _current.get() is not None


class _ActivityFunction:
    """What ``@activity.defn`` returns: the function, plus awaitable from workflow code.

    Called outside a workflow it is the plain function (tests call it directly). Called inside
    workflow code it schedules the activity durably with the decorator's options.
    """

    def __init__(self, fn: Callable[..., Any], defn: ActivityDefinition) -> None:
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", defn.name)
        self.__qualname__ = getattr(fn, "__qualname__", defn.name)
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        set_activity_definition(self, defn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _runtime_context.current_or_none() is not None:
            if kwargs:
                raise TypeError("activities take positional arguments only in workflow code")
            return _runtime_context.current().start_activity(self, args)
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<activity {self.__qualname__}>"


@overload
def defn(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def defn(
    *,
    name: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    task_queue: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def defn(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    task_queue: str | None = None,
) -> Any:
    """Declare an activity, with default options for every call from workflow code.

    Args:
        name: The activity type name in history; default the function name.
        start_to_close_timeout: Limit of one attempt; default 5 minutes.
        schedule_to_close_timeout: Limit of all attempts together; default none.
        schedule_to_start_timeout: Longest wait of an attempt for a worker (no worker for the
            queue, or all busy); then the activity times out without retrying. Default none.
        heartbeat_timeout: Longest gap between heartbeats; default none.
        retry_policy: Default ``RetryPolicy()``: 1 s doubling to 100 s, unlimited attempts.
        task_queue: Queue of the workers that run it; default the workflow's queue.
    """

    def decorate(f: Callable[..., Any]) -> Any:
        if not callable(f):
            raise TypeError(f"@activity.defn goes on a function, not {f!r}")
        adefn = ActivityDefinition(
            name=name or f.__name__,
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            signature=signature_of(f),
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            schedule_to_start_timeout=schedule_to_start_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry_policy,
            task_queue=task_queue,
        )
        return _ActivityFunction(f, adefn)

    return decorate(fn) if fn is not None else decorate
