"""Cancellation: stopping an agent (and its running model call) cleanly.

Scenario: a deep-research agent runs a long model call that streams progress (it
heartbeats). Two kinds of cancellation:

1. The agent gives up on a slow step itself: ``asyncio.wait_for(..., timeout)`` cancels the
   activity; the activity learns it at its next ``activity.heartbeat()`` (``CancelledError``
   inside it) and the agent falls back to a cheaper step.
2. The user cancels the whole run with ``handle.cancel()``: ``asyncio.CancelledError`` is raised
   in the workflow at its current await; the agent runs a cleanup activity and re-raises, so
   the run closes as ``Canceled``. ``handle.terminate()`` would close it at once instead,
   running no more code.

Run: ``.venv/bin/python -m examples.concepts.cancellation [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from duro import Client, RunStatus, Worker, WorkflowFailureError, activity, workflow

EVENTS: list[str] = []


@activity.defn(heartbeat_timeout=timedelta(seconds=5))
async def long_model_call(prompt: str) -> str:
    """A slow streaming call: heartbeats each chunk, so it hears about cancellation."""
    try:
        for _ in range(1000):
            activity.heartbeat()
            await asyncio.sleep(0.02)
        return f"deep answer to {prompt}"
    except asyncio.CancelledError:
        EVENTS.append(f"model call for {prompt!r} cancelled")
        raise


@activity.defn
async def quick_model_call(prompt: str) -> str:
    return f"quick answer to {prompt}"


@activity.defn
async def release_resources(job: str) -> None:
    EVENTS.append(f"released resources of {job}")


@workflow.defn
class DeepResearch:
    def __init__(self) -> None:
        self.stage = "starting"

    @workflow.run
    async def run(self, question: str) -> str:
        try:
            # 1. Give up on a slow step: wait_for cancels the activity.
            try:
                draft = await asyncio.wait_for(long_model_call(question), timeout=0.2)
            except TimeoutError:
                draft = await quick_model_call(question)
            self.stage = "waiting for review"
            # 2. Wait (durably) for a review that never comes: the user cancels instead.
            await workflow.sleep(timedelta(hours=1))
            return draft
        except asyncio.CancelledError:
            self.stage = "cleaning up"
            await release_resources(question)
            raise  # close the run as Canceled

    @workflow.query
    def status(self) -> str:
        return self.stage


async def main(db_path: str) -> None:
    EVENTS.clear()
    activities = [long_model_call, quick_model_call, release_resources]
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[DeepResearch], activities=activities):
            handle = await client.start_workflow(
                DeepResearch.run, "why is the sky blue", id=f"research-{uuid.uuid4().hex[:6]}"
            )
            while await handle.query(DeepResearch.status) != "waiting for review":
                await asyncio.sleep(0.02)
            await handle.cancel("the user closed the tab")
            failure: WorkflowFailureError | None = None
            try:
                await handle.result(timeout=10)
            except WorkflowFailureError as e:
                failure = e
            assert failure is not None, "the run should have been canceled"
            print(f"result: {failure.status} ({failure.cause})")
            assert failure.status == "Canceled"
            while len(EVENTS) < 2:  # the cancelled activity reports on its own schedule
                await asyncio.sleep(0.02)
        for event in EVENTS:
            print(f"  {event}")
        assert sorted(EVENTS) == [
            "model call for 'why is the sky blue' cancelled",
            "released resources of why is the sky blue",
        ]
        assert (await handle.describe()).status == RunStatus.CANCELED


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
