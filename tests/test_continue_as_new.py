"""Continue-as-new: conversations that never end, each run starting with a fresh history."""

from __future__ import annotations

import asyncio

import pytest

from duro import Client, RunStatus, Worker, activity, workflow
from duro.history import EventType
from duro.runtime import instance


@activity.defn
async def reply(message: str) -> str:
    return f"re: {message}"


@workflow.defn
class Conversation:
    def __init__(self) -> None:
        self.inbox: list[str] = []

    @workflow.run
    async def run(
        self, turns_done: int, transcript: list[str], pending: list[str] | None = None
    ) -> list[str]:
        self.inbox = [*(pending or []), *self.inbox]
        while True:
            await workflow.wait_condition(lambda: bool(self.inbox))
            message = self.inbox.pop(0)
            if message == "bye":
                return transcript
            transcript = [*transcript, await reply(message)]
            turns_done += 1
            if turns_done % 2 == 0:  # keep each run's history short
                # Messages already received but not handled travel in the arguments.
                workflow.continue_as_new(turns_done, transcript, self.inbox)

    @workflow.signal
    def say(self, message: str) -> None:
        self.inbox.append(message)

    @workflow.query
    def info(self) -> dict[str, object]:
        i = workflow.info()
        return {"run_id": i.run_id, "from": i.continued_from, "length": i.history_length}


async def test_continue_as_new_chains_runs_and_result_follows(client: Client) -> None:
    async with Worker(client, workflows=[Conversation], activities=[reply]):
        handle = await client.start_workflow(Conversation.run, 0, [], id="chat")
        first_run = handle.run_id
        for word in ["a", "b", "c", "d", "e"]:
            await handle.signal(Conversation.say, word)
            await asyncio.sleep(0.05)
        await handle.signal(Conversation.say, "bye")
        pinned = client.get_workflow_handle("chat", run_id=first_run)
        assert await pinned.result(timeout=10) == ["re: a", "re: b", "re: c", "re: d", "re: e"]
        assert pinned.run_id != first_run  # followed the chain
    runs = await client.list_workflows("WorkflowId = 'chat' ORDER BY StartTime ASC")
    assert [r.status for r in runs] == [
        RunStatus.CONTINUED_AS_NEW,
        RunStatus.CONTINUED_AS_NEW,
        RunStatus.COMPLETED,
    ]
    history = await client.store.get_history(runs[1].run_id)
    assert history[0].attrs["continued_from"] == runs[0].run_id
    assert history[-1].type == EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert history[-1].attrs["new_run_id"] == runs[2].run_id


async def test_signals_sent_during_the_closing_task_reach_the_new_run(client: Client) -> None:
    async with Worker(client, workflows=[Conversation], activities=[reply]):
        handle = await client.start_workflow(Conversation.run, 1, [], id="burst")
        # A burst: some arrive while the task that continues-as-new is in flight.
        for word in ["x", "y", "z", "bye"]:
            await handle.signal(Conversation.say, word)
        result = await client.get_workflow_handle("burst").result(timeout=10)
    assert result == ["re: x", "re: y", "re: z"]
    # Every signal was delivered exactly once across the chain, in order.
    runs = await client.list_workflows("WorkflowId = 'burst' ORDER BY StartTime ASC")
    names: list[str] = []
    for run in runs:
        for e in await client.store.get_history(run.run_id):
            if e.type == EventType.WORKFLOW_EXECUTION_SIGNALED:
                names.append(e.attrs["args"][0])
    assert names == ["x", "y", "z", "bye"]


async def test_info_reports_history_and_run_chain(client: Client) -> None:
    async with Worker(client, workflows=[Conversation], activities=[reply]):
        handle = await client.start_workflow(Conversation.run, 1, [], id="info")
        await handle.signal(Conversation.say, "hello")  # turns_done becomes 2: continue
        while len(await client.list_workflows("WorkflowId = 'info'")) < 2:
            await asyncio.sleep(0.01)
        current = client.get_workflow_handle("info")
        info = await current.query(Conversation.info)
    assert info["from"] == handle.run_id
    assert info["length"] >= 1


@workflow.defn
async def summarizer(total: int, done: int = 0) -> dict[str, int]:
    """Replies until the history grows past the suggestion, then continues as new."""
    while done < total:
        await reply(f"message {done}")
        done += 1
        info = workflow.info()
        if info.continue_as_new_suggested and done < total:
            workflow.continue_as_new(total, done)
    return {"done": done, "length": workflow.info().history_length}


async def test_info_suggests_continuing_once_the_history_is_long(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real thresholds are 10,000 events / 10 MiB; a small one keeps the test fast.
    monkeypatch.setattr(instance, "CONTINUE_AS_NEW_EVENTS", 20)
    async with Worker(client, workflows=[summarizer], activities=[reply]):
        result = await client.execute_workflow(summarizer, 12, id="long")
    runs = await client.list_workflows("WorkflowId = 'long' ORDER BY StartTime ASC")
    assert len(runs) > 1 and runs[-1].status == RunStatus.COMPLETED
    assert result["done"] == 12
    for run in runs:
        history = await client.store.get_history(run.run_id)
        # Each run continued as soon as the suggestion came, so none grew far past it.
        assert len(history) < 20 + 8, len(history)
