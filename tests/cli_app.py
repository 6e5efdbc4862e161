"""Small workflows and activities driven through the command line by ``tests/test_cli.py``.

The test runs ``duro worker tests.cli_app`` in a subprocess, so this module must import from the
repository root and register everything the CLI tests start.
"""

from __future__ import annotations

from datetime import timedelta

from duro import ApplicationError, RetryPolicy, activity, workflow


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@activity.defn(retry_policy=RetryPolicy(initial_interval=timedelta(hours=1)))
async def unreachable(url: str) -> str:
    """Always fails; its retry is an hour away, so the run sits with a pending activity."""
    raise ConnectionError(f"cannot reach {url}")


ISSUED_TOKENS: list[str] = []
"""Task tokens handed out by ``external_review`` (the CLI tests run the worker in-process)."""


@activity.defn(retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)))
async def external_review(doc: str) -> str:
    """Hands its task token to "another system" and returns; ``duro activity`` finishes it."""
    ISSUED_TOKENS.append(activity.info().task_token)
    activity.raise_complete_async()


@workflow.defn
async def review(doc: str) -> str:
    return await external_review(doc)


@workflow.defn
async def hello(name: str) -> str:
    return await greet(name)


@workflow.defn
async def doomed(reason: str) -> str:
    raise ApplicationError(reason, non_retryable=True)


@workflow.defn
async def fetch(url: str) -> str:
    return await unreachable(url)


@workflow.defn
class Approval:
    """Waits for an ``approve`` signal; ``status`` tells who approved so far."""

    def __init__(self) -> None:
        self.approved_by: str | None = None
        self.notes: list[str] = []

    @workflow.run
    async def run(self, title: str) -> dict[str, str]:
        await workflow.wait_condition(lambda: self.approved_by is not None)
        assert self.approved_by is not None
        return {"title": title, "approved_by": self.approved_by}

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.update
    def note(self, text: str) -> int:
        """Attach a note for the approver; returns how many notes there are."""
        self.notes.append(text)
        return len(self.notes)

    @note.validator
    def _check_note(self, text: str) -> None:
        if not text.strip():
            raise ValueError("a note needs text")

    @workflow.query
    def status(self) -> str:
        return f"approved by {self.approved_by}" if self.approved_by else "waiting"


def everything() -> list[object]:
    """For ``duro worker tests.cli_app:everything`` (a callable target)."""
    return [hello, doomed, fetch, review, Approval, greet, unreachable, external_review]
