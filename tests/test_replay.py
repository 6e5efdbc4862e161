"""Replay: recorded histories replay cleanly; changed code is caught with the diverging event."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from duro import Client, NonDeterminismError, Worker, activity, workflow
from duro.definitions import WorkflowDefinition, workflow_definition
from duro.history import Event
from duro.runtime.instance import _seed
from duro.runtime.replay import replay
from duro.store.tx import new_run_id


@activity.defn
async def step(i: int) -> int:
    return i * 10


@activity.defn
async def other_step(i: int) -> int:
    return -i


@workflow.defn(name="Steps")
async def steps_v1(n: int) -> list[int]:
    out = [await step(i) for i in range(n)]
    await workflow.sleep(0.01)
    out += await asyncio.gather(step(100), step(200))
    return out


@workflow.defn(name="Steps")
async def steps_renamed_activity(n: int) -> list[int]:
    out = [await step(i) for i in range(n - 1)]
    out.append(await other_step(n))  # was step(n - 1)
    await workflow.sleep(0.01)
    out += await asyncio.gather(step(100), step(200))
    return out


@workflow.defn(name="Steps")
async def steps_timer_moved(n: int) -> list[int]:
    await workflow.sleep(0.01)  # the timer now comes first
    out = [await step(i) for i in range(n)]
    out += await asyncio.gather(step(100), step(200))
    return out


@workflow.defn(name="Steps")
async def steps_fewer_commands(n: int) -> list[int]:
    return [await step(i) for i in range(n)]


def defn(fn: object) -> WorkflowDefinition:
    d = workflow_definition(fn)
    assert d is not None
    return d


@pytest.fixture
async def history(client: Client) -> list[Event]:
    async with Worker(client, workflows=[steps_v1], activities=[step]):
        handle = await client.start_workflow(steps_v1, 3, id=f"steps-{uuid.uuid4().hex[:6]}")
        assert await handle.result(timeout=10) == [0, 10, 20, 1000, 2000]
        return await handle.fetch_history()


async def test_finished_history_replays_with_no_mismatch(history: list[Event]) -> None:
    inst = replay(defn(steps_v1), history)
    assert inst.closed


async def test_exported_json_history_replays(history: list[Event], tmp_path: Path) -> None:
    exported = json.dumps([e.to_json() for e in history])
    events = [Event.from_json(e) for e in json.loads(exported)]
    assert events == history
    replay(defn(steps_v1), events)


async def test_changed_activity_names_the_event_and_both_commands(history: list[Event]) -> None:
    with pytest.raises(NonDeterminismError) as info:
        replay(defn(steps_renamed_activity), history)
    err = info.value
    recorded = next(
        e for e in history if e.attrs.get("seq") == 3 and e.type.value == "ActivityTaskScheduled"
    )
    assert err.event_id == recorded.event_id
    assert (
        err.recorded is not None and "ScheduleActivity(seq=3, activity_type='step'" in err.recorded
    )
    assert err.produced is not None and "activity_type='other_step'" in err.produced
    assert f"event {recorded.event_id}" in str(err) and "workflow.patched" in str(err)


async def test_moved_timer_is_caught(history: list[Event]) -> None:
    with pytest.raises(NonDeterminismError) as info:
        replay(defn(steps_timer_moved), history)
    assert info.value.produced is not None and info.value.produced.startswith("StartTimer")
    assert info.value.recorded is not None and info.value.recorded.startswith("ScheduleActivity")


async def test_missing_commands_are_caught(history: list[Event]) -> None:
    with pytest.raises(NonDeterminismError) as info:
        replay(defn(steps_fewer_commands), history)
    assert info.value.recorded is not None and info.value.recorded.startswith("StartTimer")
    assert info.value.produced is not None and info.value.produced.startswith("CompleteWorkflow")


@workflow.defn(name="Waiter")
async def waiter_v1() -> int:
    a = await step(1)
    await workflow.sleep(3600)
    return a + await step(2)


@workflow.defn(name="Waiter")
async def waiter_v2() -> int:
    a = await other_step(1)
    await workflow.sleep(3600)
    return a + await step(2)


async def test_incompatible_deploy_fails_the_task_not_the_run(client: Client) -> None:
    wf_id = f"waiter-{uuid.uuid4().hex[:6]}"
    async with Worker(client, workflows=[waiter_v1], activities=[step, other_step]):
        handle = await client.start_workflow(waiter_v1, id=wf_id)
        for _ in range(500):
            if (await handle.describe()).pending_timers:
                break
            await asyncio.sleep(0.01)
    # "Deploy" changed code, and wake the run with a cancel request: its task must replay.
    async with Worker(
        client, workflows=[waiter_v2], activities=[step, other_step], max_cached_workflows=1
    ):
        await handle.cancel()
        for _ in range(500):
            info = await handle.describe()
            if info.workflow_task_failure:
                break
            await asyncio.sleep(0.01)
    assert info.status.value == "Running"
    assert info.workflow_task_failure is not None
    assert info.workflow_task_failure["type"] == "NonDeterminismError"
    assert "other_step" in info.workflow_task_failure["message"]
    # The fixed code (v1 again) finishes it: nothing was lost.
    async with Worker(client, workflows=[waiter_v1], activities=[step]):
        with pytest.raises(Exception, match="canceled"):
            await handle.result(timeout=timedelta(seconds=10))


def test_a_runs_random_seed_uses_all_of_a_time_ordered_id_and_keeps_old_ids_seeds() -> None:
    """Run ids are time-ordered (UUIDv7): runs started in the same millisecond share their
    first digits, so the seed of ``workflow.random()`` takes the whole id; a recorded run with a
    random (uuid4) id keeps the seed it was recorded with, so its replay draws the same."""
    first, second = new_run_id(), new_run_id()
    assert uuid.UUID(first).version == 7 and len(first) == 32
    same_ms = first[:16] + "0" * 16
    assert _seed(first) != _seed(same_ms)
    old = "9f1c2b3a4d5e4f60a1b2c3d4e5f60718"  # a uuid4 hex, as runs had before
    assert _seed(old) == int(old[:16], 16)
    assert second[:12] >= first[:12]  # time-ordered to the millisecond
