"""Flow control: keep a model API under its quota, and customers from starving each other.

Scenario: many research agents call the same model API, which allows only a few concurrent
requests. Limits kept in the store bind every worker of the namespace (here two workers on one
SQLite file):

- ``set_flow_limit("activity_type", "summarize", max_concurrent=2)``: at most two
  ``summarize`` attempts run at once, whatever the number of workers (``rate_per_second`` and
  ``burst`` would cap starts per second too).
- ``set_flow_limit("workflow_key", "customer_agent", max_concurrent=1)`` with
  ``start_workflow(..., concurrency_key=customer)``: one running agent per customer; the
  others wait, in start order.
- ``priority=``: an urgent run's tasks go before lower priorities of its queue.

Run: ``.venv/bin/python -m examples.concepts.flow_control [db path]``
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid

from duro import Client, Worker, activity, workflow

RUNNING = [0, 0]  # [now, peak] of concurrent summarize attempts


@activity.defn
async def summarize(chunk: str) -> str:
    """Stands in for a rate-limited model API."""
    RUNNING[0] += 1
    RUNNING[1] = max(RUNNING[1], RUNNING[0])
    try:
        await asyncio.sleep(0.05)
    finally:
        RUNNING[0] -= 1
    return chunk.upper()


@workflow.defn
async def summarize_report(chunks: list[str]) -> list[str]:
    return list(await asyncio.gather(*(summarize(c) for c in chunks)))


@workflow.defn
async def customer_agent(customer: str) -> str:
    await summarize(customer)
    await workflow.sleep(0.05)
    return customer


async def main(db_path: str) -> None:
    RUNNING[:] = [0, 0]
    tag = uuid.uuid4().hex[:6]
    url = f"sqlite:///{db_path}"
    workflows, activities = [summarize_report, customer_agent], [summarize]
    async with await Client.connect(url) as client, await Client.connect(url) as other:
        await client.set_flow_limit("activity_type", "summarize", max_concurrent=2)
        await client.set_flow_limit("workflow_key", "customer_agent", max_concurrent=1)
        try:
            limits = [(x.scope, x.name, x.max_concurrent) for x in await client.flow_limits()]
            print(f"limits: {limits}")
            async with (
                Worker(client, workflows=workflows, activities=activities),
                Worker(other, workflows=workflows, activities=activities),
            ):
                chunks = [f"chunk {i}" for i in range(10)]
                summary = await client.execute_workflow(
                    summarize_report, chunks, id=f"report-{tag}", priority=10
                )
                print(f"summarized {len(summary)} chunks, peak concurrency {RUNNING[1]}")
                assert summary == [c.upper() for c in chunks]
                assert RUNNING[1] <= 2  # both workers together stayed under the limit

                handles = [
                    await client.start_workflow(
                        customer_agent, "c-42", id=f"agent-{tag}-{i}", concurrency_key="c-42"
                    )
                    for i in range(3)
                ]
                await asyncio.gather(*(h.result(timeout=10) for h in handles))
            infos = [await h.describe() for h in handles]
            for info in infos:
                print(f"  {info.workflow_id}: {info.start_time:.2f} -> {info.close_time:.2f}")
            # One at a time for c-42: each did its first task after the previous one closed.
            for earlier, later in itertools.pairwise(infos):
                first_task = (await client.store.get_history(later.run_id))[1]
                assert earlier.close_time is not None
                assert first_task.time >= earlier.close_time
        finally:
            # Limits live in the store; remove them so other examples are not throttled.
            await client.delete_flow_limit("activity_type", "summarize")
            await client.delete_flow_limit("workflow_key", "customer_agent")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
