"""Asynchronous completion: an activity finished by someone else (a human reviewer).

Scenario: before an agent publishes a blog post, a person must review it. The
``request_review`` activity files a ticket holding ``activity.info().task_token`` and calls
``activity.raise_complete_async()``: the attempt stays open, bounded by its
``start_to_close_timeout`` (set a long one), and no worker has to stay alive for it. Later the
ticket system (here a plain dict; in real life a webhook handler) calls
``client.heartbeat_activity(token)`` and ``client.fail_activity(token, ...)`` (retried like any
failure: a new ticket is filed) and finally ``client.complete_activity(token, result)``.

Run: ``.venv/bin/python -m examples.concepts.async_completion [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from duro import Client, RetryPolicy, Worker, activity, workflow
from duro.errors import LeaseLostError

TICKETS: dict[str, str] = {}  # post -> task token: the "ticket system"


@activity.defn(
    start_to_close_timeout=timedelta(days=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)),
)
async def request_review(post: str) -> str:
    TICKETS[post] = activity.info().task_token
    activity.raise_complete_async()


@activity.defn
async def publish(post: str, verdict: str) -> str:
    return f"published {post!r} ({verdict})"


@workflow.defn
async def blog_agent(post: str) -> str:
    verdict: str = await request_review(post)
    published: str = await publish(post, verdict)
    return published


async def _ticket(post: str) -> str:
    while post not in TICKETS:
        await asyncio.sleep(0.01)
    return TICKETS.pop(post)


async def main(db_path: str) -> None:
    TICKETS.clear()
    post = f"why-durable-{uuid.uuid4().hex[:6]}"
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[blog_agent], activities=[request_review, publish]):
            handle = await client.start_workflow(blog_agent, post, id=post)
            first = await _ticket(post)
        # The worker is gone; the review still waits for its token (no timeout, no retry).
        pending = (await handle.describe()).pending_activities[0]
        print(f"waiting on {pending.activity_type}, attempt {pending.attempt}, worker stopped")
        assert pending.attempt == 1
        assert await client.heartbeat_activity(first, {"reviewer": "ann", "read": "50%"})
        await client.fail_activity(first, "reviewer went on holiday")  # retried: new ticket
        async with Worker(client, workflows=[blog_agent], activities=[request_review, publish]):
            second = await _ticket(post)
            await client.complete_activity(second, "approved by bob")
            result = await handle.result(timeout=10)
        print(f"result: {result}")
        assert result == f"published {post!r} (approved by bob)"
        try:
            await client.complete_activity(second, "approved twice")
            raise AssertionError("a token completes its attempt only once")
        except LeaseLostError as e:
            print(f"second completion refused: {e}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
