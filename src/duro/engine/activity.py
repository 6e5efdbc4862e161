"""Activity outcomes: completion, failure (retry or give up), timeout and lost workers.

At-least-once execution, exactly-once recording: only the final outcome is appended, with the
attempt count; a retry re-enqueues the task with a backoff and keeps the last failure on it.
"""

from __future__ import annotations

from typing import Any

from duro.engine.model import ActivityRetry, ActivityTaskRecord, RunRecord, Transition
from duro.history import EventType, NewEvent, RunStatus
from duro.retry import RetryPolicy


def complete_activity(
    run: RunRecord, task: ActivityTaskRecord, result: Any, now: float
) -> Transition:
    t = Transition(delete_activities=[task.seq])
    if run.status == RunStatus.RUNNING:
        t.add_input(
            run,
            NewEvent(
                EventType.ACTIVITY_TASK_COMPLETED, completed_attrs(task.seq, result, task.attempt)
            ),
        )
    return t


def completed_attrs(seq: int, result: Any, attempt: int) -> dict[str, Any]:
    """``ActivityTaskCompleted``'s attributes; a worker advancing its cached run on an outcome
    builds the same event before the store writes it."""
    return {"seq": seq, "result": result, "attempt": attempt}


def fail_activity(
    run: RunRecord,
    task: ActivityTaskRecord,
    failure: dict[str, Any],
    now: float,
    *,
    timed_out: bool = False,
) -> Transition:
    """Retry the activity per its policy, or record its final failure.

    The schedule-to-close timeout bounds all attempts: a retry that would start after it is not
    made, and the activity times out instead.
    """
    if run.status != RunStatus.RUNNING:
        return Transition(delete_activities=[task.seq])
    policy = RetryPolicy.from_dict(task.retry_policy)
    delay = policy.next_delay(
        task.attempt,
        error_type=str(failure.get("type", "")),
        non_retryable=bool(failure.get("non_retryable", False)),
        next_retry_delay=failure.get("next_retry_delay"),
    )
    deadline = (
        task.scheduled_time + task.schedule_to_close_timeout
        if task.schedule_to_close_timeout
        else None
    )
    if delay is not None and (deadline is None or now + delay < deadline):
        return Transition(
            retry_activity=ActivityRetry(
                task_id=task.task_id,
                attempt=task.attempt + 1,
                visible_at=now + delay,
                last_failure=failure,
            )
        )
    kind = EventType.ACTIVITY_TASK_TIMED_OUT if timed_out else EventType.ACTIVITY_TASK_FAILED
    if delay is not None and deadline is not None:
        # Retries remained but the schedule-to-close budget is spent.
        kind = EventType.ACTIVITY_TASK_TIMED_OUT
        failure = {
            "type": "TimeoutError",
            "timeout_kind": "schedule_to_close",
            "message": "activity schedule_to_close timeout",
            "cause": failure,
        }
    t = Transition(delete_activities=[task.seq])
    t.add_input(run, NewEvent(kind, {"seq": task.seq, "failure": failure, "attempt": task.attempt}))
    return t


def timeout_failure(kind: str) -> dict[str, Any]:
    """The failure recorded when an attempt outlives one of its timeouts."""
    return {"type": "TimeoutError", "timeout_kind": kind, "message": f"activity {kind} timeout"}


def expired_timeout(task: ActivityTaskRecord, now: float) -> str:
    """Which timeout made the attempt's lease run out.

    The lease is the earliest of: started + start_to_close, scheduled + schedule_to_close, and
    (with a heartbeat timeout) the last heartbeat + heartbeat_timeout.
    """
    eps = 1e-6
    if (
        task.started_time is not None
        and now + eps >= task.started_time + task.start_to_close_timeout
    ):
        return "start_to_close"
    if task.schedule_to_close_timeout and now + eps >= (
        task.scheduled_time + task.schedule_to_close_timeout
    ):
        return "schedule_to_close"
    if task.heartbeat_timeout:
        return "heartbeat"
    return "start_to_close"


def schedule_to_start_expired(run: RunRecord, task: ActivityTaskRecord, now: float) -> Transition:
    """No worker picked the attempt up in time: a final timeout (retrying would not help)."""
    t = Transition(delete_activities=[task.seq])
    if run.status == RunStatus.RUNNING:
        failure = timeout_failure("schedule_to_start")
        t.add_input(
            run,
            NewEvent(
                EventType.ACTIVITY_TASK_TIMED_OUT,
                {"seq": task.seq, "failure": failure, "attempt": task.attempt},
            ),
        )
    return t


def expire_activity(run: RunRecord, task: ActivityTaskRecord, now: float) -> Transition:
    """The attempt's lease ran out: a failed attempt, retried (or not) like any failure."""
    return fail_activity(
        run, task, timeout_failure(expired_timeout(task, now)), now, timed_out=True
    )


def worker_lost(run: RunRecord, task: ActivityTaskRecord, now: float) -> Transition:
    """The worker running the attempt stopped heartbeating: retry at once, counting the attempt."""
    failure = {
        "type": "WorkerLostError",
        "message": "the worker running this attempt stopped (no liveness heartbeat)",
        "next_retry_delay": 0.0,
    }
    return fail_activity(run, task, failure, now, timed_out=True)
