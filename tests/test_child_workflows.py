"""Child workflows: sub-agents with their own history, results and failures propagated."""

from __future__ import annotations

import asyncio

import pytest

from duro import (
    ApplicationError,
    ChildWorkflowError,
    Client,
    RunStatus,
    Worker,
    WorkflowAlreadyStartedError,
    activity,
    workflow,
)
from duro.definitions import workflow_definition
from duro.history import EventType
from duro.runtime.replay import replay


@activity.defn
async def research(topic: str) -> str:
    return f"notes on {topic}"


@workflow.defn
async def researcher(topic: str) -> str:
    return await research(topic)


@workflow.defn
async def broken(topic: str) -> str:
    raise ApplicationError(f"cannot research {topic}", type="NoSources")


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(3600)


@workflow.defn
async def lead(topics: list[str]) -> list[str]:
    children = [workflow.start_child_workflow(researcher, t) for t in topics]
    return list(await asyncio.gather(*children))


@workflow.defn
async def lead_with_failure() -> str:
    try:
        await workflow.execute_child_workflow(broken, "mars")
    except ChildWorkflowError as e:
        assert isinstance(e.cause, ApplicationError)
        return f"{e.status}: {e.cause.type}"
    return "no error"


@workflow.defn
async def lead_with_id_clash() -> str:
    first = workflow.start_child_workflow(Sleeper, id="the-one")
    await first.wait_started()
    second = workflow.start_child_workflow(Sleeper, id="the-one")
    try:
        await second.wait_started()
    except WorkflowAlreadyStartedError:
        return "clash"
    return "no clash"


@workflow.defn
async def lead_that_leaves(policy: str) -> str:
    child = workflow.start_child_workflow(Sleeper, id=f"left-{policy}", parent_close_policy=policy)  # type: ignore[arg-type]
    await child.wait_started()
    return "left"


@workflow.defn
class Waiter:
    """A sub-agent waiting for its parent's go-ahead."""

    def __init__(self) -> None:
        self.go: str | None = None

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go is not None)
        return f"went with {self.go}"

    @workflow.signal
    def proceed(self, how: str) -> None:
        self.go = how


@workflow.defn
class Looper:
    """Continues as new once, then waits for the go-ahead like ``Waiter``."""

    def __init__(self) -> None:
        self.go: str | None = None

    @workflow.run
    async def run(self, round: int) -> str:
        if round == 0:
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: self.go is not None)
        return f"round {round} went with {self.go}"

    @workflow.signal
    def proceed(self, how: str) -> None:
        self.go = how


@workflow.defn
async def lead_of_a_looper() -> str:
    child = workflow.start_child_workflow(Looper, 0, id="looper")
    await child.wait_started()
    await workflow.sleep(0.3)  # the child has continued as new by then
    await child.signal(Looper.proceed, "plan C")
    return await child


@workflow.defn
async def lead_that_steers() -> list[str]:
    signalled = workflow.start_child_workflow(Waiter, id="steer-signalled")
    await signalled.signal(Waiter.proceed, "plan B")
    doomed = workflow.start_child_workflow(Waiter, id="steer-cancelled")
    await doomed.cancel()
    outcomes = [await signalled]
    try:
        await doomed
    except ChildWorkflowError as e:
        outcomes.append(f"{e.status}")
    return outcomes


WORKFLOWS = [
    researcher,
    broken,
    Sleeper,
    lead,
    lead_with_failure,
    lead_with_id_clash,
    lead_that_leaves,
    Waiter,
    lead_that_steers,
    Looper,
    lead_of_a_looper,
]


@pytest.fixture
async def worker(client: Client):  # type: ignore[no-untyped-def]
    async with Worker(client, workflows=WORKFLOWS, activities=[research]) as w:
        yield w


async def test_children_run_and_return_results(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(lead, ["a", "b", "c"], id="lead")
    assert await handle.result(timeout=10) == ["notes on a", "notes on b", "notes on c"]
    info = await handle.describe()
    assert [c[0] for c in info.children] == [
        "lead/researcher-1",
        "lead/researcher-2",
        "lead/researcher-3",
    ]
    assert all(c[2] == RunStatus.COMPLETED for c in info.children)
    child = await client.get_workflow_handle("lead/researcher-2").describe()
    assert (child.parent_workflow_id, child.parent_run_id) == ("lead", handle.run_id)
    history = await handle.fetch_history()
    kinds = [e.type for e in history]
    assert kinds.count(EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED) == 3
    assert kinds.count(EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED) == 3
    defn = workflow_definition(lead)
    assert defn is not None
    replay(defn, history)


async def test_child_failure_reaches_the_parent(client: Client, worker: Worker) -> None:
    assert await client.execute_workflow(lead_with_failure, id="lf") == "Failed: NoSources"


async def test_child_id_clash_fails_the_start(client: Client, worker: Worker) -> None:
    assert await client.execute_workflow(lead_with_id_clash, id="clash") == "clash"


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        ("terminate", RunStatus.TERMINATED),
        ("request_cancel", RunStatus.CANCELED),
        ("abandon", RunStatus.RUNNING),
    ],
)
async def test_parent_close_policy(
    client: Client, worker: Worker, policy: str, status: RunStatus
) -> None:
    assert await client.execute_workflow(lead_that_leaves, policy, id=f"p-{policy}") == "left"
    child = client.get_workflow_handle(f"left-{policy}")
    for _ in range(500):
        if (await child.describe()).status == status:
            break
        await asyncio.sleep(0.01)
    assert (await child.describe()).status == status


async def test_parent_signals_and_cancels_its_children_through_their_handles(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(lead_that_steers, id="steer")
    assert await handle.result(timeout=10) == ["went with plan B", "Canceled"]
    child = await client.get_workflow_handle("steer-cancelled").describe()
    assert child.status == RunStatus.CANCELED
    defn = workflow_definition(lead_that_steers)
    assert defn is not None
    replay(defn, await handle.fetch_history())


async def test_a_child_handle_follows_the_child_through_continue_as_new(
    client: Client, worker: Worker
) -> None:
    result = await client.execute_workflow(lead_of_a_looper, id="lead-looper")
    assert result == "round 1 went with plan C"
