"""Code that must type-check under ``mypy --strict`` (listed in pyproject's mypy files).

Not a test module: it pins how duro's decorators look to a user's type checker.
"""

from __future__ import annotations

from duro import Client, workflow


@workflow.defn
class Approvals:
    def __init__(self) -> None:
        self.approved: list[str] = []

    @workflow.run
    async def run(self) -> int:
        count = await self.approve("self")  # an update method called through the instance
        return count + 1

    @workflow.update
    async def approve(self, who: str) -> int:
        self.approved.append(who)
        return len(self.approved)

    @approve.validator
    def _check_approve(self, who: str) -> None:
        if not who:
            raise ValueError("who is empty")


async def from_the_client(client: Client) -> int:
    handle = await client.start_workflow(Approvals, id="typing")
    result: int = await handle.execute_update(Approvals.approve, "ann")
    return result
