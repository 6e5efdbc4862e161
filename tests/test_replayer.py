"""The replay checker (`duro replay`, `duro.Replayer`): gate a deploy on stored histories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from duro import Client, NonDeterminismError, Replayer, Worker, workflow
from duro.cli import cli
from examples.agent.agent import TravelAgent
from tests import replay_changed

HISTORIES = Path(__file__).parent / "histories"
GOLDEN = HISTORIES / "travel_agent.json"


def test_replayer_accepts_the_current_code() -> None:
    results = Replayer([TravelAgent]).replay_files([HISTORIES])
    assert results
    assert all(r.ok for r in results), [str(r) for r in results]


def test_replayer_reports_the_divergence_per_run() -> None:
    [result] = Replayer([replay_changed.TravelAgent]).replay_files([GOLDEN])
    assert not result.ok
    assert isinstance(result.error, NonDeterminismError)
    assert result.error.event_id == 3
    assert "call_model" in str(result.error.recorded)
    assert "book_flight" in str(result.error.produced)
    assert "FAILED" in str(result) and result.workflow_id == "trip-1"


def test_unreadable_and_unknown_histories_are_failures_not_crashes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    exported = json.loads(GOLDEN.read_text())
    exported["events"][0]["attributes"]["workflow_type"] = "Unknown"
    other.write_text(json.dumps(exported))
    results = Replayer([TravelAgent]).replay_files([bad, other])
    assert [r.ok for r in results] == [False, False]
    assert "cannot read history file" in str(results[0].error)
    assert "unknown workflow type 'Unknown'" in str(results[1].error)


def test_cli_exits_zero_when_every_history_replays() -> None:
    out = CliRunner().invoke(cli, ["replay", "examples.agent.agent", str(GOLDEN)])
    assert out.exit_code == 0, out.output
    assert "1 replayed cleanly, 0 diverged" in out.output


def test_cli_exits_non_zero_on_divergence_and_says_where() -> None:
    out = CliRunner().invoke(cli, ["replay", "tests.replay_changed", str(GOLDEN), "--json"])
    assert out.exit_code == 1
    [verdict] = json.loads(out.output)
    assert verdict["ok"] is False
    assert verdict["workflow_id"] == "trip-1"
    assert "NonDeterminismError" in verdict["error"] and "event 3" in verdict["error"]


@workflow.defn(name="Parked")
class Parked:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="Parked")
class ParkedChanged:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(1)  # a timer the recorded runs never started
        await workflow.wait_condition(lambda: False)


PARKED_OK = [Parked]
PARKED_CHANGED = [ParkedChanged]


async def test_replay_running_runs_from_the_database(client: Client, db_url: str) -> None:
    async with Worker(client, workflows=[Parked]):
        handles = [await client.start_workflow(Parked, id=f"parked-{i}") for i in range(3)]
        for h in handles:
            while len(await h.fetch_history()) < 2:
                await asyncio.sleep(0.01)
    replayer = Replayer([Parked])
    results = await replayer.replay_store(client, "WorkflowType = 'Parked' AND Status = 'Running'")
    assert sorted(r.workflow_id for r in results) == ["parked-0", "parked-1", "parked-2"]
    assert all(r.ok for r in results)
    changed = await Replayer([ParkedChanged]).replay_store(client)
    assert len(changed) == 3 and not any(r.ok for r in changed)
    # The same through the CLI, as a deploy gate would run it (in a thread: the CLI runs its
    # own event loop).
    query = "WorkflowType = 'Parked' AND Status = 'Running'"
    ok = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["replay", "tests.test_replayer:PARKED_OK", "--db", db_url, "--query", query],
    )
    assert ok.exit_code == 0, ok.output
    assert "3 replayed cleanly, 0 diverged" in ok.output
    bad = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["replay", "tests.test_replayer:PARKED_CHANGED", "--db", db_url, "--query", query],
    )
    assert bad.exit_code == 1
    assert "0 replayed cleanly, 3 diverged" in bad.output
