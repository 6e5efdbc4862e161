"""Run the store's synchronous operations over an async driver, without threads.

The operations (``ops.py``) are plain functions: SQLite runs them directly on the loop's
thread. For PostgreSQL, ``run_op`` starts the operation in a greenlet; each statement it
executes hands the driver's coroutine back to ``run_op`` (``await_``), which awaits it on the
event loop and switches back in with the result. One code path for both stores, no thread hop
per statement. (SQLAlchemy's asyncio support works the same way.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class _OpGreenlet(greenlet.greenlet):
    """The greenlet an operation runs in; its parent is the task awaiting ``run_op``."""


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from inside an operation run by ``run_op``."""
    current = greenlet.getcurrent()
    if not isinstance(current, _OpGreenlet):
        raise RuntimeError("a store operation's statement ran outside run_op")
    parent = current.parent
    assert parent is not None
    result: T = parent.switch(awaitable)
    return result


async def run_op(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)``; every ``await_`` inside it is awaited here, on the event loop."""
    op = _OpGreenlet(fn)
    pending = op.switch(*args)
    while not op.dead:
        try:
            value = await pending
        except BaseException as e:  # the driver's error (or a cancellation) enters the op
            pending = op.throw(e)
        else:
            pending = op.switch(value)
    result: T = pending
    return result
