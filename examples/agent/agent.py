"""A travel agent as a durable workflow.

The loop every agent has: ask the model, call the tool it picks, feed the result back, repeat;
then wait (durably) for prices to settle, ask a human to approve, and book. The model is a
scripted, deterministic stand-in so the example runs offline; swap ``call_model`` for a real
SDK call (it is an activity, so it may do I/O).

Kill the worker at any line and start it again: completed steps are not re-run, the sleep keeps
its deadline, and the approval wait survives.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import timedelta

from duro import ApplicationError, RetryPolicy, activity, workflow


@dataclass
class Message:
    role: str
    """``user``, ``assistant`` or ``tool``."""
    content: str


@dataclass
class ModelReply:
    text: str
    tool: str | None = None
    tool_input: str | None = None


@dataclass
class TripRequest:
    request: str
    settle_seconds: float = 2.0
    """How long to wait for prices to settle (a durable timer)."""


@dataclass
class TripResult:
    approved: bool
    summary: str
    booking: str | None = None
    transcript: list[Message] = field(default_factory=list)


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
async def call_model(conversation: list[Message]) -> ModelReply:
    """A scripted model: searches first, then proposes, then summarizes what the tools said."""
    last = conversation[-1]
    if last.role == "user" and len(conversation) == 1:
        return ModelReply(
            text="I'll look for flights first.", tool="search_flights", tool_input=last.content
        )
    if last.role == "tool" and last.content.startswith("flights:"):
        best = last.content.removeprefix("flights:").split(";")[0].strip()
        return ModelReply(text=f"The best option is {best}. Shall I book it?")
    if last.role == "tool" and last.content.startswith("booked:"):
        return ModelReply(text=f"Done: {last.content.removeprefix('booked:').strip()}.")
    return ModelReply(text="Understood, I won't book anything.")


@activity.defn(
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
)
def search_flights(query: str) -> str:
    """A flaky tool: the first two attempts hit a rate limit, the third succeeds.

    The server's Retry-After becomes ``next_retry_delay``, which overrides the backoff.
    """
    attempt = activity.info().attempt
    if attempt < 3:
        raise ApplicationError(
            f"flight API rate limited (429) on attempt {attempt}",
            type="RateLimited",
            next_retry_delay=timedelta(milliseconds=300),
        )
    return f"flights: DR 101 08:15 for 240 EUR; DR 205 13:40 for 310 EUR (for {query!r})"


@activity.defn
async def book_flight(option: str) -> str:
    """Books once per activity, whatever the retries: the idempotency key dedupes upstream."""
    key = activity.info().idempotency_key
    return f"booked: {option} (confirmation {zlib.crc32(key.encode()) % 100000:05d})"


@workflow.defn
class TravelAgent:
    def __init__(self) -> None:
        self.stage = "starting"
        self.decision: bool | None = None

    @workflow.run
    async def run(self, trip: TripRequest) -> TripResult:
        conversation = [Message("user", trip.request)]
        self.stage = "thinking"
        reply = await call_model(conversation)
        conversation.append(Message("assistant", reply.text))
        if reply.tool == "search_flights":
            self.stage = "searching flights"
            conversation.append(Message("tool", await search_flights(reply.tool_input or "")))
        proposal = await call_model(conversation)
        conversation.append(Message("assistant", proposal.text))

        self.stage = "waiting for prices to settle"
        await workflow.sleep(timedelta(seconds=trip.settle_seconds))

        self.stage = "awaiting approval"
        workflow.logger.info("waiting for a human to approve: %s", proposal.text)
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=timedelta(days=3)
            )
        except TimeoutError:
            self.decision = False
        if not self.decision:
            self.stage = "declined"
            return TripResult(False, "not booked", transcript=conversation)

        self.stage = "booking"
        booking = await book_flight("DR 101 08:15")
        conversation.append(Message("tool", booking))
        final = await call_model(conversation)
        conversation.append(Message("assistant", final.text))
        self.stage = "done"
        return TripResult(True, final.text, booking=booking, transcript=conversation)

    @workflow.signal
    def approve(self, approved: bool) -> None:
        self.decision = approved

    @workflow.query
    def status(self) -> str:
        return self.stage
