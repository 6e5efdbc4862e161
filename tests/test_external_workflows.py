"""Workflows signalling and cancelling each other, recorded in the sender's history."""

from __future__ import annotations

import asyncio

import pytest

from duro import Client, ExternalWorkflowError, Worker, WorkflowFailureError, workflow
from duro.definitions import workflow_definition
from duro.history import EventType
from duro.runtime.replay import replay


@workflow.defn
class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    @workflow.run
    async def run(self, expected: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.messages) >= expected)
        return self.messages

    @workflow.signal
    def deliver(self, message: str) -> None:
        self.messages.append(message)


@workflow.defn
async def sender(target: str, messages: list[str]) -> str:
    handle = workflow.get_external_workflow_handle(target)
    for m in messages:
        await handle.signal(Inbox.deliver, m)
    try:
        await workflow.get_external_workflow_handle("nobody").signal("deliver", "x")
    except ExternalWorkflowError as e:
        return f"sent; nobody: {e}"
    return "sent"


@workflow.defn
async def canceller(target: str) -> str:
    await workflow.get_external_workflow_handle(target).cancel()
    return "asked"


async def test_signal_another_workflow(client: Client) -> None:
    async with Worker(client, workflows=[Inbox, sender, canceller]):
        inbox = await client.start_workflow(Inbox.run, 2, id="inbox")
        result = await client.execute_workflow(sender, "inbox", ["hi", "there"], id="sender")
        assert result.startswith("sent; nobody: workflow 'nobody' not found")
        assert await inbox.result(timeout=10) == ["hi", "there"]
        history = await client.get_workflow_handle("sender").fetch_history()
        kinds = [e.type for e in history]
        assert kinds.count(EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED) == 3
        assert kinds.count(EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED) == 2
        assert kinds.count(EventType.EXTERNAL_WORKFLOW_REQUEST_FAILED) == 1
        defn = workflow_definition(sender)
        assert defn is not None
        replay(defn, history)


async def test_cancel_another_workflow(client: Client) -> None:
    async with Worker(client, workflows=[Inbox, sender, canceller]):
        inbox = await client.start_workflow(Inbox.run, 5, id="victim")
        while len(await inbox.fetch_history()) < 2:
            await asyncio.sleep(0.01)
        assert await client.execute_workflow(canceller, "victim", id="c") == "asked"
        with pytest.raises(WorkflowFailureError) as info:
            await inbox.result(timeout=10)
        assert info.value.status == "Canceled"
