"""Retention: closed runs past their namespace's period are archived, then deleted."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from duro import Client, Worker, workflow
from duro.retention import sweep
from duro.store.sqlite import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@workflow.defn
async def done(n: int) -> int:
    return n


@workflow.defn
class Open:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_sweep_archives_then_deletes_only_expired_closed_runs(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(str(tmp_path / "r.db"), clock=clock)
    await store.start()
    client = Client(store)
    try:
        settings = await client.namespace_settings()
        assert settings.retention_seconds == 30 * 86400  # the default
        await client.set_retention(timedelta(days=1), archive_dir=str(tmp_path / "archive"))
        async with Worker(client, workflows=[done, Open], retention_sweep_interval=None):
            for i in range(3):
                assert await client.execute_workflow(done, i, id=f"done-{i}") == i
            await client.start_workflow(Open, id="open")
        clock.t += 2 * 86400
        assert await sweep(store, "default") == 3
        remaining = await client.list_workflows()
        assert [r.workflow_id for r in remaining] == ["open"]  # running runs stay
        [archive] = (tmp_path / "archive").glob("default-*.jsonl")
        records = [json.loads(line) for line in archive.read_text().splitlines()]
        assert sorted(r["workflow_id"] for r in records) == ["done-0", "done-1", "done-2"]
        assert records[0]["events"][-1]["type"] == "WorkflowExecutionCompleted"
        assert await sweep(store, "default") == 0
    finally:
        await store.close()


async def test_namespaces_do_not_see_each_others_data(db_url: str) -> None:
    a = await Client.connect(db_url, namespace="team-a")
    b = await Client.connect(db_url, namespace="team-b")
    try:
        async with Worker(a, workflows=[done]), Worker(b, workflows=[done]):
            assert await a.execute_workflow(done, 1, id="same-id") == 1
            assert await b.execute_workflow(done, 2, id="same-id") == 2  # no id clash
        assert [r.namespace for r in await a.list_workflows()] == ["team-a"]
        assert (await b.get_workflow_handle("same-id").result()) == 2
        await a.set_retention(timedelta(days=3))
        assert (await b.namespace_settings()).retention_seconds == 30 * 86400
    finally:
        await a.close()
        await b.close()
