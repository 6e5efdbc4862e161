"""Workflow id policies: one agent per conversation, whatever the duplicate requests.

Scenario: a chat front end starts an agent per conversation, using the conversation id as the
workflow id. Webhooks are delivered twice, users double-click, and finished conversations are
sometimes reopened. The start options decide each case:

- ``id_conflict_policy`` (the id is *running*): ``FAIL`` (default, raises
  ``WorkflowAlreadyStartedError``), ``USE_EXISTING`` (return the running run) or
  ``TERMINATE_EXISTING`` (replace it).
- ``id_reuse_policy`` (the id's last run is *closed*): ``ALLOW_DUPLICATE`` (default),
  ``ALLOW_DUPLICATE_FAILED_ONLY`` or ``REJECT_DUPLICATE``.
- ``request_id``: a retried start with the same request id returns the same run.

Run: ``.venv/bin/python -m examples.concepts.id_policies [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import (
    Client,
    IdConflictPolicy,
    IdReusePolicy,
    RunStatus,
    Worker,
    WorkflowAlreadyStartedError,
    workflow,
)


@workflow.defn
class ConversationAgent:
    def __init__(self) -> None:
        self.closed = False

    @workflow.run
    async def run(self, opening: str) -> str:
        await workflow.wait_condition(lambda: self.closed)
        return f"conversation that began with {opening!r} closed"

    @workflow.signal
    def close(self) -> None:
        self.closed = True


async def main(db_path: str) -> None:
    conv = f"conv-{uuid.uuid4().hex[:6]}"
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[ConversationAgent]):
            first = await client.start_workflow(ConversationAgent.run, "hi", id=conv)

            # FAIL (default): a second start of a running id is refused.
            try:
                await client.start_workflow(ConversationAgent.run, "hi again", id=conv)
                raise AssertionError("expected WorkflowAlreadyStartedError")
            except WorkflowAlreadyStartedError as e:
                print(f"FAIL: {e}")

            # USE_EXISTING: the duplicate webhook gets the running run.
            dup = await client.start_workflow(
                ConversationAgent.run,
                "hi (webhook retry)",
                id=conv,
                id_conflict_policy=IdConflictPolicy.USE_EXISTING,
            )
            print(f"USE_EXISTING: same run {dup.run_id == first.run_id}")
            assert dup.run_id == first.run_id

            # TERMINATE_EXISTING: the user restarted the conversation from scratch.
            fresh = await client.start_workflow(
                ConversationAgent.run,
                "let's start over",
                id=conv,
                id_conflict_policy=IdConflictPolicy.TERMINATE_EXISTING,
            )
            old = await client.get_workflow_handle(conv, run_id=first.run_id).describe()
            print(f"TERMINATE_EXISTING: old run {old.status.value}, new run {fresh.run_id}")
            assert old.status == RunStatus.TERMINATED
            assert fresh.run_id != first.run_id

            await fresh.signal(ConversationAgent.close)
            print(f"closed: {await fresh.result(timeout=10)}")

            # REJECT_DUPLICATE: a completed conversation is never reopened under its id.
            try:
                await client.start_workflow(
                    ConversationAgent.run,
                    "reopen?",
                    id=conv,
                    id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
                )
                raise AssertionError("expected WorkflowAlreadyStartedError")
            except WorkflowAlreadyStartedError:
                print("REJECT_DUPLICATE: refused")
            # ALLOW_DUPLICATE_FAILED_ONLY: reopen only what did not complete; this one did.
            try:
                await client.start_workflow(
                    ConversationAgent.run,
                    "reopen?",
                    id=conv,
                    id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                )
                raise AssertionError("expected WorkflowAlreadyStartedError")
            except WorkflowAlreadyStartedError:
                print("ALLOW_DUPLICATE_FAILED_ONLY: refused (the last run completed)")

            # request_id: a retried start (lost HTTP response) is the same start.
            other = f"{conv}-b"
            a = await client.start_workflow(ConversationAgent.run, "x", id=other, request_id="r1")
            b = await client.start_workflow(ConversationAgent.run, "x", id=other, request_id="r1")
            print(f"request_id: same run {a.run_id == b.run_id}")
            assert a.run_id == b.run_id
            await a.terminate("example done")

        runs = await client.list_workflows(f"WorkflowId = '{conv}' ORDER BY StartTime ASC")
        assert [r.status for r in runs] == [RunStatus.TERMINATED, RunStatus.COMPLETED]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
