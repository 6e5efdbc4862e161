"""The pure rules, with a fixed clock and no database."""

from __future__ import annotations

import pytest

from duro import commands as cmd
from duro.engine import activity, requests, timers, workflow_task
from duro.engine.model import ActivityTaskRecord, RunRecord, WorkflowTaskState
from duro.engine.start import (
    IdConflictPolicy,
    IdReusePolicy,
    StartDecision,
    StartRequest,
    decide_start,
    start_workflow,
)
from duro.errors import WorkflowAlreadyStartedError, WorkflowClosedError
from duro.history import EventType, RunStatus
from duro.retry import RetryPolicy

NOW = 1_000_000.0


def run(
    wt: WorkflowTaskState = WorkflowTaskState.IDLE, status: RunStatus = RunStatus.RUNNING
) -> RunRecord:
    return RunRecord("default", "wf", "r1", "Agent", "q", status, 5, wt)


def activity_task(
    attempt: int = 1, policy: RetryPolicy | None = None, s2c: float | None = None
) -> ActivityTaskRecord:
    return ActivityTaskRecord(
        task_id=7,
        run_id="r1",
        seq=2,
        activity_type="call_model",
        attempt=attempt,
        retry_policy=(policy or RetryPolicy()).to_dict(),
        scheduled_time=NOW - 10,
        start_to_close_timeout=60,
        schedule_to_close_timeout=s2c,
    )


def request(**kw: object) -> StartRequest:
    return StartRequest("default", "wf", "Agent", "q", [1], **kw)  # type: ignore[arg-type]


# -- start -------------------------------------------------------------------------------------


def test_start_appends_started_and_schedules_a_workflow_task_now() -> None:
    t = start_workflow(request(), "r1", NOW)
    assert [e.type for e in t.append] == [EventType.WORKFLOW_EXECUTION_STARTED]
    assert t.append[0].attrs["args"] == [1]
    assert t.wt_state == WorkflowTaskState.SCHEDULED and t.wt_visible_at == NOW


def test_id_conflict_policies() -> None:
    running = run()
    assert decide_start(request(), None) == StartDecision.START
    with pytest.raises(WorkflowAlreadyStartedError, match="already running"):
        decide_start(request(), running)
    use = request(id_conflict_policy=IdConflictPolicy.USE_EXISTING)
    assert decide_start(use, running) == StartDecision.USE_EXISTING
    term = request(id_conflict_policy=IdConflictPolicy.TERMINATE_EXISTING)
    assert decide_start(term, running) == StartDecision.TERMINATE_AND_START


def test_id_reuse_policies_for_closed_runs() -> None:
    done, failed = run(status=RunStatus.COMPLETED), run(status=RunStatus.FAILED)
    assert decide_start(request(), done) == StartDecision.START
    only_failed = request(id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    assert decide_start(only_failed, failed) == StartDecision.START
    with pytest.raises(WorkflowAlreadyStartedError):
        decide_start(only_failed, done)
    with pytest.raises(WorkflowAlreadyStartedError):
        decide_start(request(id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE), failed)


# -- workflow tasks ------------------------------------------------------------------------------


def test_completion_writes_completed_then_commands_and_creates_their_work() -> None:
    commands = [
        cmd.ScheduleActivity(1, "call_model", ["hi"], "q", 30.0, RetryPolicy().to_dict()),
        cmd.StartTimer(1, 60.0),
        cmd.RecordMarker("patch", {"id": "x"}),
    ]
    t = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED), commands, has_buffered=False, workflow_time=NOW - 1, now=NOW
    )
    assert [e.type for e in t.append] == [
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.TIMER_STARTED,
        EventType.MARKER_RECORDED,
    ]
    assert t.append[0].attrs["workflow_time"] == NOW - 1
    assert [a.activity_type for a in t.schedule_activities] == ["call_model"]
    assert t.start_timers == [(1, NOW - 1 + 60.0)]  # from the time the code saw
    assert t.flush_buffer and t.wt_state == WorkflowTaskState.IDLE and t.close is None


