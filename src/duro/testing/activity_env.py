"""``ActivityEnvironment``: call one activity function as a worker would, without a worker.

A worker runs an attempt with an ``activity._ActivityContext`` in the ``activity._current``
context variable, which is how ``activity.info()``, ``heartbeat()`` and ``is_cancelled()``
find it. This sets the same context around a direct call, with an ``ActivityInfo`` the test
chooses (say attempt 3, resuming from heartbeat details), records the heartbeats, and cancels
the attempt on request, so an activity's retry, resume and cancellation paths are unit-tested
in microseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from duro import activity as activity_api
from duro.activity import ActivityInfo
from duro.converter import to_payload
from duro.definitions import DEFAULT_START_TO_CLOSE, activity_definition

__all__ = ["ActivityEnvironment"]

T = TypeVar("T")


def _default_info(activity_type: str = "test_activity", **changes: Any) -> ActivityInfo:
    """An ``ActivityInfo`` as a first attempt of a test workflow would see it."""
    now = datetime.now(UTC)
    info = ActivityInfo(
        activity_id="1",
        activity_type=activity_type,
        attempt=1,
        namespace="default",
        workflow_id="test-workflow",
        run_id="test-run",
        workflow_type="TestWorkflow",
        task_queue="default",
        scheduled_time=now,
        started_time=now,
        start_to_close_timeout=DEFAULT_START_TO_CLOSE,
        heartbeat_details=None,
    )
    return dataclasses.replace(info, **changes)


class ActivityEnvironment:
    """Runs activity functions directly, with a chosen ``info``, capturing heartbeats.

    Example::

        env = ActivityEnvironment(attempt=2, heartbeat_details={"page": 3})
        pages = await env.run(crawl, "https://example.com")
        assert env.heartbeats[-1] == {"page": 9}
    """

    def __init__(
        self,
        *,
        attempt: int = 1,
        heartbeat_details: Any = None,
        info: ActivityInfo | None = None,
        on_heartbeat: Callable[[Any], None] | None = None,
    ) -> None:
        """Configure the attempt that ``run`` plays.

        Args:
            attempt: The attempt number ``info().attempt`` reports. Default 1.
            heartbeat_details: What a previous attempt left (``info().heartbeat_details``),
                to test resuming. Default None.
            info: The whole ``ActivityInfo`` instead (``attempt`` and ``heartbeat_details``
                must then be left out). By default ids are test placeholders and
                ``activity_type`` and ``start_to_close_timeout`` come from the activity run.
            on_heartbeat: Called with each heartbeat's details, in the activity's thread; it
                may call ``cancel()`` (e.g. to cancel after the third heartbeat).
        """
        if info is not None and (attempt != 1 or heartbeat_details is not None):
            raise ValueError("pass either info, or attempt/heartbeat_details, not both")
        self._explicit_info = info
        self.info: ActivityInfo = info or _default_info(
            attempt=attempt, heartbeat_details=heartbeat_details
        )
        """The info of the attempt (after ``run``, the one the activity saw)."""
        self.heartbeats: list[Any] = []
        """Details of every ``activity.heartbeat()`` call, in order, as passed."""
        self._on_heartbeat = on_heartbeat
        self._cancelled = False
        self._task: asyncio.Task[Any] | None = None
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Cancel the attempt, as a worker does when its workflow cancels the activity.

        ``activity.is_cancelled()`` turns true; an async activity also gets
        ``asyncio.CancelledError`` at its next await (at its first, if it has not started).
        Safe from any thread and from ``on_heartbeat``.
        """
        with self._lock:
            self._cancelled = True
            task = self._task
        if task is None or task.done():
            return
        loop = task.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` inside an activity context; returns what ``fn`` returns.

        For an async activity that is an awaitable: ``await env.run(fetch, url)``. ``fn`` is an
        ``@activity.defn`` function or a plain one.
        """
        defn = activity_definition(fn)
        target: Callable[..., Any] = defn.fn if defn is not None else fn
        if self._explicit_info is None:
            changes: dict[str, Any] = {
                "activity_type": defn.name if defn is not None else getattr(fn, "__name__", "?")
            }
            if defn is not None and defn.start_to_close_timeout is not None:
                changes["start_to_close_timeout"] = defn.start_to_close_timeout
            self.info = dataclasses.replace(self.info, **changes)
        ctx = activity_api._ActivityContext(self.info, self._heartbeat, lambda: self._cancelled)
        if inspect.iscoroutinefunction(target):
            return cast(T, self._run_async(target, args, ctx))
        token = activity_api._current.set(ctx)
        try:
            return cast(T, target(*args))
        finally:
            activity_api._current.reset(token)

    async def _run_async(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        ctx: activity_api._ActivityContext,
    ) -> Any:
        # The task copies the current context, so set the activity's context around creating it.
        token = activity_api._current.set(ctx)
        try:
            task = asyncio.ensure_future(fn(*args))
        finally:
            activity_api._current.reset(token)
        with self._lock:
            self._task = task
            cancelled = self._cancelled
        if cancelled:
            task.cancel()
        try:
            return await task
        finally:
            with self._lock:
                self._task = None

    def _heartbeat(self, details: Any) -> None:
        # A worker drops details that are not JSON with a warning; raising here shows the
        # mistake in the test that makes it.
        to_payload(details, what="heartbeat details")
        self.heartbeats.append(details)
        if self._on_heartbeat is not None:
            self._on_heartbeat(details)
