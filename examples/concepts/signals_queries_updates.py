"""Signals, queries and updates: talking to a running research agent.

Scenario: a research assistant runs for as long as a user works with it. The user *signals*
it new sources to read (fire and forget, recorded in history), *queries* its status (answered
from its state, history untouched) and *updates* it with a question (the caller waits for the
handler's answer, which calls a model activity). A validator rejects empty questions before
anything is written. Signal-with-start and update-with-start open a session in one call.

Run: ``.venv/bin/python -m examples.concepts.signals_queries_updates [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import Client, EventType, UpdateFailedError, Worker, activity, workflow


@activity.defn
async def answer_question(question: str, sources: list[str]) -> str:
    """Stands in for a model call that answers from the sources read so far."""
    return f"{question.rstrip('?')}: see {', '.join(sources) or 'no sources'}"


@workflow.defn
class ResearchAssistant:
    def __init__(self) -> None:
        self.sources: list[str] = []
        self.answered = 0
        self.done = False

    @workflow.run
    async def run(self, topic: str) -> str:
        await workflow.wait_condition(lambda: self.done)
        return f"{topic}: {len(self.sources)} source(s), {self.answered} answer(s)"

    @workflow.signal
    def add_source(self, url: str) -> None:
        self.sources.append(url)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def status(self) -> dict[str, int]:
        return {"sources": len(self.sources), "answered": self.answered}

    @workflow.update
    async def ask(self, question: str) -> str:
        answer: str = await answer_question(question, list(self.sources))
        self.answered += 1
        return answer

    # ``@workflow.update`` keeps the method's type, which has no ``validator`` for mypy.
    @ask.validator
    def _check_ask(self, question: str) -> None:
        if not question.strip():
            raise ValueError("empty question")
        if self.done:
            raise ValueError("the session is finishing")


async def main(db_path: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        worker = Worker(client, workflows=[ResearchAssistant], activities=[answer_question])
        async with worker:
            # Signal-with-start: the first source arrives with the start, in one transaction.
            handle = await client.start_workflow(
                ResearchAssistant.run,
                "durable execution",
                id=f"research-{tag}",
                start_signal=(ResearchAssistant.add_source, ["https://temporal.io"]),
            )
            await handle.signal(ResearchAssistant.add_source, "https://sqlite.org")
            answer = await handle.execute_update(ResearchAssistant.ask, "What is replay?")
            print(f"update answered: {answer}")
            assert "sqlite.org" in answer  # both signals were handled before the update

            before = len(await handle.fetch_history())
            try:
                await handle.execute_update(ResearchAssistant.ask, "   ")
                raise AssertionError("the validator should have rejected an empty question")
            except UpdateFailedError as e:
                print(f"rejected update: {e}")
            assert len(await handle.fetch_history()) == before  # nothing was recorded

            status = await handle.query(ResearchAssistant.status)
            print(f"query status: {status}")
            assert status == {"sources": 2, "answered": 1}

            # Update-with-start: reuses the running session (or would start one).
            same, again = await client.execute_update_with_start(
                ResearchAssistant.run,
                "durable execution",
                id=f"research-{tag}",
                update=ResearchAssistant.ask,
                update_args=["Who fires timers?"],
            )
            assert same.run_id == handle.run_id
            print(f"update-with-start answered: {again}")

            await handle.signal(ResearchAssistant.finish)
            result = await handle.result(timeout=10)
            print(f"result: {result}")
            assert result == "durable execution: 2 source(s), 2 answer(s)"
            kinds = [e.type for e in await handle.fetch_history()]
            assert kinds.count(EventType.WORKFLOW_EXECUTION_SIGNALED) == 3


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