def test_events_buffered_during_the_task_schedule_the_next_one() -> None:
    t = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED), [], has_buffered=True, workflow_time=NOW, now=NOW
    )
    assert t.flush_buffer and t.wt_state == WorkflowTaskState.SCHEDULED


def test_closing_while_events_are_buffered_is_rejected_so_no_signal_is_lost() -> None:
    t = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED),
        [cmd.CompleteWorkflow("done")],
        has_buffered=True,
        workflow_time=NOW,
        now=NOW,
    )
    assert t.rejected and not t.append and t.close is None
    assert t.flush_buffer and t.wt_state == WorkflowTaskState.SCHEDULED


def test_close_commands_close_the_run_and_ignore_later_commands() -> None:
    t = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED),
        [cmd.CompleteWorkflow({"ok": 1}), cmd.StartTimer(9, 1.0)],
        has_buffered=False,
        workflow_time=NOW,
        now=NOW,
    )
    assert t.close == RunStatus.COMPLETED and t.result == {"ok": 1}
    assert t.append[-1].type == EventType.WORKFLOW_EXECUTION_COMPLETED and not t.start_timers
    failed = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED),
        [cmd.FailWorkflow({"message": "x"})],
        has_buffered=False,
        workflow_time=NOW,
        now=NOW,
    )
    assert failed.close == RunStatus.FAILED and failed.failure == {"message": "x"}


def test_cancelling_an_activity_or_timer_removes_its_work() -> None:
    t = workflow_task.complete_workflow_task(
        run(WorkflowTaskState.STARTED),
        [cmd.RequestCancelActivity(3), cmd.CancelTimer(2)],
        has_buffered=False,
        workflow_time=NOW,
        now=NOW,
    )
    assert t.delete_activities == [3] and t.cancel_timers == [2]


def test_failed_workflow_task_retries_with_backoff_and_keeps_the_failure() -> None:
    r = run(WorkflowTaskState.STARTED)
    r.wt_attempt = 3
    t = workflow_task.fail_workflow_task(r, {"message": "boom"}, NOW)
    assert not t.append and t.flush_buffer
    assert t.wt_state == WorkflowTaskState.SCHEDULED and t.wt_visible_at == NOW + 4.0
    assert t.wt_attempt == 4 and t.wt_failure == {"message": "boom"}


def test_released_workflow_task_is_visible_at_once() -> None:
    t = workflow_task.release_workflow_task(run(WorkflowTaskState.STARTED), NOW)
    assert t.wt_visible_at == NOW and t.flush_buffer


# -- activities -------------------------------------------------------------------------------------


def test_completion_is_appended_with_attempt_when_no_task_is_in_flight() -> None:
    t = activity.complete_activity(run(), activity_task(attempt=2), "ok", NOW)
    assert [e.type for e in t.append] == [EventType.ACTIVITY_TASK_COMPLETED]
    assert t.append[0].attrs == {"seq": 2, "result": "ok", "attempt": 2}
    assert t.wt_state == WorkflowTaskState.SCHEDULED and t.delete_activities == [2]


def test_completion_is_buffered_while_a_workflow_task_is_in_flight() -> None:
    t = activity.complete_activity(run(WorkflowTaskState.STARTED), activity_task(), "ok", NOW)
    assert not t.append and [e.type for e in t.buffer] == [EventType.ACTIVITY_TASK_COMPLETED]
    assert t.wt_state is None


def test_failure_retries_without_history_and_keeps_last_failure() -> None:
    failure = {"type": "RuntimeError", "message": "boom"}
    t = activity.fail_activity(run(), activity_task(attempt=2), failure, NOW)
    assert not t.append and not t.buffer
    assert t.retry_activity is not None
    assert t.retry_activity.attempt == 3 and t.retry_activity.visible_at == NOW + 2.0
    assert t.retry_activity.last_failure == failure


