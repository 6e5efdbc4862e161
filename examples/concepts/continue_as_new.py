"""Continue-as-new: a chat agent that never ends, with a short history.

Scenario: a support chat runs for weeks. Every message adds events to its history, and a
long history makes each replay slower, so every few turns the agent calls
``workflow.continue_as_new(...)`` with the state it needs (turn count, transcript, messages
received but not handled yet). The workflow id stays the same; each run starts with a fresh
history; the client's handle follows the chain and ``result()`` returns the last run's result.

Run: ``.venv/bin/python -m examples.concepts.continue_as_new [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import Client, RunStatus, Worker, activity, workflow

TURNS_PER_RUN = 2


@activity.defn
async def reply(message: str) -> str:
    """Stands in for a model call."""
    return f"re: {message}"


@workflow.defn
class SupportChat:
    def __init__(self) -> None:
        self.inbox: list[str] = []

    @workflow.run
    async def run(
        self, turns: int, transcript: list[str], pending: list[str] | None = None
    ) -> list[str]:
        # Messages carried over from the previous run go first.
        self.inbox = [*(pending or []), *self.inbox]
        while True:
            await workflow.wait_condition(lambda: bool(self.inbox))
            message = self.inbox.pop(0)
            if message == "bye":
                return transcript
            transcript = [*transcript, await reply(message)]
            turns += 1
            if turns % TURNS_PER_RUN == 0 or workflow.info().continue_as_new_suggested:
                workflow.continue_as_new(turns, transcript, self.inbox)

    @workflow.signal
    def say(self, message: str) -> None:
        self.inbox.append(message)

    @workflow.query
    def run_info(self) -> dict[str, object]:
        info = workflow.info()
        return {"run_id": info.run_id, "continued_from": info.continued_from}


async def main(db_path: str) -> None:
    chat_id = f"chat-{uuid.uuid4().hex[:6]}"
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[SupportChat], activities=[reply]):
            handle = await client.start_workflow(SupportChat.run, 0, [], id=chat_id)
            for message in ["hello", "my order is late", "it is #42", "thanks", "bye"]:
                await handle.signal(SupportChat.say, message)
            transcript = await handle.result(timeout=10)
            print(f"transcript: {transcript}")
            assert transcript == [
                "re: hello",
                "re: my order is late",
                "re: it is #42",
                "re: thanks",
            ]
            info = await handle.query(SupportChat.run_info)
            print(f"last run {str(info['run_id'])[:8]} continued from {info['continued_from']}")
        runs = await client.list_workflows(f"WorkflowId = '{chat_id}' ORDER BY StartTime ASC")
        for run in runs:
            print(f"  run {run.run_id[:8]}: {run.status.value}, {run.history_length} events")
        assert [r.status for r in runs] == [
            RunStatus.CONTINUED_AS_NEW,
            RunStatus.CONTINUED_AS_NEW,
            RunStatus.COMPLETED,
        ]
        assert info["continued_from"] == runs[1].run_id


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
