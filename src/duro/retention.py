"""Retention: closed runs are deleted some time after they close, optionally archived first.

Each namespace has a retention period (default 30 days, ``duro namespace set``). Workers sweep
their namespace in the background; runs that closed earlier than the period are exported, if
the namespace has an archive directory, as JSON lines (one file per day, each line the same
export as ``duro workflow show --json``) and then deleted with everything stored for them.
Open runs are never touched.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from duro.store.protocol import Store

__all__ = ["sweep"]


async def sweep(store: Store, namespace: str, *, batch: int = 200) -> int:
    """Delete (after archiving) the namespace's expired runs; returns how many were deleted."""
    settings = await store.namespace_settings(namespace)
    total = 0
    while True:
        run_ids = await store.expired_runs(namespace, settings.retention_seconds, batch)
        if not run_ids:
            return total
        if settings.archive_dir:
            await _archive(store, namespace, Path(settings.archive_dir), run_ids)
        total += await store.delete_runs(run_ids)
        if len(run_ids) < batch:
            return total


async def _archive(store: Store, namespace: str, folder: Path, run_ids: list[str]) -> None:
    lines: dict[str, list[str]] = {}
    for run_id in run_ids:
        events = await store.get_history(run_id)
        if not events:
            continue
        first = events[0].attrs
        day = datetime.fromtimestamp(events[-1].time, UTC).strftime("%Y-%m-%d")
        record = {
            "namespace": namespace,
            "workflow_id": first.get("workflow_id"),
            "run_id": run_id,
            "events": [e.to_json() for e in events],
        }
        lines.setdefault(day, []).append(json.dumps(record, default=str))

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for day, records in lines.items():
            with (folder / f"{namespace}-{day}.jsonl").open("a", encoding="utf-8") as f:
                f.write("\n".join(records) + "\n")

    # The archive is written (and flushed) before anything is deleted.
    await asyncio.to_thread(write)
