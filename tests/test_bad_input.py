"""Bad input gets a clear error naming what was wrong, and damages nothing already stored."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest

from duro import (
    ActivityError,
    Client,
    PayloadEncodeError,
    UnknownHandlerError,
    UnknownWorkflowTypeError,
    Worker,
    WorkflowClosedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    activity,
    workflow,
)


@dataclass
class Ticket:
    title: str
    priority: int


@activity.defn
async def file_ticket(ticket: Ticket) -> str:
    return f"filed {ticket.title}"


@activity.defn
async def returns_garbage() -> object:
    return object()


@workflow.defn
class Desk:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, ticket: Ticket) -> str:
        await workflow.wait_condition(lambda: self.done)
        return ticket.title

    @workflow.signal
    def close(self) -> None:
        self.done = True


@workflow.defn
async def calls_unknown_activity() -> str:
    return await workflow.execute_activity("no_such_activity", "x")


@workflow.defn
async def passes_bad_activity_argument() -> str:
    return await workflow.execute_activity("file_ticket", {"title": "t"})  # priority missing


@workflow.defn
async def gets_garbage() -> object:
    return await returns_garbage()


@workflow.defn
async def returns_unserializable() -> object:
    return {"handle": object()}


WORKFLOWS = [
    Desk,
    calls_unknown_activity,
    passes_bad_activity_argument,
    gets_garbage,
    returns_unserializable,
]
ACTIVITIES = [file_ticket, returns_garbage]


@pytest.fixture
async def worker(client: Client):  # type: ignore[no-untyped-def]
    async with Worker(client, workflows=WORKFLOWS, activities=ACTIVITIES) as w:
        yield w


def wid() -> str:
    return f"bad-{uuid.uuid4().hex[:8]}"


async def test_unknown_workflow_type_is_refused_by_the_client(
    client: Client, worker: Worker
) -> None:
    with pytest.raises(UnknownWorkflowTypeError, match="'Nope'.*registered types: .*Desk"):
        await client.start_workflow("Nope", id=wid())
    assert await client.list_workflows() == []


async def test_unknown_workflow_type_started_before_any_worker_fails_its_task_clearly(
    client: Client,
) -> None:
    handle = await client.start_workflow("Nope", id=wid(), task_queue="lonely")
    async with Worker(client, task_queue="lonely", workflows=[Desk]):
        info = await _until(handle, lambda i: i.workflow_task_failure is not None)
    assert info.workflow_task_failure is not None
    assert "unknown workflow type 'Nope'" in info.workflow_task_failure["message"]
    assert info.status.value == "Running"  # nothing lost: a worker that has it can finish it


async def test_unknown_signal_is_refused_and_history_untouched(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(Desk.run, Ticket("a", 1), id=wid())
    with pytest.raises(UnknownHandlerError, match="no signal named 'shut'.*close"):
        await handle.signal("shut")
    with pytest.raises(UnknownHandlerError, match="no query named"):
        await handle.query("state")
    kinds = [e.type.value for e in await handle.fetch_history()]
    assert "WorkflowExecutionSignaled" not in kinds
    await handle.signal(Desk.close)
    assert await handle.result(timeout=10) == "a"


async def test_a_handler_name_found_once_is_not_read_again_an_absent_one_is(
    client: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await client.start_workflow(Desk.run, Ticket("a", 1), id=wid())
    reads: list[str] = []
    original = client.store.workflow_type_handlers

    async def counted(namespace: str, workflow_type: str) -> dict[str, list[str]] | None:
        reads.append(workflow_type)
        return await original(namespace, workflow_type)

    monkeypatch.setattr(client.store, "workflow_type_handlers", counted)
    for _ in range(2):
        with pytest.raises(UnknownHandlerError):
            await handle.signal("shut")
    assert len(reads) == 2  # absent: read each time (a new worker may register it)
    reads.clear()
    other = await client.start_workflow(Desk.run, Ticket("b", 2), id=wid())
    await other.signal(Desk.close)
    await handle.signal(Desk.close)  # the same type and name: known to this client now
    assert len(reads) == 1
    assert await handle.result(timeout=10) == "a" and await other.result(timeout=10) == "b"


async def test_signal_to_a_closed_run_and_unknown_ids(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(Desk.run, Ticket("a", 1), id=wid())
    await handle.signal(Desk.close)
    await handle.result(timeout=10)
    with pytest.raises(WorkflowClosedError, match="closed"):
        await handle.signal(Desk.close)
    with pytest.raises(WorkflowNotFoundError, match="'ghost' not found"):
        await client.get_workflow_handle("ghost").describe()


async def test_unencodable_start_argument_stores_nothing(client: Client, worker: Worker) -> None:
    with pytest.raises(PayloadEncodeError, match="argument of workflow 'Desk'"):
        await client.start_workflow(Desk.run, object(), id=wid())
    assert await client.list_workflows() == []


async def test_undecodable_workflow_argument_fails_the_run_naming_the_argument(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow("Desk", {"title": "no priority"}, id=wid())
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=10)
    message = str(info.value.cause)
    assert "argument 'ticket'" in message and "priority" in message


async def test_unknown_activity_keeps_retrying_with_a_clear_last_failure(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(calls_unknown_activity, id=wid())
    info = await _until(
        handle, lambda i: bool(i.pending_activities and i.pending_activities[0].last_failure)
    )
    failure = info.pending_activities[0].last_failure
    assert failure is not None and failure["type"] == "ActivityNotRegistered"
    assert "'no_such_activity' is not registered" in failure["message"]
    await handle.terminate("test over")


async def test_undecodable_activity_argument_is_not_retried(client: Client, worker: Worker) -> None:
    with pytest.raises(WorkflowFailureError) as info:
        await client.execute_workflow(passes_bad_activity_argument, id=wid())
    cause = info.value.cause
    assert isinstance(cause, ActivityError) and cause.attempt == 1
    assert "argument 'ticket'" in str(cause.cause)


async def test_unserializable_activity_result_fails_without_retry(
    client: Client, worker: Worker
) -> None:
    with pytest.raises(WorkflowFailureError) as info:
        await client.execute_workflow(gets_garbage, id=wid())
    cause = info.value.cause
    assert isinstance(cause, ActivityError) and cause.attempt == 1
    assert "cannot encode result of activity 'returns_garbage'" in str(cause.cause)


async def test_unserializable_workflow_result_fails_the_run_clearly(
    client: Client, worker: Worker
) -> None:
    with pytest.raises(WorkflowFailureError, match="cannot encode result of workflow"):
        await client.execute_workflow(returns_unserializable, id=wid())


async def _until(handle, pred, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        info = await handle.describe()
        if pred(info):
            return info
        assert loop.time() < deadline, f"condition not reached: {info}"
        await asyncio.sleep(0.02)
