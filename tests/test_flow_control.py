"""Flow control: limits every worker obeys (concurrency, rate, per key) and priorities."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from duro import Client, Worker, activity, workflow

RUNNING: list[int] = [0]
PEAK: list[int] = [0]
STARTS: list[float] = []


@activity.defn
async def call_model(prompt: str) -> str:
    RUNNING[0] += 1
    PEAK[0] = max(PEAK[0], RUNNING[0])
    STARTS.append(time.monotonic())
    try:
        await asyncio.sleep(0.05)
    finally:
        RUNNING[0] -= 1
    return prompt.upper()


@workflow.defn
async def fan(n: int) -> list[str]:
    return list(await asyncio.gather(*(call_model(f"p{i}") for i in range(n))))


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNNING[0] = 0
    PEAK[0] = 0
    STARTS.clear()


async def test_concurrency_limit_holds_across_workers(client: Client, db_url: str) -> None:
    await client.set_flow_limit("activity_type", "call_model", max_concurrent=2)
    other = await Client.connect(db_url)
    try:
        async with (
            Worker(client, workflows=[fan], activities=[call_model]),
            Worker(other, workflows=[fan], activities=[call_model]),
        ):
            result = await asyncio.wait_for(client.execute_workflow(fan, 12, id="limited"), 20)
    finally:
        await other.close()
    assert result == [f"P{i}" for i in range(12)]
    assert PEAK[0] == 2  # both workers together never ran more than two


async def test_rate_limit_spaces_starts(client: Client) -> None:
    await client.set_flow_limit("activity_type", "call_model", rate_per_second=20, burst=1)
    async with Worker(client, workflows=[fan], activities=[call_model]):
        await asyncio.wait_for(client.execute_workflow(fan, 8, id="rated"), 20)
    span = max(STARTS) - min(STARTS)
    assert span >= 7 / 20 * 0.9  # 8 starts at 20/s with a burst of one: ~0.35 s at least


@workflow.defn
async def agent(customer: str) -> str:
    await call_model(customer)
    await workflow.sleep(0.1)
    return customer


async def test_per_key_concurrency_queues_the_rest_in_start_order(client: Client) -> None:
    await client.set_flow_limit("workflow_key", "agent", max_concurrent=1)
    async with Worker(client, workflows=[agent], activities=[call_model]):
        handles = [
            await client.start_workflow(agent, "c-42", id=f"a{i}", concurrency_key="c-42")
            for i in range(3)
        ]
        other = await client.start_workflow(agent, "c-7", id="b", concurrency_key="c-7")
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in [*handles, other])), 20)
    infos = [await h.describe() for h in handles]
    # One at a time for c-42: each started its work after the previous one closed.
    for earlier, later in itertools.pairwise(infos):
        assert earlier.close_time is not None
        first_task = (await client.store.get_history(later.run_id))[1]
        assert first_task.time >= earlier.close_time


async def test_priorities_within_a_queue(client: Client) -> None:
    order: list[str] = []

    @activity.defn(name="record")
    async def record(tag: str) -> None:
        order.append(tag)

    @workflow.defn(name="prioritized")
    async def prioritized() -> None:
        await asyncio.gather(
            *(workflow.execute_activity(record, f"low{i}") for i in range(3)),
            workflow.execute_activity(record, "high", priority=10),
        )

    async with Worker(
        client, workflows=[prioritized], activities=[record], max_concurrent_activities=1
    ):
        await client.execute_workflow(prioritized, id="prio")
    assert "high" in order[:2]  # ahead of the lows queued before it (one may be eager)


async def test_limits_are_listed_and_validated(client: Client) -> None:
    await client.set_flow_limit("task_queue", "gpu", max_concurrent=4)
    assert [(lim.scope, lim.name, lim.max_concurrent) for lim in await client.flow_limits()] == [
        ("task_queue", "gpu", 4)
    ]
    await client.delete_flow_limit("task_queue", "gpu")
    assert await client.flow_limits() == []
    with pytest.raises(ValueError, match="scope must be"):
        await client.set_flow_limit("model", "x", max_concurrent=1)
    with pytest.raises(ValueError, match="max_concurrent, a rate or both"):
        await client.set_flow_limit("activity_type", "x")
    limit = await client.set_flow_limit("activity_type", "call_model", rate_per_minute=90)
    assert limit.rate == 1.5
    with pytest.raises(ValueError, match="rate_per_minute must be a positive number"):
        await client.set_flow_limit("activity_type", "x", rate_per_minute=float("nan"))
    with pytest.raises(ValueError, match="rate_per_second must be positive"):
        await client.set_flow_limit("activity_type", "x", rate_per_second=float("inf"))
    with pytest.raises(ValueError, match="not both"):
        await client.set_flow_limit("activity_type", "x", rate_per_second=1, rate_per_minute=60)


def test_limits_cli(db_url: str) -> None:
    import json

    from click.testing import CliRunner

    from duro.cli import cli

    def duro(*args: str) -> tuple[int, str]:
        out = CliRunner().invoke(cli, [*args, "--db", db_url])
        return out.exit_code, out.output

    code, out = duro("limits", "set", "activity_type", "call_model", "--max-concurrent", "8")
    assert code == 0 and json.loads(out)["max_concurrent"] == 8
    code, out = duro("limits", "set", "task_queue", "gpu", "--rate", "300/m", "--burst", "5")
    assert code == 0 and json.loads(out)["rate_per_second"] == 5.0
    code, out = duro("limits", "list")
    assert code == 0 and [(x["scope"], x["name"]) for x in json.loads(out)] == [
        ("activity_type", "call_model"),
        ("task_queue", "gpu"),
    ]
    for bad in ("fast", "nan", "inf", "5/", "/m", "-3/s", "5/h"):
        code, out = duro("limits", "set", "task_queue", "gpu", "--rate", bad)
        assert code == 1 and f"--rate {bad!r} must be a positive rate" in out
    code, out = duro("limits", "delete", "task_queue", "gpu")
    assert code == 0 and "removed the task_queue limit of gpu" in out
