"""Reset and fork: re-run an agent from a workflow task with the current code."""

from __future__ import annotations

import asyncio

import pytest

from duro import Client, ResetFailedError, RunStatus, Worker, activity, workflow
from duro.history import EventType

PROMPTS: dict[str, str] = {"style": "terse"}
CALLS: list[str] = []


@activity.defn
async def fetch(topic: str) -> str:
    CALLS.append(f"fetch {topic}")
    return f"facts about {topic}"


@activity.defn
async def write(facts: str) -> str:
    CALLS.append("write")
    return f"[{PROMPTS['style']}] {facts}"


@workflow.defn
class Writer:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.publish = False

    @workflow.run
    async def run(self, topic: str) -> str:
        facts = await fetch(topic)
        draft = await write(facts)
        await workflow.wait_condition(lambda: self.publish)
        return f"{draft} +{','.join(self.notes)}"

    @workflow.signal
    def note(self, text: str) -> None:
        self.notes.append(text)

    @workflow.signal
    def go(self) -> None:
        self.publish = True


def event_id_of(history: list, kind: EventType, seq: int) -> int:  # type: ignore[type-arg]
    return next(e.event_id for e in history if e.type == kind and e.attrs.get("seq") == seq)


async def test_reset_reruns_from_a_task_with_fixed_code(client: Client) -> None:
    CALLS.clear()
    async with Worker(client, workflows=[Writer], activities=[fetch, write]):
        handle = await client.start_workflow(Writer, "tea", id="writer")
        while "write" not in CALLS:
            await asyncio.sleep(0.01)
        await handle.signal(Writer.note, "n1")
        history = await handle.fetch_history()
        while not any(
            e.type == EventType.ACTIVITY_TASK_COMPLETED and e.attrs["seq"] == 2 for e in history
        ):
            await asyncio.sleep(0.01)
            history = await handle.fetch_history()
        # The prompt of `write` was wrong: fix it, reset to the task that scheduled `write`.
        PROMPTS["style"] = "friendly"
        point = event_id_of(history, EventType.ACTIVITY_TASK_SCHEDULED, 2) - 1
        new = await handle.reset(to=point, reason="fixed the style prompt")
        await new.signal(Writer.go)
        result = await new.result(timeout=10)
    assert result == "[friendly] facts about tea +n1"  # the signal after the point was re-applied
    assert CALLS.count("fetch tea") == 1  # the step before the point was not re-run
    assert CALLS.count("write") == 2
    old = await client.get_workflow_handle("writer", run_id=handle.run_id).describe()
    assert old.status == RunStatus.TERMINATED
    assert "reset to run" in str(old.failure)
    new_history = await new.fetch_history()
    marker = next(e for e in new_history if e.type == EventType.WORKFLOW_EXECUTION_RESET)
    assert marker.attrs["from_run_id"] == handle.run_id and marker.attrs["event_id"] == point


async def test_fork_leaves_the_original_alone(client: Client) -> None:
    CALLS.clear()
    PROMPTS["style"] = "terse"
    async with Worker(client, workflows=[Writer], activities=[fetch, write]):
        original = await client.start_workflow(Writer, "coffee", id="orig")
        while CALLS.count("write") < 1:
            await asyncio.sleep(0.01)
        PROMPTS["style"] = "poetic"
        fork = await original.fork("orig-fork", to="first_workflow_task", reapply_signals=False)
        await fork.signal(Writer.go)
        assert await fork.result(timeout=10) == "[poetic] facts about coffee +"
        assert (await original.describe()).status == RunStatus.RUNNING
        await original.signal(Writer.go)
        assert (await original.result(timeout=10)).startswith("[terse]")


async def test_bad_reset_points_are_refused(client: Client) -> None:
    async with Worker(client, workflows=[Writer], activities=[fetch, write]):
        handle = await client.start_workflow(Writer, "x", id="bad-reset")
        while len(await handle.fetch_history()) < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(ResetFailedError, match="no workflow task completed at or before"):
            await handle.reset(to=1)
        with pytest.raises(ResetFailedError, match="reset point must be"):
            await handle.reset(to="somewhere")
        await handle.terminate()


@workflow.defn
async def napper() -> str:
    first = await fetch("a")
    await workflow.sleep(0.3)
    return first


@workflow.defn
class Sleeper:
    def __init__(self) -> None:
        self.pokes = 0

    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(0.5)
        return f"woke after {self.pokes} poke(s)"

    @workflow.signal
    def poke(self) -> None:
        self.pokes += 1


async def test_work_pending_at_the_point_is_recreated(client: Client) -> None:
    async with Worker(client, workflows=[Sleeper]):
        handle = await client.start_workflow(Sleeper, id="nap")
        while not (await handle.describe()).pending_timers:
            await asyncio.sleep(0.01)
        await handle.signal(Sleeper.poke)  # a task runs while the timer is pending
        while [e.type for e in await handle.fetch_history()][
            -1
        ] != EventType.WORKFLOW_TASK_COMPLETED:
            await asyncio.sleep(0.01)
        new = await handle.reset(to="last_workflow_task", reapply_signals=False)
        assert (await new.describe()).pending_timers  # the sleep goes on in the new run
        assert await new.result(timeout=10) == "woke after 1 poke(s)"


async def test_cli_reset(client: Client, db_url: str) -> None:
    import json

    from click.testing import CliRunner

    from duro.cli import cli

    async with Worker(client, workflows=[napper], activities=[fetch]):
        handle = await client.start_workflow(napper, id="cli-reset")
        await handle.result(timeout=10)
        out = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            [
                "workflow",
                "reset",
                "cli-reset",
                "--to",
                "first",
                "--reason",
                "retry",
                "--db",
                db_url,
            ],
        )
        assert out.exit_code == 0, out.output
        new_run = json.loads(out.output)["run_id"]
        assert new_run != handle.run_id
        assert await client.get_workflow_handle("cli-reset").result(timeout=10) == "facts about a"


@workflow.defn
class Tagger:
    def __init__(self) -> None:
        self.advanced = False

    @workflow.run
    async def run(self) -> None:
        workflow.upsert_memo({"stage": "one"})
        workflow.upsert_search_attributes({"Stage": "one"})
        await workflow.wait_condition(lambda: self.advanced)
        workflow.upsert_memo({"stage": "two"})
        workflow.upsert_search_attributes({"Stage": "two"})
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def advance(self) -> None:
        self.advanced = True


async def test_reset_run_has_memo_and_search_attributes_as_of_the_point(client: Client) -> None:
    async with Worker(client, workflows=[Tagger]):
        handle = await client.start_workflow(
            Tagger, id="tagger", memo={"owner": "ann"}, search_attributes={"Customer": "c-1"}
        )
        while (await handle.describe()).search_attributes.get("Stage") != "one":
            await asyncio.sleep(0.01)
        await handle.signal(Tagger.advance)
        while (await handle.describe()).search_attributes.get("Stage") != "two":
            await asyncio.sleep(0.01)
    # No worker now: the new run's state is exactly what the reset wrote.
    new = await handle.reset(to="last_workflow_task", reapply_signals=False)
    info = await new.describe()
    assert info.memo == {"owner": "ann", "stage": "one"}
    assert info.search_attributes == {"Customer": "c-1", "Stage": "one"}
    assert [r.run_id for r in await client.list_workflows("Stage = 'one'")] == [new.run_id]
