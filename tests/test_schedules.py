"""Schedules: cron and interval specs, overlap policies, pause, trigger, backfill, and a month
of daily runs under duro.testing's time skipping."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from duro import (
    Client,
    OverlapPolicy,
    ScheduleError,
    ScheduleSpec,
    Worker,
    activity,
    workflow,
)
from duro.engine.schedules import (
    FireAction,
    decide_fire,
    jitter_delay,
    next_after,
    occurrences,
    workflow_id_for,
)
from duro.testing import WorkflowEnvironment


def ts(*args: int, tz: str = "UTC") -> float:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


# -- the pure rules --------------------------------------------------------------------------------


def test_cron_in_a_time_zone_and_intervals() -> None:
    spec = ScheduleSpec(cron=("0 9 * * 1-5",), timezone="Europe/Paris")
    friday_10am = ts(2026, 11, 27, 10, 0, tz="Europe/Paris")
    assert next_after(spec, friday_10am) == ts(2026, 11, 30, 9, 0, tz="Europe/Paris")  # Monday
    every = ScheduleSpec(interval=300, offset=60)
    assert next_after(every, 1000.0) == 1260.0
    both = ScheduleSpec(cron=("*/10 * * * *",), interval=240)
    assert next_after(both, ts(2026, 1, 1, 0, 0)) == ts(2026, 1, 1, 0, 4)


def test_next_time_is_strictly_later_despite_float_rounding() -> None:
    spec = ScheduleSpec(interval=0.2)
    t = 1795572480.8000002
    for _ in range(1000):
        nxt = next_after(spec, t)
        assert nxt is not None and nxt > t
        t = nxt


def test_start_end_and_occurrences() -> None:
    spec = ScheduleSpec(interval=3600, start_at=ts(2026, 1, 1, 5, 30), end_at=ts(2026, 1, 1, 9, 0))
    times = occurrences(spec, ts(2026, 1, 1), ts(2026, 1, 2))
    assert times == [ts(2026, 1, 1, h) for h in (6, 7, 8, 9)]
    assert next_after(spec, ts(2026, 1, 1, 9)) is None


def test_jitter_is_deterministic_and_bounded() -> None:
    a = jitter_delay("s", 1000.0, 30.0)
    assert a == jitter_delay("s", 1000.0, 30.0)
    assert 0 <= a < 30
    assert jitter_delay("s", 1000.0, 0) == 0
    assert workflow_id_for("digest", ts(2026, 1, 2, 9)) == "digest-2026-01-02T09:00:00Z"


def test_overlap_decisions() -> None:
    assert decide_fire(OverlapPolicy.SKIP, previous_open=False) == FireAction.START
    assert decide_fire(OverlapPolicy.SKIP, previous_open=True) == FireAction.SKIP
    assert decide_fire(OverlapPolicy.BUFFER_ONE, previous_open=True) == FireAction.BUFFER
    assert decide_fire(OverlapPolicy.ALLOW_ALL, previous_open=True) == FireAction.START
    assert (
        decide_fire(OverlapPolicy.CANCEL_OTHER, previous_open=True) == FireAction.CANCEL_AND_START
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one cron expression or an interval"),
        ({"cron": ("61 * * * *",)}, "bad cron expression '61 \\* \\* \\* \\*'"),
        ({"interval": 60, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"interval": -1}, "must be positive"),
        ({"interval": 60, "offset": 60}, "offset must be at least 0 and less than the interval"),
        ({"interval": 60, "offset": -5}, "offset must be at least 0"),
        ({"interval": 60, "start_at": 2.0, "end_at": 1.0}, "start_at is after end_at"),
    ],
)
def test_bad_specs_are_refused_clearly(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScheduleSpec(**kwargs)  # type: ignore[arg-type]


# -- end to end, in real time ------------------------------------------------------------------------


@activity.defn
async def digest(team: str) -> str:
    return f"digest for {team}"


@workflow.defn
async def daily_digest(team: str) -> str:
    return await digest(team)


@workflow.defn
async def slow_job() -> None:
    await workflow.sleep(3600)


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_interval_schedule_fires_and_tags_runs(client: Client) -> None:
    async with Worker(client, workflows=[daily_digest], activities=[digest]):
        handle = await client.create_schedule(
            "digest", daily_digest, "team-a", spec=ScheduleSpec(interval=0.2)
        )

        async def three_done() -> bool:
            return (
                await client.count_workflows("ScheduleId = 'digest' AND Status = 'Completed'") >= 3
            )

        await wait_until(three_done)
        await handle.pause("maintenance")
        info = await handle.describe()
        assert info.paused and info.note == "maintenance" and info.fired >= 3
        fired = info.fired
        await asyncio.sleep(0.5)
        assert (await handle.describe()).fired == fired  # nothing while paused
        runs = await client.list_workflows("ScheduleId = 'digest'")
        assert len({r.workflow_id for r in runs}) == len(runs)  # one run per time
        with pytest.raises(ScheduleError, match="already exists"):
            await client.create_schedule("digest", daily_digest, "x", spec=ScheduleSpec(interval=1))
        await handle.delete()
        with pytest.raises(ScheduleError, match="not found"):
            await handle.describe()


async def test_two_workers_and_a_restart_never_fire_a_time_twice(db_url: str) -> None:
    """Every worker sweeps schedules; the store lets one of them fire each time, and a schedule
    carries on from its stored state after all workers stopped."""
    async with await Client.connect(db_url) as a, await Client.connect(db_url) as b:
        handle = await a.create_schedule("tick", daily_digest, "t", spec=ScheduleSpec(interval=0.1))
        async with (
            Worker(a, workflows=[daily_digest], activities=[digest]),
            Worker(b, workflows=[daily_digest], activities=[digest]),
        ):
            await asyncio.sleep(1.0)
        before = (await handle.describe()).fired
        await asyncio.sleep(0.3)  # no worker: nothing fires
        assert (await handle.describe()).fired == before

    async with await Client.connect(db_url) as c:
        async with Worker(c, workflows=[daily_digest], activities=[digest]):

            async def fired_again() -> bool:
                return (await c.get_schedule_handle("tick").describe()).fired >= before + 3

            await wait_until(fired_again)
            await c.get_schedule_handle("tick").pause()
        info = await c.get_schedule_handle("tick").describe()
        runs = await c.list_workflows("ScheduleId = 'tick'", limit=1000)
        ids = [r.workflow_id for r in runs]
        assert len(ids) == len(set(ids)) == info.fired  # one run per time, each time once
        assert before >= 5


async def test_skip_overlap_trigger_and_backfill(client: Client) -> None:
    async with Worker(client, workflows=[slow_job, daily_digest], activities=[digest]):
        slow = await client.create_schedule(
            "slow", slow_job, spec=ScheduleSpec(interval=0.2), overlap=OverlapPolicy.SKIP
        )

        async def skipped_some() -> bool:
            return (await slow.describe()).skipped >= 2

        await wait_until(skipped_some)
        assert await client.count_workflows("ScheduleId = 'slow'") == 1  # the rest skipped

        daily = await client.create_schedule(
            "daily",
            daily_digest,
            "team-b",
            spec=ScheduleSpec(cron=("0 9 * * *",)),
        )
        manual = await daily.trigger()
        assert manual.startswith("daily-")
        started = await daily.backfill(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, 23, tzinfo=UTC)
        )
        assert started == [
            "daily-2026-01-01T09:00:00Z",
            "daily-2026-01-02T09:00:00Z",
            "daily-2026-01-03T09:00:00Z",
        ]
        again = await daily.backfill(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, 23, tzinfo=UTC)
        )
        assert again == []  # never twice for the same time
        assert len(await client.list_schedules()) == 2


# -- a month of daily runs, in well under a second of wall time ---------------------------------------


async def test_thirty_days_of_daily_runs_with_time_skipping() -> None:
    wall = time.monotonic()
    async with WorkflowEnvironment(workflows=[daily_digest], activities=[digest]) as env:
        start = env.now()
        await env.client.create_schedule(
            "month", daily_digest, "team-c", spec=ScheduleSpec(cron=("0 6 * * *",))
        )
        await env.sleep(timedelta(days=30))
        runs = await env.client.list_workflows(
            "ScheduleId = 'month' AND Status = 'Completed'", limit=100
        )
    assert len(runs) == 30
    assert (env.now() - start) >= timedelta(days=30)
    assert time.monotonic() - wall < 5


async def test_schedule_cli(client: Client, db_url: str) -> None:
    import json

    from click.testing import CliRunner

    from duro.cli import cli

    runner = CliRunner()

    async def duro(*args: str) -> str:
        out = await asyncio.to_thread(runner.invoke, cli, [*args, "--db", db_url])
        assert out.exit_code == 0, out.output
        return out.output

    created = json.loads(
        await duro(
            "schedule",
            "create",
            "nightly",
            "--workflow",
            "daily_digest",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "America/New_York",
            "--input",
            '"team-d"',
            "--overlap",
            "buffer_one",
        )
    )
    assert created["overlap"] == "buffer_one" and len(created["next_runs"]) == 5
    assert "nightly: daily_digest next" in await duro("schedule", "list")
    workflow_id = (await duro("schedule", "trigger", "nightly")).strip()
    assert workflow_id.startswith("nightly-")
    await duro("schedule", "pause", "nightly", "--note", "holiday")
    described = json.loads(await duro("schedule", "describe", "nightly"))
    assert described["paused"] is True and described["note"] == "holiday"
    ids = json.loads(
        await duro(
            "schedule",
            "backfill",
            "nightly",
            "--start",
            "2026-03-01T00:00:00Z",
            "--end",
            "2026-03-02T23:00:00Z",
        )
    )
    assert len(ids) == 2
    await duro("schedule", "delete", "nightly")
    bad = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["schedule", "create", "x", "--workflow", "w", "--cron", "99 * * * *", "--db", db_url],
    )
    assert bad.exit_code == 1 and "bad cron expression" in bad.output

    hourly = json.loads(
        await duro(
            "schedule",
            "create",
            "hourly",
            "--workflow",
            "daily_digest",
            "--every",
            "1h",
            "--offset",
            "5m",
            "--start-at",
            "2030-01-01T00:00:00Z",
            "--end-at",
            "2030-01-02T00:00:00Z",
            "--catchup-window",
            "2h",
            "--paused",
            "--note",
            "waiting for launch",
        )
    )
    assert hourly["paused"] is True and hourly["note"] == "waiting for launch"
    assert hourly["catchup_window"] == 7200
    assert hourly["spec"]["offset"] == 300
    assert hourly["spec"]["start_at"] == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    for args, message in [
        (("--start-at", "tomorrow"), "--start-at 'tomorrow' is not an ISO time"),
        (("--catchup-window", "0"), "--catchup-window must be positive"),
        (("--catchup-window", "1e400s"), "bad duration '1e400s'"),
    ]:
        bad = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["schedule", "create", "y", "--workflow", "w", "--every", "1h", *args, "--db", db_url],
        )
        assert bad.exit_code == 1 and message in bad.output, bad.output
