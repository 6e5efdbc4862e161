"""Child workflows: a lead agent that fans work out to sub-agents.

Scenario: a lead agent splits a report into topics and starts one researcher sub-agent per
topic as a child workflow. Each child has its own history (visible in ``list`` and
``describe``) and its result is recorded in the parent's history, so a crash of the lead never
re-runs a finished researcher. One topic has no sources: that child fails, and the lead gets
a ``ChildWorkflowError`` it can handle like any exception.

Run: ``.venv/bin/python -m examples.concepts.child_workflows [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import ApplicationError, ChildWorkflowError, Client, RunStatus, Worker, activity, workflow


@activity.defn
async def research(topic: str) -> str:
    """Stands in for a search tool plus a model summary."""
    if topic == "atlantis":
        raise ApplicationError(f"no sources about {topic}", type="NoSources", non_retryable=True)
    return f"notes on {topic}"


@workflow.defn
async def researcher(topic: str) -> str:
    notes: str = await research(topic)
    return notes


@workflow.defn
async def lead(topics: list[str]) -> dict[str, str]:
    # Start every child first, then await them together: they run in parallel.
    handles = [workflow.start_child_workflow(researcher, t) for t in topics]
    outcomes = await asyncio.gather(*handles, return_exceptions=True)
    report: dict[str, str] = {}
    for topic, outcome in zip(topics, outcomes, strict=True):
        if isinstance(outcome, ChildWorkflowError):
            report[topic] = f"skipped ({outcome.status})"
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            report[topic] = str(outcome)
    return report


async def main(db_path: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with (
        await Client.connect(f"sqlite:///{db_path}") as client,
        Worker(client, workflows=[lead, researcher], activities=[research]),
    ):
        handle = await client.start_workflow(
            lead, ["replay", "timers", "atlantis"], id=f"report-{tag}"
        )
        report = await handle.result(timeout=10)
        print(f"report: {report}")
        assert report == {
            "replay": "notes on replay",
            "timers": "notes on timers",
            "atlantis": "skipped (Failed)",
        }
        info = await handle.describe()
        for child_id, child_run, status in info.children:
            print(f"  child {child_id} (run {child_run[:8]}): {status.value}")
        # Default child ids are deterministic: <parent id>/<type>-<n>.
        assert [c[0] for c in info.children] == [f"report-{tag}/researcher-{i}" for i in (1, 2, 3)]
        assert [c[2] for c in info.children] == [
            RunStatus.COMPLETED,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
        ]
        child = await client.get_workflow_handle(f"report-{tag}/researcher-1").describe()
        assert child.parent_workflow_id == f"report-{tag}"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
