"""Golden histories exported from real runs (``duro workflow show ID --json``) must replay.

A change to the example agent that would break its in-flight runs fails here first. To refresh
a golden file after an intended, versioned change, re-run the example and export it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duro.definitions import workflow_definition
from duro.history import Event
from duro.runtime.replay import replay
from examples.agent.agent import TravelAgent

HISTORIES = Path(__file__).parent / "histories"
WORKFLOWS = {"TravelAgent": TravelAgent}


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
def test_golden_history_replays_against_current_code(path: Path) -> None:
    exported = json.loads(path.read_text())
    events = [Event.from_json(e) for e in exported["events"]]
    workflow_type = events[0].attrs["workflow_type"]
    defn = workflow_definition(WORKFLOWS[workflow_type])
    assert defn is not None
    instance = replay(defn, events)
    assert instance.closed
    assert instance.obj.stage == "done"
