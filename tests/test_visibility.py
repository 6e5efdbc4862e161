"""The visibility query language: parsing, clear errors, and filtering runs in the store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from duro import Client, QuerySyntaxError, Worker, workflow
from duro.visibility import And, Compare, Not, Or, parse_query


def test_parses_conditions_order_and_converts_values() -> None:
    q = parse_query(
        "WorkflowType = 'Agent' AND status = 'running' AND StartTime > '2026-01-01' "
        "ORDER BY StartTime DESC"
    )
    assert q.where == And(
        (
            Compare("WorkflowType", "=", "Agent"),
            Compare("Status", "=", "Running"),
            Compare("StartTime", ">", datetime(2026, 1, 1, tzinfo=UTC).timestamp()),
        )
    )
    assert (q.order_by, q.descending) == ("StartTime", True)


def test_or_not_and_parentheses() -> None:
    q = parse_query("(WorkflowId = 'a' OR WorkflowId = 'b') AND NOT Status = 'Completed'")
    assert q.where == And(
        (
            Or((Compare("WorkflowId", "=", "a"), Compare("WorkflowId", "=", "b"))),
            Not(Compare("Status", "=", "Completed")),
        )
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("WorkflowType = ", "column 14.*expected one of NUMBER, STRING"),
        ("Status > 'Running'", "Status supports = and != only"),
        ("Status = 'Sleeping'", "unknown status 'Sleeping'"),
        ("StartTime > 'yesterday'", "ISO 8601"),
        ("WorkflowType = 3", "quoted string"),
        ("WorkflowType = 'a' AND", "bad query"),
    ],
)
def test_bad_queries_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=message):
        parse_query(text)


@workflow.defn
async def finisher(n: int) -> int:
    return n


@workflow.defn
class Waiter:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_list_workflows_filters_by_query_in_the_store(client: Client) -> None:
    async with Worker(client, workflows=[finisher, Waiter]):
        for i in range(3):
            await client.execute_workflow(finisher, i, id=f"done-{i}")
        for i in range(2):
            await client.start_workflow(Waiter, id=f"wait-{i}")
        while len(await client.list_workflows("Status = 'Completed'")) < 3:
            await asyncio.sleep(0.01)
    running = await client.list_workflows("WorkflowType = 'Waiter' AND Status = 'Running'")
    assert sorted(r.workflow_id for r in running) == ["wait-0", "wait-1"]
    oldest_first = await client.list_workflows("WorkflowType = 'finisher' ORDER BY StartTime ASC")
    assert [r.workflow_id for r in oldest_first] == ["done-0", "done-1", "done-2"]
    either = await client.list_workflows("WorkflowId = 'done-1' OR WorkflowId = 'wait-0'")
    assert sorted(r.workflow_id for r in either) == ["done-1", "wait-0"]
    assert (
        len(await client.list_workflows("StartTime > '2000-01-01' AND NOT Status = 'Running'")) == 3
    )
    with pytest.raises(QuerySyntaxError):
        await client.list_workflows("Status == 'Running'")


@workflow.defn
class Ticket:
    def __init__(self) -> None:
        self.stage = "new"

    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes({"Stage": "triage", "Priority": 2})
        await workflow.wait_condition(lambda: self.stage == "approved")
        workflow.upsert_search_attributes({"Stage": "done", "Priority": None})

    @workflow.signal
    def approve(self) -> None:
        self.stage = "approved"


async def test_search_attributes_set_at_start_and_upserted(client: Client) -> None:
    from datetime import UTC, datetime

    due = datetime(2026, 12, 1, tzinfo=UTC)
    async with Worker(client, workflows=[Ticket]):
        for i, customer in enumerate(["c-1", "c-2", "c-1"]):
            await client.start_workflow(
                Ticket, id=f"t-{i}", search_attributes={"CustomerId": customer, "Due": due}
            )
        for i in range(3):  # each run's first task sets Stage
            h = client.get_workflow_handle(f"t-{i}")
            while "Stage" not in (await h.describe()).search_attributes:
                await asyncio.sleep(0.01)
        assert await client.count_workflows("Stage = 'triage'") == 3
        mine = await client.list_workflows("CustomerId = 'c-1' ORDER BY StartTime ASC")
        assert [r.workflow_id for r in mine] == ["t-0", "t-2"]
        assert await client.count_workflows("Priority >= 2 AND Due > '2026-11-30'") == 3
        await client.get_workflow_handle("t-0").signal(Ticket.approve)
        await client.get_workflow_handle("t-0").result(timeout=10)
    assert await client.count_workflows("Stage = 'done'") == 1
    assert await client.count_workflows("CustomerId = 'c-1' AND Status = 'Running'") == 1
    info = await client.get_workflow_handle("t-0").describe()
    assert info.search_attributes == {"CustomerId": "c-1", "Due": due, "Stage": "done"}
    with pytest.raises(QuerySyntaxError, match="unknown field 'Colour'.*CustomerId"):
        await client.list_workflows("Colour = 'red'")
    with pytest.raises(ValueError, match="'WorkflowType' is a built-in field"):
        await client.start_workflow(Ticket, id="bad", search_attributes={"WorkflowType": "x"})
    with pytest.raises(ValueError, match="'Score' must be a finite number"):
        await client.start_workflow(Ticket, id="bad", search_attributes={"Score": float("nan")})
    with pytest.raises(ValueError, match="search attribute 'Tags' must be"):
        await client.start_workflow(Ticket, id="bad", search_attributes={"Tags": ["a"]})  # type: ignore[dict-item]


async def test_registered_and_once_used_names_stay_queryable(client: Client) -> None:
    # Before any run sets it, a name is a likely typo...
    with pytest.raises(QuerySyntaxError, match="unknown field 'Stage'"):
        await client.count_workflows("Stage = 'review'")
    # ...unless registered ahead of use: then it simply matches nothing yet.
    await client.register_search_attributes("Stage")
    assert await client.count_workflows("Stage = 'review'") == 0
    with pytest.raises(ValueError, match="built-in field"):
        await client.register_search_attributes("WorkflowId")
    with pytest.raises(ValueError, match="must be an identifier"):
        await client.register_search_attributes("not a name")

    # A name set by a run stays known after retention deleted every run that had it.
    handle = await client.start_workflow(Ticket, id="gone", search_attributes={"Team": "ml"})
    await handle.terminate("done")
    assert await client.count_workflows("Team = 'ml'") == 1
    assert handle.run_id is not None
    assert await client.store.delete_runs([handle.run_id]) == 1
    assert await client.count_workflows("Team = 'ml'") == 0
    assert await client.search_attribute_names() == ["Stage", "Team"]


def test_cli_search_attributes(db_url: str) -> None:
    from click.testing import CliRunner

    from duro.cli import cli

    def duro(*args: str) -> Any:
        out = CliRunner().invoke(cli, [*args, "--db", db_url])
        return out.exit_code, out.output

    code, out = duro("namespace", "search-attributes", "--add", "Stage", "--add", "Owner")
    assert code == 0 and json.loads(out) == ["Owner", "Stage"]
    code, out = duro("workflow", "count", "--query", "Owner = 'ann'")
    assert code == 0 and out.strip().endswith("0")
    code, out = duro("namespace", "search-attributes", "--add", "Status")
    assert code == 1 and "'Status' is a built-in field" in out


async def test_cli_count(client: Client, db_url: str) -> None:
    from click.testing import CliRunner

    from duro.cli import cli

    async with Worker(client, workflows=[finisher]):
        for i in range(2):
            await client.execute_workflow(finisher, i, id=f"n-{i}")
    out = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["workflow", "count", "--query", "WorkflowType = 'finisher'", "--db", db_url],
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "2"


@workflow.defn
async def noted() -> None:
    workflow.upsert_memo({"summary": "drafted", "draft": 1})
    workflow.upsert_memo({"draft": None, "reviewer": "ann"})


async def test_memo_set_at_start_and_upserted(client: Client) -> None:
    async with Worker(client, workflows=[noted]):
        handle = await client.start_workflow(noted, id="memo", memo={"owner": "bob"})
        await handle.result(timeout=10)
    info = await handle.describe()
    assert info.memo == {"owner": "bob", "summary": "drafted", "reviewer": "ann"}
