"""Schedules from the client's side: create them, and steer them through a handle.

Example::

    await client.create_schedule(
        "daily-digest",
        DigestAgent.run,
        "team-a",
        spec=ScheduleSpec(cron=("0 9 * * 1-5",), timezone="Europe/Paris", jitter=60),
        overlap=OverlapPolicy.SKIP,
    )
    await client.get_schedule_handle("daily-digest").trigger()

Workers fire due schedules (any worker of the namespace; a nominal time starts at most one
run: its workflow id is ``<schedule id>-<time>``). Runs carry the ``ScheduleId`` search
attribute: ``client.list_workflows("ScheduleId = 'daily-digest'")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from duro.engine.schedules import OverlapPolicy, ScheduleAction, ScheduleSpec, next_after
from duro.store.protocol import ScheduleInfo

if TYPE_CHECKING:
    from duro.client import Client

__all__ = ["OverlapPolicy", "ScheduleAction", "ScheduleHandle", "ScheduleInfo", "ScheduleSpec"]


def upcoming(info: ScheduleInfo, count: int = 5) -> list[float]:
    """The next ``count`` nominal times (empty if paused or ended)."""
    if info.paused or info.next_nominal is None:
        return []
    times = [info.next_nominal]
    while len(times) < count:
        t = next_after(info.spec, times[-1])
        if t is None:
            break
        times.append(t)
    return times


@dataclass
class ScheduleHandle:
    client: Client
    id: str

    async def describe(self) -> ScheduleInfo:
        return await self.client.store.describe_schedule(self.client.namespace, self.id)

    async def pause(self, note: str = "") -> None:
        """Stop firing until ``unpause``; times passed meanwhile are skipped."""
        await self.client.store.pause_schedule(self.client.namespace, self.id, True, note)

    async def unpause(self, note: str = "") -> None:
        await self.client.store.pause_schedule(self.client.namespace, self.id, False, note)

    async def trigger(self) -> str:
        """Start a run now, outside the schedule's times; returns its workflow id."""
        return await self.client.store.trigger_schedule(self.client.namespace, self.id)

    async def backfill(self, start: datetime, end: datetime) -> list[str]:
        """Start the runs of every time in ``[start, end]`` not run already (workflow ids)."""
        if end < start:
            raise ValueError("backfill end is before its start")
        return await self.client.store.backfill_schedule(
            self.client.namespace, self.id, start.timestamp(), end.timestamp()
        )

    async def delete(self) -> None:
        """Delete the schedule (runs it started are not affected)."""
        await self.client.store.delete_schedule(self.client.namespace, self.id)
