"""Durable timers firing."""

from __future__ import annotations

from duro.engine.model import RunRecord, Transition
from duro.history import EventType, NewEvent, RunStatus


def fire_timer(run: RunRecord, seq: int, now: float) -> Transition:
    """A due timer fires once: its row goes, and ``TimerFired`` reaches the code."""
    t = Transition(delete_timer=seq)
    if run.status == RunStatus.RUNNING:
        t.add_input(run, NewEvent(EventType.TIMER_FIRED, {"seq": seq}))
    return t