def test_final_failure_is_recorded_once_with_attempt_count() -> None:
    failure = {"type": "ValueError", "message": "bad", "non_retryable": True}
    t = activity.fail_activity(run(), activity_task(attempt=1), failure, NOW)
    assert t.retry_activity is None
    assert [e.type for e in t.append] == [EventType.ACTIVITY_TASK_FAILED]
    assert t.append[0].attrs["attempt"] == 1 and t.delete_activities == [2]


def test_maximum_attempts_and_server_suggested_delay() -> None:
    policy = RetryPolicy(maximum_attempts=3)
    failure = {"type": "RateLimited", "message": "429", "next_retry_delay": 30.0}
    t = activity.fail_activity(run(), activity_task(attempt=2, policy=policy), failure, NOW)
    assert t.retry_activity is not None and t.retry_activity.visible_at == NOW + 30.0
    t = activity.fail_activity(run(), activity_task(attempt=3, policy=policy), failure, NOW)
    assert t.append[0].type == EventType.ACTIVITY_TASK_FAILED


def test_schedule_to_close_bounds_all_retries() -> None:
    # scheduled 10 s ago with a 12 s budget: a retry 4 s from now would start too late.
    t = activity.fail_activity(
        run(), activity_task(attempt=3, s2c=12.0), {"type": "X", "message": "x"}, NOW
    )
    assert t.append[0].type == EventType.ACTIVITY_TASK_TIMED_OUT
    assert t.append[0].attrs["failure"]["timeout_kind"] == "schedule_to_close"


def test_expired_lease_is_a_retryable_start_to_close_timeout() -> None:
    t = activity.expire_activity(run(), activity_task(attempt=1), NOW)
    assert t.retry_activity is not None
    assert t.retry_activity.last_failure["timeout_kind"] == "start_to_close"
    final = activity.expire_activity(
        run(), activity_task(attempt=1, policy=RetryPolicy(maximum_attempts=1)), NOW
    )
    assert final.append[0].type == EventType.ACTIVITY_TASK_TIMED_OUT


def test_lost_worker_retries_at_once() -> None:
    t = activity.worker_lost(run(), activity_task(attempt=1), NOW)
    assert t.retry_activity is not None and t.retry_activity.visible_at == NOW
    assert t.retry_activity.attempt == 2


def test_outcomes_for_closed_runs_only_drop_the_task() -> None:
    closed = run(status=RunStatus.COMPLETED)
    assert not activity.complete_activity(closed, activity_task(), 1, NOW).append
    assert not activity.fail_activity(closed, activity_task(), {"type": "X"}, NOW).append
    assert not timers.fire_timer(closed, 1, NOW).append


# -- timers and external requests -------------------------------------------------------------------


def test_timer_fires_once_into_history() -> None:
    t = timers.fire_timer(run(), 4, NOW)
    assert t.delete_timer == 4 and t.append[0].attrs == {"seq": 4}
    assert t.wt_state == WorkflowTaskState.SCHEDULED


def test_signal_and_cancel_request_are_inputs() -> None:
    t = requests.signal_workflow(run(WorkflowTaskState.SCHEDULED), "approve", [True], NOW)
    assert t.append[0].attrs == {"name": "approve", "args": [True]}
    assert t.wt_state is None  # a task is already scheduled; it will see the signal
    t = requests.request_cancel(run(), "user asked", NOW)
    assert t.append[0].type == EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED


def test_closed_runs_refuse_signals_cancels_and_terminates() -> None:
    closed = run(status=RunStatus.FAILED)
    for rule in (
        lambda: requests.signal_workflow(closed, "s", [], NOW),
        lambda: requests.request_cancel(closed, "", NOW),
        lambda: requests.terminate(closed, "", NOW),
    ):
        with pytest.raises(WorkflowClosedError, match="closed"):
            rule()


def test_terminate_closes_after_whatever_was_buffered() -> None:
    t = requests.terminate(run(WorkflowTaskState.STARTED), "stuck", NOW)
    assert t.flush_buffer and t.close == RunStatus.TERMINATED
    assert [e.type for e in t.append_after] == [EventType.WORKFLOW_EXECUTION_TERMINATED]
