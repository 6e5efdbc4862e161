"""Namespaces and retention: teams that share a database but not their data.

Scenario: two teams run agents on one SQLite file, each in its own namespace: the same
workflow id exists in both without clashing, and lists never cross namespaces. Team A keeps
closed runs only briefly (here 1 second; in real life days) and archives them first: a worker's
retention sweep exports expired closed runs as JSON lines into the archive directory, then
deletes them. Open runs are never touched; team B's default retention (30 days) is unaffected.

Run: ``.venv/bin/python -m examples.concepts.retention_namespaces [db path]``
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from duro import Client, Worker, WorkflowNotFoundError, workflow


@workflow.defn
async def nightly_summary(team: str) -> str:
    return f"summary for {team}"


@workflow.defn
class Inbox:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)  # stays open


async def main(db_path: str) -> None:
    tag = uuid.uuid4().hex[:6]
    url = f"sqlite:///{db_path}"
    archive = Path(db_path).with_name(f"{Path(db_path).stem}-archive-{tag}")
    async with (
        await Client.connect(url, namespace=f"team-a-{tag}") as team_a,
        await Client.connect(url, namespace=f"team-b-{tag}") as team_b,
    ):
        await team_a.set_retention(timedelta(seconds=1), archive_dir=str(archive))
        print(f"team A: {await team_a.namespace_settings()}")
        print(f"team B: {await team_b.namespace_settings()}")
        assert (await team_b.namespace_settings()).retention_seconds == 30 * 86400
        sweep = timedelta(milliseconds=200)  # default: every minute
        async with (
            Worker(team_a, workflows=[nightly_summary, Inbox], retention_sweep_interval=sweep),
            Worker(team_b, workflows=[nightly_summary], retention_sweep_interval=sweep),
        ):
            # The same workflow id in two namespaces: two independent runs.
            a = await team_a.execute_workflow(nightly_summary, "A", id="nightly")
            b = await team_b.execute_workflow(nightly_summary, "B", id="nightly")
            print(f"{a!r} / {b!r}")
            assert (a, b) == ("summary for A", "summary for B")
            await team_a.start_workflow(Inbox, id="inbox")
            assert [r.namespace for r in await team_b.list_workflows()] == [f"team-b-{tag}"]

            # Wait for team A's sweep to archive and delete the closed run.
            while True:
                try:
                    await team_a.get_workflow_handle("nightly").describe()
                except WorkflowNotFoundError:
                    break
                await asyncio.sleep(0.1)
        left_a = [r.workflow_id for r in await team_a.list_workflows()]
        left_b = [r.workflow_id for r in await team_b.list_workflows()]
        print(f"team A keeps {left_a} (open), team B keeps {left_b}")
        assert left_a == ["inbox"]
        assert left_b == ["nightly"]
        [archived] = archive.glob("*.jsonl")
        record = json.loads(archived.read_text().splitlines()[0])
        print(
            f"archived to {archived.name}: {record['workflow_id']}, {len(record['events'])} events"
        )
        assert record["workflow_id"] == "nightly"
        await team_a.get_workflow_handle("inbox").terminate("example done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
