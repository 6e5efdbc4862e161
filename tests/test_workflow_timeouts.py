"""Workflow execution and run timeouts: a run past its deadline closes as TimedOut."""

from __future__ import annotations

from datetime import timedelta

import pytest

from duro import Client, RunStatus, Worker, WorkflowFailureError, workflow
from duro.errors import TimeoutError as DuroTimeoutError
from duro.history import EventType


@workflow.defn
class Forever:
    @workflow.run
    async def run(self, generation: int) -> None:
        await workflow.sleep(0.1)
        if generation < 100:
            workflow.continue_as_new(generation + 1)
        await workflow.sleep(3600)


@workflow.defn
async def quick() -> str:
    return "done"


async def test_run_timeout_closes_the_run(client: Client) -> None:
    async with Worker(client, workflows=[Forever, quick]):
        handle = await client.start_workflow(
            Forever, 100, id="slow", run_timeout=timedelta(milliseconds=300)
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result(timeout=10)
        assert info.value.status == "TimedOut"
        assert isinstance(info.value.cause, DuroTimeoutError)
        assert info.value.cause.kind == "workflow_run"
        kinds = [e.type for e in await handle.fetch_history()]
        assert kinds[-1] == EventType.WORKFLOW_EXECUTION_TIMED_OUT
        # A run that finishes in time is not affected.
        assert (
            await client.execute_workflow(quick, id="fast", run_timeout=timedelta(seconds=5))
            == "done"
        )


async def test_execution_timeout_spans_continue_as_new(client: Client) -> None:
    async with Worker(client, workflows=[Forever]):
        handle = await client.start_workflow(
            Forever, 0, id="chain", execution_timeout=timedelta(milliseconds=500)
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result(timeout=10)
    assert isinstance(info.value.cause, DuroTimeoutError)
    assert info.value.cause.kind == "workflow_execution"
    runs = await client.list_workflows("WorkflowId = 'chain'")
    assert len(runs) >= 2  # it continued as new before the deadline hit
    assert runs[0].status == RunStatus.TIMED_OUT
