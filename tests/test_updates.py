"""Updates: ask a running workflow something and get its handler's answer back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from duro import (
    Client,
    UnknownHandlerError,
    UpdateFailedError,
    Worker,
    WorkflowClosedError,
    activity,
    workflow,
)
from duro.definitions import workflow_definition
from duro.history import EventType
from duro.runtime.replay import replay


@activity.defn
async def lookup(question: str) -> str:
    return f"answer to {question!r}"


@workflow.defn
class Assistant:
    def __init__(self) -> None:
        self.questions: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.questions

    @workflow.update
    async def ask(self, question: str) -> str:
        self.questions.append(question)
        return await lookup(question)

    @ask.validator
    def _validate_ask(self, question: str) -> None:
        if not question.strip():
            raise ValueError("empty question")
        if self.done:
            raise ValueError("the assistant is finishing")

    @workflow.update
    def rename(self, count: int) -> int:
        if count < 0:
            raise ValueError("negative count")
        return len(self.questions) + count

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@pytest.fixture
async def worker(client: Client):  # type: ignore[no-untyped-def]
    async with Worker(client, workflows=[Assistant], activities=[lookup]) as w:
        yield w


async def start(client: Client):  # type: ignore[no-untyped-def]
    return await client.start_workflow(Assistant, id=f"a-{uuid.uuid4().hex[:8]}")


async def test_update_returns_the_handler_result_and_is_recorded(
    client: Client, worker: Worker
) -> None:
    handle = await start(client)
    assert await handle.execute_update(Assistant.ask, "what time is it") == (
        "answer to 'what time is it'"
    )
    assert await handle.execute_update("rename", 5) == 6
    await handle.signal(Assistant.finish)
    assert await handle.result(timeout=10) == ["what time is it"]
    history = await handle.fetch_history()
    kinds = [e.type for e in history]
    assert kinds.count(EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == 2
    assert kinds.count(EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED) == 2
    defn = workflow_definition(Assistant)
    assert defn is not None
    replay(defn, history)


async def test_rejected_update_writes_nothing_to_history(client: Client, worker: Worker) -> None:
    handle = await start(client)
    while len(await handle.fetch_history()) < 2:
        await asyncio.sleep(0.01)
    before = await handle.fetch_history()
    with pytest.raises(UpdateFailedError, match="empty question"):
        await handle.execute_update(Assistant.ask, "   ")
    assert await handle.fetch_history() == before


async def test_failing_handler_fails_the_update_not_the_run(client: Client, worker: Worker) -> None:
    handle = await start(client)
    with pytest.raises(UpdateFailedError, match="negative count"):
        await handle.execute_update(Assistant.rename, -1)
    assert (await handle.describe()).status.value == "Running"
    assert await handle.execute_update(Assistant.rename, 1) == 1


async def test_update_id_makes_a_retried_call_one_update(client: Client, worker: Worker) -> None:
    handle = await start(client)
    first = await handle.execute_update(Assistant.ask, "once", update_id="u-1")
    again = await handle.execute_update(Assistant.ask, "once", update_id="u-1")
    assert first == again
    accepted = [
        e
        for e in await handle.fetch_history()
        if e.type == EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert len(accepted) == 1


async def test_concurrent_updates_all_complete(client: Client, worker: Worker) -> None:
    handle = await start(client)
    answers = await asyncio.gather(
        *(handle.execute_update(Assistant.ask, f"q{i}") for i in range(10))
    )
    assert answers == [f"answer to 'q{i}'" for i in range(10)]


async def test_unknown_update_and_closed_run(client: Client, worker: Worker) -> None:
    handle = await start(client)
    with pytest.raises(UnknownHandlerError, match="no update named 'shout'"):
        await handle.execute_update("shout")
    await handle.signal(Assistant.finish)
    await handle.result(timeout=10)
    with pytest.raises(WorkflowClosedError):
        await handle.execute_update(Assistant.ask, "too late")


async def test_cli_update(client: Client, worker: Worker, db_url: str) -> None:
    import json

    from click.testing import CliRunner

    from duro.cli import cli

    handle = await start(client)
    runner = CliRunner()
    ok = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["workflow", "update", handle.id, "ask", "--input", '"from the cli"', "--db", db_url],
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == "answer to 'from the cli'"
    rejected = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["workflow", "update", handle.id, "ask", "--input", '""', "--db", db_url],
    )
    assert rejected.exit_code == 1
    assert "empty question" in rejected.output


async def test_update_with_start_starts_or_reuses_the_run(client: Client, worker: Worker) -> None:
    handle, answer = await client.execute_update_with_start(
        Assistant, id="uws", update=Assistant.ask, update_args=["first"]
    )
    assert answer == "answer to 'first'"
    again, answer2 = await client.execute_update_with_start(
        Assistant, id="uws", update=Assistant.ask, update_args=["second"]
    )
    assert again.run_id == handle.run_id  # the running run was reused
    assert answer2 == "answer to 'second'"
    await handle.signal(Assistant.finish)
    assert await handle.result(timeout=10) == ["first", "second"]


async def test_update_with_start_takes_the_start_options(client: Client, worker: Worker) -> None:
    handle, _ = await client.execute_update_with_start(
        Assistant,
        id="uws-opts",
        update=Assistant.ask,
        update_args=["q"],
        search_attributes={"Customer": "c-7"},
        priority=5,
        run_timeout=timedelta(minutes=5),
        memo={"source": "chat"},
    )
    assert [r.workflow_id for r in await client.list_workflows("Customer = 'c-7'")] == ["uws-opts"]
    assert (await handle.describe()).memo == {"source": "chat"}
    with pytest.raises(TypeError, match="colour"):
        await client.execute_update_with_start(
            Assistant, id="uws-bad", update=Assistant.ask, update_args=["q"], colour="red"
        )
    assert await client.count_workflows("WorkflowId = 'uws-bad'") == 0


async def test_signal_with_start_delivers_the_signal_with_the_start(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(Assistant, id="sws", start_signal=(Assistant.finish, []))
    kinds = [e.type for e in await handle.fetch_history()][:2]
    assert kinds == [
        EventType.WORKFLOW_EXECUTION_STARTED,
        EventType.WORKFLOW_EXECUTION_SIGNALED,
    ]
    assert await handle.result(timeout=10) == []
