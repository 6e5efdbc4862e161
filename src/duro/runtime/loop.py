"""A deterministic asyncio event loop for one workflow run.

Workflow code is ordinary asyncio (tasks, ``gather``, ``wait_for``, ``sleep``), so the runtime
gives it an event loop whose only sources of progress are history events:

- ``call_soon`` appends to a FIFO queue and ``run_ready`` drains it. FIFO, never a priority or
  a shuffle: the order callbacks run in must be a function of the events alone, so replay
  produces the same commands in the same order.
- ``call_later`` / ``call_at`` start *durable timers*: the instance emits a ``StartTimer``
  command and the callback runs when ``TimerFired`` arrives. ``asyncio.sleep`` and the timeouts
  of ``asyncio.wait_for`` / ``asyncio.timeout`` are therefore durable.
- ``time()`` is the workflow time of the current activation, not a clock.

Everything that would do I/O (sockets, executors, subprocesses, signals) is refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from duro.runtime import guards

if TYPE_CHECKING:
    from duro.runtime.instance import WorkflowInstance


class DurableTimerHandle(asyncio.TimerHandle):
    """A timer whose firing is a history event; cancelling it emits ``CancelTimer``."""

    __slots__ = ("seq",)

    def __init__(
        self,
        seq: int,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: WorkflowEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self.seq = seq


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """See the module docstring. One per workflow instance; never run with ``run_forever``."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self._instance = instance
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._exception_handler: Any = None
        self._debug = False
        self._closed = False

    # -- what the runtime drives -----------------------------------------------------------------

    def run_ready(self) -> None:
        """Run queued callbacks, FIFO, until none is left."""
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def has_ready(self) -> bool:
        return bool(self._ready)

    def fire_timer(self, handle: DurableTimerHandle) -> None:
        if not handle._cancelled:
            self._ready.append(handle)

    # -- scheduling ------------------------------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        return self._refuse("loop.call_soon_threadsafe() (threads)", "thread")  # type: ignore[no-any-return]

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self._instance._start_timer(max(0.0, float(delay)), callback, args, context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self.time(), callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if isinstance(handle, DurableTimerHandle):
            self._instance._cancel_timer(handle)

    def time(self) -> float:
        return self._instance.workflow_time

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: str | None = None, context: Any = None) -> Any:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # -- loop state and error handling -----------------------------------------------------------

    def get_debug(self) -> bool:
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        self._debug = enabled

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def get_exception_handler(self) -> Any:
        return self._exception_handler

    def set_exception_handler(self, handler: Any) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        # "Task exception was never retrieved" and similar: not a failure of the run.
        pass

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._exception_handler is not None:
            self._exception_handler(self, context)

    # -- refused: these would make the run depend on the outside world ---------------------------

    def _refuse(self, what: str, kind: str = "network") -> Any:
        inst = self._instance
        if inst.guards_enabled:
            guards.violation(inst, what, kind, sys._getframe(2))
        raise RuntimeError(
            f"workflow code cannot use {what}: it is not deterministic; move it into an activity"
        )

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        return self._refuse("loop.run_in_executor() (threads)", "thread")

    def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        return self._refuse("a DNS lookup (loop.getaddrinfo)")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        return self._refuse("a network connection (loop.create_connection)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        return self._refuse("a subprocess", "subprocess")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        return self._refuse("a subprocess", "subprocess")

    def run_forever(self) -> None:
        self._refuse("run_forever")

    def run_until_complete(self, future: Any) -> Any:
        return self._refuse("run_until_complete")
