"""Durable timers firing."""

from __future__ import annotations

from duro.engine.model import RunRecord, Transition
from duro.history import EventType, NewEvent, RunStatus

RUN_TIMEOUT_SEQ = 0
"""Timer rows with these sequence numbers are the run's own deadlines, not workflow timers."""
EXECUTION_TIMEOUT_SEQ = -1


def fire_timer(run: RunRecord, seq: int, now: float) -> Transition:
    """A due timer fires once: its row goes, and ``TimerFired`` reaches the code."""
    if seq in (RUN_TIMEOUT_SEQ, EXECUTION_TIMEOUT_SEQ):
        kind = "workflow_run" if seq == RUN_TIMEOUT_SEQ else "workflow_execution"
        return workflow_timed_out(run, kind)
    t = Transition(delete_timer=seq)
    if run.status == RunStatus.RUNNING:
        t.add_input(run, NewEvent(EventType.TIMER_FIRED, {"seq": seq}))
    return t


def workflow_timed_out(run: RunRecord, kind: str) -> Transition:
    """The run (or its whole chain) passed its deadline: it closes as TimedOut, code or not."""
    if run.status != RunStatus.RUNNING:
        return Transition()
    failure = {"type": "TimeoutError", "timeout_kind": kind, "message": f"{kind} timeout"}
    return Transition(
        append_after=[NewEvent(EventType.WORKFLOW_EXECUTION_TIMED_OUT, {"timeout_kind": kind})],
        close=RunStatus.TIMED_OUT,
        failure=failure,
    )
