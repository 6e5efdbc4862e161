"""Visibility: finding agent runs by status, type and search attributes.

Scenario: a support team runs one triage agent per ticket. Each run is started with the
customer id and priority as *search attributes*, and the agent upserts its ``Stage`` as it
goes (``triage`` -> ``awaiting-approval`` -> ``done``). The team's dashboard then asks
questions such as "which tickets of customer c-1 are waiting for approval?" with visibility
queries (``client.list_workflows`` / ``count_workflows``, or ``duro workflow list --query``).
A *memo* carries notes shown by ``describe`` but not indexed. Querying a field that does not
exist is an error (``QuerySyntaxError``), not an empty result.

Run: ``.venv/bin/python -m examples.concepts.visibility [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import Client, QuerySyntaxError, Worker, workflow


@workflow.defn
class TriageAgent:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self, ticket: str) -> str:
        workflow.upsert_search_attributes({"Stage": "triage"})
        workflow.upsert_memo({"summary": f"triaged {ticket}"})
        workflow.upsert_search_attributes({"Stage": "awaiting-approval"})
        await workflow.wait_condition(lambda: self.approved)
        workflow.upsert_search_attributes({"Stage": "done"})
        return f"{ticket} resolved"

    @workflow.signal
    def approve(self) -> None:
        self.approved = True


async def main(db_path: str) -> None:
    batch = uuid.uuid4().hex[:6]  # keeps this run's tickets apart in a shared database
    tickets = [("c-1", 1), ("c-2", 3), ("c-1", 2)]
    async with (
        await Client.connect(f"sqlite:///{db_path}") as client,
        Worker(client, workflows=[TriageAgent]),
    ):
        handles = [
            await client.start_workflow(
                TriageAgent.run,
                f"ticket {i}",
                id=f"ticket-{batch}-{i}",
                search_attributes={"Batch": batch, "CustomerId": cust, "Priority": prio},
                memo={"opened_by": "email"},
            )
            for i, (cust, prio) in enumerate(tickets)
        ]
        # Wait until every agent reached its approval step. (Querying ``Stage`` before any
        # run of the namespace has set it would raise QuerySyntaxError: unknown field.)
        for h in handles:
            while (await h.describe()).search_attributes.get("Stage") != "awaiting-approval":
                await asyncio.sleep(0.02)
        waiting = f"Batch = '{batch}' AND Stage = 'awaiting-approval'"
        assert await client.count_workflows(waiting) == 3
        await handles[0].signal(TriageAgent.approve)
        await handles[0].result(timeout=10)

        urgent = await client.list_workflows(
            f"Batch = '{batch}' AND Priority >= 2 ORDER BY StartTime ASC"
        )
        print(f"priority >= 2: {[r.workflow_id for r in urgent]}")
        assert [r.workflow_id for r in urgent] == [f"ticket-{batch}-1", f"ticket-{batch}-2"]

        c1_waiting = await client.list_workflows(
            f"{waiting} AND CustomerId = 'c-1' AND Status = 'Running'"
        )
        print(f"c-1 awaiting approval: {[r.workflow_id for r in c1_waiting]}")
        assert [r.workflow_id for r in c1_waiting] == [f"ticket-{batch}-2"]

        done = await client.count_workflows(
            f"Batch = '{batch}' AND WorkflowType = 'TriageAgent' AND Status = 'Completed'"
        )
        assert done == 1
        info = await handles[0].describe()
        print(f"ticket 0: attributes {info.search_attributes}, memo {info.memo}")
        assert info.search_attributes["Stage"] == "done"
        assert info.memo == {"opened_by": "email", "summary": "triaged ticket 0"}

        try:
            await client.list_workflows("Colour = 'red'")
            raise AssertionError("an unknown field should be refused")
        except QuerySyntaxError as e:
            print(f"unknown field: {e}")
        for h in handles[1:]:
            await h.terminate("example done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
