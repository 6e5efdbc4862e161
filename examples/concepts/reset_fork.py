"""Reset and fork: re-run an agent from a step, with fixed code, without repeating the rest.

Scenario: a writer agent fetches facts (slow, costly) and then drafts an article with a
prompt. The draft came out wrong because the prompt was bad. Fix the prompt, then
``handle.reset(to=<event id>)``: a new run of the same workflow id starts from the history up
to the workflow task that scheduled the draft; the fetch is *not* repeated, the draft is.
Signals received after the reset point (an editor's note) are delivered again. ``fork`` does
the same into a *new* workflow id and leaves the original alone: try another prompt on a copy.

Run: ``.venv/bin/python -m examples.concepts.reset_fork [db path]``
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from duro import Client, EventType, RunStatus, Worker, activity, workflow

PROMPT = {"style": "SHOUTY"}
CALLS: list[str] = []


@activity.defn
async def fetch_facts(topic: str) -> str:
    CALLS.append("fetch_facts")
    return f"facts about {topic}"


@activity.defn
async def draft(facts: str) -> str:
    CALLS.append("draft")
    return f"[{PROMPT['style']}] {facts}"


@workflow.defn
class Writer:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.publish = False

    @workflow.run
    async def run(self, topic: str) -> str:
        facts: str = await fetch_facts(topic)
        text: str = await draft(facts)
        await workflow.wait_condition(lambda: self.publish)
        return f"{text} (notes: {', '.join(self.notes) or 'none'})"

    @workflow.signal
    def note(self, text: str) -> None:
        self.notes.append(text)

    @workflow.signal
    def go(self) -> None:
        self.publish = True


async def main(db_path: str) -> None:
    CALLS.clear()
    PROMPT["style"] = "SHOUTY"
    wid = f"article-{uuid.uuid4().hex[:6]}"
    async with await Client.connect(f"sqlite:///{db_path}") as client:
        async with Worker(client, workflows=[Writer], activities=[fetch_facts, draft]):
            handle = await client.start_workflow(Writer.run, "tea", id=wid)
            await handle.signal(Writer.note, "add a photo")
            history = await handle.fetch_history()
            while sum(e.type == EventType.ACTIVITY_TASK_COMPLETED for e in history) < 2:
                await asyncio.sleep(0.02)  # wait until both activities completed
                history = await handle.fetch_history()
            draft_scheduled = next(
                e.event_id
                for e in history
                if e.type == EventType.ACTIVITY_TASK_SCHEDULED
                and e.attrs["activity_type"] == "draft"
            )
            # The prompt was the problem: fix it and re-run from the task that drafted.
            PROMPT["style"] = "friendly"
            new = await handle.reset(to=draft_scheduled, reason="fixed the style prompt")
            print(f"reset {wid} to event {draft_scheduled}: new run {new.run_id}")
            await new.signal(Writer.go)
            fixed = await new.result(timeout=10)

            # Try yet another prompt on a copy of the original run, from its first task.
            PROMPT["style"] = "poetic"
            original = client.get_workflow_handle(wid, run_id=handle.run_id)
            copy = await original.fork(
                f"{wid}-poetic", to="first_workflow_task", reapply_signals=False
            )
            await copy.signal(Writer.go)
            poetic = await copy.result(timeout=10)
        print(f"reset run: {fixed}")
        print(f"fork:      {poetic}")
        print(f"activity calls: {CALLS}")
        assert fixed == "[friendly] facts about tea (notes: add a photo)"
        assert poetic == "[poetic] facts about tea (notes: none)"
        # fetch_facts ran once for the original, once for the fork (from the first task);
        # the reset did not repeat it. draft ran three times (original, reset, fork).
        assert CALLS.count("fetch_facts") == 2
        assert CALLS.count("draft") == 3
        old = await client.get_workflow_handle(wid, run_id=handle.run_id).describe()
        assert old.status == RunStatus.TERMINATED
        marker = next(
            e for e in await new.fetch_history() if e.type == EventType.WORKFLOW_EXECUTION_RESET
        )
        assert marker.attrs["from_run_id"] == handle.run_id


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "concept.db"))
