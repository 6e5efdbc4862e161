"""Schedules: an agent that runs on its own, on a timetable.

Scenario: a monitoring agent checks a status page every few seconds (here every 0.3 s; in real
life ``ScheduleSpec(cron=("0 * * * *",))`` or ``interval=3600``). The schedule lives in the
store: any worker of the namespace fires it, each nominal time starts at most one run (workflow
id ``<schedule id>-<time>``), and every run carries the ``ScheduleId`` search attribute. The
example lets it fire a few times, pauses it, triggers a run by hand, backfills the runs of three
past days of a daily digest schedule, and deletes both.

Run: ``.venv/bin/python -m examples.concepts.schedules [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime

from duro import Client, OverlapPolicy, ScheduleSpec, Worker, activity, workflow


@activity.defn
async def check_status(service: str) -> str:
    return f"{service}: all systems operational"


@workflow.defn
async def status_check(service: str) -> str:
    report: str = await check_status(service)
    return report


async def main(db_path: str) -> None:
    tag = uuid.uuid4().hex[:6]
    monitor_id, digest_id = f"monitor-{tag}", f"digest-{tag}"
    async with (
        await Client.connect(f"sqlite:///{db_path}") as client,
        Worker(client, workflows=[status_check], activities=[check_status]),
    ):
        monitor = await client.create_schedule(
            monitor_id,
            status_check,
            "api.example.com",
            spec=ScheduleSpec(interval=0.3),
            overlap=OverlapPolicy.SKIP,  # a check still running? skip this time
        )
        query = f"ScheduleId = '{monitor_id}' AND Status = 'Completed'"
        while await client.count_workflows(query) < 3:
            await asyncio.sleep(0.05)
        await monitor.pause("maintenance window")
        info = await monitor.describe()
        print(f"{monitor_id}: fired {info.fired}, paused={info.paused} ({info.note})")
        assert info.paused
        assert info.fired >= 3

        manual = await monitor.trigger()  # a run now, even while paused
        await client.get_workflow_handle(manual).result(timeout=10)
        print(f"triggered by hand: {manual}")

        digest = await client.create_schedule(
            digest_id,
            status_check,
            "billing",
            spec=ScheduleSpec(cron=("0 9 * * *",), timezone="Europe/Paris"),
        )
        started = await digest.backfill(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, 23, tzinfo=UTC)
        )
        print(f"backfilled: {started}")
        assert started == [f"{digest_id}-2026-01-0{d}T08:00:00Z" for d in (1, 2, 3)]
        again = await digest.backfill(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, 23, tzinfo=UTC)
        )
        assert again == []  # a nominal time never runs twice
        for wid in started:
            await client.get_workflow_handle(wid).result(timeout=10)

        runs = await client.list_workflows(f"ScheduleId = '{monitor_id}'")
        print(f"{len(runs)} run(s) of {monitor_id}, e.g. {runs[-1].workflow_id}")
        assert len({r.workflow_id for r in runs}) == len(runs)
        await monitor.delete()
        await digest.delete()
        ids = [s.schedule_id for s in await client.list_schedules()]
        assert monitor_id not in ids
        assert digest_id not in ids


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
