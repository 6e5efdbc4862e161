"""In-process change notification: wake pollers the moment a commit makes work for them.

Topics are hashable keys (``("workflow", namespace, queue)``, ``("closed", run_id)``...). Each
topic has a version counter; a poller reads the versions before it queries and then waits
``since`` them, so a notification between the query and the wait is never lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Mapping
from typing import Any


class Notifier:
    """Must be used from the event loop thread that owns it."""

    def __init__(self) -> None:
        self._versions: dict[Hashable, int] = {}
        self._epoch = 0  # bumped by notify_all: every topic counts as changed
        self._waiters: dict[Hashable, set[asyncio.Future[None]]] = {}

    def version(self, topic: Hashable) -> int:
        return self._versions.get(topic, 0) + self._epoch

    def notify(self, topic: Hashable) -> None:
        self._versions[topic] = self._versions.get(topic, 0) + 1
        for fut in self._waiters.pop(topic, ()):
            if not fut.done():
                fut.set_result(None)

    def notify_all(self) -> None:
        """Something changed that we cannot attribute (another process committed)."""
        self._epoch += 1
        waiters, self._waiters = self._waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    async def wait(
        self, topics: Iterable[Hashable], since: Mapping[Any, int], timeout: float
    ) -> None:
        """Return when any topic's version passed ``since``, or after ``timeout`` seconds."""
        topics = list(topics)
        if any(self.version(t) != since.get(t, -1) for t in topics):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for t in topics:
            self._waiters.setdefault(t, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            for t in topics:
                waiters = self._waiters.get(t)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[t]
