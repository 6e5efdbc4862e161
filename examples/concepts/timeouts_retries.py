"""Timeouts and retries: tools that fail, hang, or refuse.

Scenario: an agent calls three tools.

- ``search_web`` is rate limited twice (HTTP 429) and then answers: the server's Retry-After
  becomes ``ApplicationError(next_retry_delay=...)``, which replaces the backoff; attempts
  still count against ``maximum_attempts``.
- ``fetch_page`` hangs on its first attempt: ``start_to_close_timeout`` ends that attempt and
  the retry policy starts another, which answers.
- ``charge_card`` is refused (``non_retryable=True``): no retry; the workflow gets an
  ``ActivityError`` whose ``cause`` is the ``ApplicationError`` and falls back.

And the whole agent run has a ``run_timeout``: a second run that waits forever closes as
``TimedOut``.

Run: ``.venv/bin/python -m examples.concepts.timeouts_retries [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from duro import (
    ActivityError,
    ApplicationError,
    Client,
    RetryPolicy,
    Worker,
    WorkflowFailureError,
    activity,
    workflow,
)
from duro.errors import TimeoutError as DuroTimeoutError

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=5)


@activity.defn(retry_policy=FAST)
async def search_web(query: str) -> str:
    attempt = activity.info().attempt
    if attempt < 3:
        raise ApplicationError(
            f"429 Too Many Requests (attempt {attempt})",
            type="RateLimited",
            next_retry_delay=timedelta(milliseconds=100),  # the server's Retry-After
        )
    return f"results for {query!r} after {attempt} attempts"


@activity.defn(start_to_close_timeout=timedelta(milliseconds=300), retry_policy=FAST)
async def fetch_page(url: str) -> str:
    if activity.info().attempt == 1:
        await asyncio.sleep(10)  # hangs: the attempt times out and is retried
    return f"page {url} on attempt {activity.info().attempt}"


@activity.defn(retry_policy=FAST)
async def charge_card(amount: int) -> str:
    raise ApplicationError("card declined", type="CardDeclined", non_retryable=True)


@workflow.defn
async def shopping_agent(item: str) -> list[str]:
    steps: list[str] = [await search_web(item), await fetch_page(f"https://shop/{item}")]
    try:
        await charge_card(42)
    except ActivityError as e:
        # e.cause is the activity's last error: here the ApplicationError it raised.
        kind = e.cause.type if isinstance(e.cause, ApplicationError) else repr(e.cause)
        steps.append(f"payment failed after {e.attempt} attempt(s): {kind}")
    return steps


@workflow.defn
async def waits_forever() -> None:
    await workflow.wait_condition(lambda: False)


async def main(db_path: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with (
        await Client.connect(f"sqlite:///{db_path}") as client,
        Worker(
            client,
            workflows=[shopping_agent, waits_forever],
            activities=[search_web, fetch_page, charge_card],
            graceful_shutdown_timeout=timedelta(milliseconds=100),
        ),
    ):
        steps = await client.execute_workflow(shopping_agent, "kettle", id=f"shop-{tag}")
        for step in steps:
            print(f"  {step}")
        assert steps == [
            "results for 'kettle' after 3 attempts",
            "page https://shop/kettle on attempt 2",
            "payment failed after 1 attempt(s): CardDeclined",
        ]
        handle = await client.start_workflow(
            waits_forever, id=f"stuck-{tag}", run_timeout=timedelta(milliseconds=300)
        )
        failure: WorkflowFailureError | None = None
        try:
            await handle.result(timeout=10)
        except WorkflowFailureError as e:
            failure = e
        assert failure is not None, "the run should have timed out"
        print(f"stuck run: {failure.status}, cause {failure.cause!r}")
        assert failure.status == "TimedOut"
        assert isinstance(failure.cause, DuroTimeoutError)
        assert failure.cause.kind == "workflow_run"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
