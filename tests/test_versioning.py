"""Versioning with patch markers: old histories keep the old path, new runs take the new one."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from duro import Client, NonDeterminismError, Worker, activity, workflow
from duro.definitions import WorkflowDefinition, workflow_definition
from duro.history import Event, EventType
from duro.runtime.replay import replay


@activity.defn
async def summarize(text: str) -> str:
    return f"v1 summary of {text}"


@activity.defn
async def summarize_v2(text: str) -> str:
    return f"v2 summary of {text}"


@workflow.defn(name="Summarizer")
class SummarizerV1:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        summary = await summarize(text)
        await workflow.wait_condition(lambda: self.go)
        return summary

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="Summarizer")
class SummarizerPatched:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        if workflow.patched("summarize-v2"):
            summary = await summarize_v2(text)
        else:
            summary = await summarize(text)
        await workflow.wait_condition(lambda: self.go)
        return summary

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="Summarizer")
class SummarizerDeprecated:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        workflow.deprecate_patch("summarize-v2")
        summary = await summarize_v2(text)
        await workflow.wait_condition(lambda: self.go)
        return summary

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="Summarizer")
class SummarizerPatchRemoved:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        summary = await summarize_v2(text)
        await workflow.wait_condition(lambda: self.go)
        return summary

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


def defn(cls: type) -> WorkflowDefinition:
    d = workflow_definition(cls)
    assert d is not None
    return d


ACTIVITIES = [summarize, summarize_v2]


async def run_to_end(client: Client, cls: type, handle_id: str | None = None) -> list[Event]:
    """Run a Summarizer (or finish an existing one) on a worker with ``cls``; its history."""
    async with Worker(client, workflows=[cls], activities=ACTIVITIES):
        if handle_id is None:
            handle = await client.start_workflow(cls, "doc", id=f"s-{uuid.uuid4().hex[:6]}")
        else:
            handle = client.get_workflow_handle(handle_id)
        await handle.signal("proceed")
        await handle.result(timeout=10)
        return await handle.fetch_history()


async def test_old_run_continued_by_patched_code_keeps_the_old_path(client: Client) -> None:
    async with Worker(client, workflows=[SummarizerV1], activities=ACTIVITIES):
        handle = await client.start_workflow(SummarizerV1, "doc", id="in-flight")
        # The old code passes the patch point: its activity is scheduled and completed.
        while "ActivityTaskCompleted" not in [e.type.value for e in await handle.fetch_history()]:
            await asyncio.sleep(0.01)
    history = await run_to_end(client, SummarizerPatched, handle.id)
    assert await handle.result() == "v1 summary of doc"
    assert not [e for e in history if e.type == EventType.MARKER_RECORDED]
    replay(defn(SummarizerPatched), history)  # and it replays cleanly


async def test_new_runs_take_the_new_path_and_record_a_marker(client: Client) -> None:
    history = await run_to_end(client, SummarizerPatched)
    markers = [e for e in history if e.type == EventType.MARKER_RECORDED]
    assert [m.attrs["name"] for m in markers] == ["patch:summarize-v2"]
    completed = [e for e in history if e.type == EventType.WORKFLOW_EXECUTION_COMPLETED]
    assert completed[0].attrs["result"] == "v2 summary of doc"
    replay(defn(SummarizerPatched), history)


async def test_old_history_replays_against_patched_code(client: Client) -> None:
    old = await run_to_end(client, SummarizerV1)
    replay(defn(SummarizerPatched), old)
    with pytest.raises(NonDeterminismError, match="summarize"):
        replay(defn(SummarizerPatchRemoved), old)  # unpatched change: caught


async def test_deprecated_patch_replays_both_kinds_of_history(client: Client) -> None:
    with_marker = await run_to_end(client, SummarizerPatched)
    replay(defn(SummarizerDeprecated), with_marker)
    without_marker = await run_to_end(client, SummarizerDeprecated)
    assert not [e for e in without_marker if e.type == EventType.MARKER_RECORDED]
    replay(defn(SummarizerDeprecated), without_marker)


async def test_removed_patch_is_reported_clearly(client: Client) -> None:
    with_marker = await run_to_end(client, SummarizerPatched)
    with pytest.raises(NonDeterminismError) as info:
        replay(defn(SummarizerPatchRemoved), with_marker)
    message = str(info.value)
    assert "RecordMarker(name='patch:summarize-v2')" in message
    assert "no longer calls workflow.patched('summarize-v2')" in message
    assert "deprecate_patch" in message


@workflow.defn(name="Waiter")
class WaiterV1:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return await summarize("late")

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="Waiter")
class WaiterPatched(WaiterV1):
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        if workflow.patched("summarize-v2"):
            return await summarize_v2("late")
        return await summarize("late")


async def test_run_that_reaches_the_patch_after_the_deploy_takes_the_new_path(
    client: Client,
) -> None:
    async with Worker(client, workflows=[WaiterV1], activities=ACTIVITIES):
        handle = await client.start_workflow(WaiterV1, id="waiting")
        while len(await handle.fetch_history()) < 2:  # waiting, before the patch point
            await asyncio.sleep(0.01)
    async with Worker(client, workflows=[WaiterPatched], activities=ACTIVITIES):
        await handle.signal("proceed")
        assert await handle.result(timeout=10) == "v2 summary of late"


# -- build ids and pinning ------------------------------------------------------------------------


@workflow.defn(name="Pinned", versioning="pinned")
class PinnedWaiter(WaiterV1):
    pass


@workflow.defn(name="Quick")
async def quick() -> str:
    return "done"


async def test_runs_record_the_builds_that_advanced_them(client: Client) -> None:
    async with Worker(client, workflows=[WaiterV1], activities=ACTIVITIES, build_id="v1"):
        handle = await client.start_workflow(WaiterV1, id="builds")
        while len(await handle.fetch_history()) < 2:
            await asyncio.sleep(0.01)
    async with Worker(client, workflows=[WaiterV1], activities=ACTIVITIES, build_id="v2"):
        await handle.signal("proceed")
        await handle.result(timeout=10)
    info = await handle.describe()
    assert info.build_ids == ["v1", "v2"]
    assert info.pinned_build_id is None
    history = await handle.fetch_history()
    builds = [
        e.attrs.get("build_id") for e in history if e.type == EventType.WORKFLOW_TASK_COMPLETED
    ]
    assert builds[0] == "v1" and builds[-1] == "v2"


async def test_pinned_run_is_only_advanced_by_its_build(client: Client) -> None:
    async with Worker(client, workflows=[PinnedWaiter], activities=ACTIVITIES, build_id="v1"):
        pinned = await client.start_workflow(PinnedWaiter, id="pinned")
        while len(await pinned.fetch_history()) < 2:
            await asyncio.sleep(0.01)
    assert (await pinned.describe()).pinned_build_id == "v1"
    await pinned.signal("proceed")
    async with Worker(
        client, workflows=[PinnedWaiter, quick], activities=ACTIVITIES, build_id="v2"
    ):
        # The v2 worker polls past the pinned run's task (older, visible) to take this one.
        assert await client.execute_workflow(quick, id="unpinned") == "done"
        kinds = [e.type.value for e in await pinned.fetch_history()]
        assert kinds[-1] == "WorkflowExecutionSignaled"  # not advanced by v2
    async with Worker(client, workflows=[PinnedWaiter], activities=ACTIVITIES, build_id="v1"):
        assert await pinned.result(timeout=10) == "v1 summary of late"
    assert (await pinned.describe()).build_ids == ["v1"]


@workflow.defn(name="Strict", on_nondeterminism="fail_run")
class StrictV1(WaiterV1):
    pass


@workflow.defn(name="Strict", on_nondeterminism="fail_run")
class StrictChanged(WaiterV1):
    @workflow.run
    async def run(self) -> str:
        await summarize_v2("early")  # a command the old history does not have
        await workflow.wait_condition(lambda: self.go)
        return "never"


async def test_fail_run_on_nondeterminism(client: Client) -> None:
    from duro import WorkflowFailureError

    async with Worker(client, workflows=[StrictV1], activities=ACTIVITIES):
        handle = await client.start_workflow(StrictV1, id="strict")
        while len(await handle.fetch_history()) < 2:
            await asyncio.sleep(0.01)
    async with Worker(
        client, workflows=[StrictChanged], activities=ACTIVITIES, max_cached_workflows=1
    ):
        await handle.signal("proceed")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result(timeout=10)
    assert "non-deterministic workflow" in str(info.value.cause)
