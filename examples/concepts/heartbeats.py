"""Heartbeats: a long activity that reports progress and resumes where it stopped.

Scenario: an agent embeds 10 documents in one long activity. After each document the
activity calls ``activity.heartbeat(done_so_far)``. The first attempt crashes half way (a
flaky GPU); the retry reads ``activity.info().heartbeat_details`` and resumes from the last
reported document instead of starting over. ``describe()`` shows the pending activity's
attempt and last heartbeat meanwhile. A ``heartbeat_timeout`` would also end an attempt
whose heartbeats stop (a hung worker) long before its ``start_to_close_timeout``.

Run: ``.venv/bin/python -m examples.concepts.heartbeats [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from duro import Client, RetryPolicy, Worker, activity, workflow

EMBEDDED: list[tuple[int, int]] = []  # (attempt, document)


@activity.defn(
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=3),
)
async def embed_documents(total: int) -> dict[str, int]:
    info = activity.info()
    start: int = info.heartbeat_details or 0  # what the previous attempt reported
    for doc in range(start, total):
        EMBEDDED.append((info.attempt, doc))
        activity.heartbeat(doc + 1)  # documents done so far
        if info.attempt == 1 and doc == total // 2:
            # Heartbeats are throttled (a few per second): give the last one time to land.
            await asyncio.sleep(0.6)
            raise RuntimeError("GPU fell over")
    return {"attempt": info.attempt, "resumed_from": start}


@workflow.defn
async def index_corpus(total: int) -> dict[str, int]:
    outcome: dict[str, int] = await embed_documents(total)
    return outcome


async def main(db_path: str) -> None:
    EMBEDDED.clear()
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[index_corpus], activities=[embed_documents]):
            handle = await client.start_workflow(
                index_corpus, 10, id=f"index-{uuid.uuid4().hex[:6]}"
            )
            outcome = await handle.result(timeout=10)
        print(f"outcome: {outcome}")
        print(f"documents embedded per attempt: {[a for a, _ in EMBEDDED]}")
        assert outcome == {"attempt": 2, "resumed_from": 6}
        # Attempt 1 did documents 0-5; attempt 2 did only 6-9.
        assert [d for a, d in EMBEDDED if a == 2] == [6, 7, 8, 9]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
