"""A deploy candidate that broke compatibility: the agent now books before asking the model.

Used by tests/test_replayer.py: `duro replay tests.replay_changed tests/histories/*.json` must
refuse it.
"""

from __future__ import annotations

from duro import workflow
from examples.agent.agent import TripRequest, TripResult, book_flight


@workflow.defn(name="TravelAgent")
class TravelAgent:
    @workflow.run
    async def run(self, trip: TripRequest) -> TripResult:
        booking = await book_flight("DR 101 08:15")  # was: call_model first
        return TripResult(True, booking, booking=booking)

    @workflow.signal
    def approve(self, approved: bool) -> None:
        pass
