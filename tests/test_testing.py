"""duro.testing, used as a user would: time skipping, mocks, the activity env, replay, fixtures.

Every test here runs on the real engine (SQLite, worker, replay); none sleeps for real time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import duro.testing
from duro import (
    ActivityError,
    ApplicationError,
    Client,
    EventType,
    NonDeterminismError,
    PayloadEncodeError,
    RetryPolicy,
    UnknownWorkflowTypeError,
    WorkflowHandle,
    activity,
    workflow,
)
from duro.errors import StoreError
from duro.testing import (
    ActivityEnvironment,
    WorkflowEnvironment,
    WorkflowTaskFailedError,
    replay_histories,
    replay_history,
)
from examples.agent.agent import TravelAgent

HISTORIES = Path(__file__).parent / "histories"

# -- workflows and activities under test -----------------------------------------------------------

notified: list[str] = []


@activity.defn
async def notify(approver: str, document: str) -> None:
    notified.append(document)


@activity.defn
async def escalate(document: str) -> str:
    return f"escalated {document}"


@workflow.defn
class Approval:
    """The docs' example: approve within three days, or escalate."""

    def __init__(self) -> None:
        self.decision: str | None = None
        self.decided_at: datetime | None = None

    @workflow.run
    async def run(self, document: str) -> dict[str, Any]:
        started = workflow.now()
        await notify("alice@example.com", document)
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=timedelta(days=3)
            )
        except TimeoutError:
            outcome = await escalate(document)
        else:
            outcome = str(self.decision)
        waited = (workflow.now() - started).total_seconds()
        return {"outcome": outcome, "waited": waited}

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision

    @workflow.query
    def pending(self) -> bool:
        return self.decision is None


@activity.defn(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(minutes=1), backoff_coefficient=3.0, maximum_attempts=5
    )
)
async def flaky(fail_times: int) -> str:
    if activity.info().attempt <= fail_times:
        raise ApplicationError(f"attempt {activity.info().attempt} failed")
    return f"ok on attempt {activity.info().attempt}"


@workflow.defn
async def uses_flaky(fail_times: int) -> str:
    try:
        return await flaky(fail_times)
    except ActivityError as e:
        return f"gave up after {e.attempt}"


@activity.defn
async def daily_report(day: int) -> str:
    return f"report {day}"


@workflow.defn
async def every_day(days: int) -> list[str]:
    """Stands in for a schedule (not built yet): one activity a day for ``days`` days."""
    reports = []
    for day in range(1, days + 1):
        await workflow.sleep(timedelta(days=1))
        reports.append(f"{await daily_report(day)} at {workflow.now().date().isoformat()}")
    return reports


@activity.defn(start_to_close_timeout=timedelta(minutes=5))
async def slow_call(x: str) -> str:
    return f"real {x}"


@workflow.defn
async def calls_slow(x: str) -> str:
    return await slow_call(x)


@workflow.defn
async def nap(hours: float) -> str:
    await asyncio.sleep(timedelta(hours=hours).total_seconds())
    return "rested"


@workflow.defn
async def not_registered() -> None:
    pass


@pytest.fixture
async def env() -> Any:
    async with WorkflowEnvironment(
        workflows=[Approval, uses_flaky, every_day, calls_slow, nap],
        activities=[notify, escalate, flaky, daily_report, slow_call],
    ) as e:
        yield e


# -- time skipping ---------------------------------------------------------------------------------


async def test_three_day_timeout_completes_in_milliseconds(env: WorkflowEnvironment) -> None:
    started = env.now()
    t0 = time.perf_counter()
    result = await env.client.execute_workflow(Approval.run, "contract.pdf", id="a-timeout")
    elapsed = time.perf_counter() - t0
    assert result["outcome"] == "escalated contract.pdf"
    assert result["waited"] == pytest.approx(timedelta(days=3).total_seconds(), abs=1.0)
    assert env.now() - started >= timedelta(days=3)
    assert elapsed < 1.0, f"3-day timeout took {elapsed:.3f} s"


async def test_approved_path_does_not_skip_past_the_signal(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(Approval.run, "offer.pdf", id="a-approved")
    await handle.signal(Approval.decide, "approved")
    result = await handle.result()
    assert result["outcome"] == "approved"
    assert result["waited"] < 60  # nothing was skipped: the signal came before any jump


async def test_sleep_moves_time_by_hand_before_a_signal(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(Approval.run, "lease.pdf", id="a-day-two")
    await env.sleep(timedelta(days=2))
    assert await handle.query(Approval.pending) is True
    await handle.signal(Approval.decide, "approved")
    result = await handle.result()
    assert result["outcome"] == "approved"
    assert result["waited"] == pytest.approx(timedelta(days=2).total_seconds(), abs=5.0)


async def test_retry_backoff_sequence_is_skipped(env: WorkflowEnvironment) -> None:
    starts: list[datetime] = []

    async def recorded_flaky(fail_times: int) -> str:
        starts.append(activity.info().started_time)
        return await flaky.__wrapped__(fail_times)  # type: ignore[attr-defined]

    env.mock_activity(flaky, recorded_flaky)
    t0 = time.perf_counter()
    assert await env.client.execute_workflow(uses_flaky, 3, id="r-ok") == "ok on attempt 4"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([60, 180, 540], abs=1.0)  # 1 min, then x3, x3
    starts.clear()
    assert await env.client.execute_workflow(uses_flaky, 9, id="r-fail") == "gave up after 5"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([60, 180, 540, 1620], abs=1.0)
    assert time.perf_counter() - t0 < 2.0


async def test_thirty_daily_runs_in_well_under_five_seconds(env: WorkflowEnvironment) -> None:
    t0 = time.perf_counter()
    start = env.now()
    reports = await env.client.execute_workflow(every_day, 30, id="daily")
    elapsed = time.perf_counter() - t0
    assert len(reports) == 30
    assert reports[0] == f"report 1 at {(start + timedelta(days=1)).date().isoformat()}"
    assert reports[-1] == f"report 30 at {(start + timedelta(days=30)).date().isoformat()}"
    assert elapsed < 5.0, f"30 days took {elapsed:.2f} s"


async def test_advance_times_out_a_running_activity_by_the_same_clock(
    env: WorkflowEnvironment,
) -> None:
    async def late_on_first_attempt(x: str) -> str:
        if activity.info().attempt == 1:
            await env.advance(timedelta(minutes=6))  # past start_to_close_timeout (5 min)
            return "late"
        return f"attempt {activity.info().attempt}"

    env.mock_activity("slow_call", late_on_first_attempt)
    handle = await env.client.start_workflow(calls_slow, "x", id="timeout")
    assert await handle.result() == "attempt 2"
    completed = [
        e for e in await handle.fetch_history() if e.type == EventType.ACTIVITY_TASK_COMPLETED
    ]
    assert [(e.attrs["result"], e.attrs["attempt"]) for e in completed] == [("attempt 2", 2)]


async def test_time_skipping_can_be_turned_off() -> None:
    async with WorkflowEnvironment(workflows=[nap], time_skipping=False) as env:
        handle = await env.client.start_workflow(nap, 1.0, id="nap")
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.2)
        assert (await handle.describe()).status.value == "Running"
        await env.sleep(timedelta(hours=1))
        assert await handle.result() == "rested"
        env.time_skipping = True
        assert await env.client.execute_workflow(nap, 5.0, id="nap-2") == "rested"


async def test_start_time_pins_what_workflows_see() -> None:
    start = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
    async with WorkflowEnvironment(
        workflows=[every_day], activities=[daily_report], start_time=start
    ) as env:
        reports = await env.client.execute_workflow(every_day, 1, id="pinned")
        assert reports == ["report 1 at 2030-02-01"]
    with pytest.raises(ValueError, match="timezone-aware"):
        WorkflowEnvironment(start_time=datetime(2030, 1, 1))


async def test_a_file_backed_environment_leaves_an_inspectable_database(tmp_path: Path) -> None:
    path = tmp_path / "test.db"
    async with WorkflowEnvironment(workflows=[nap], path=path) as env:
        assert await env.client.execute_workflow(nap, 48.0, id="kept") == "rested"
    async with await Client.connect(f"sqlite:///{path}") as client:
        info = await client.get_workflow_handle("kept").describe()
        assert info.status.value == "Completed"
        assert info.close_time is not None and info.close_time - info.start_time >= 48 * 3600


async def test_wait_idle_then_query(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(Approval.run, "memo.pdf", id="idle")
    await env.wait_idle()
    assert "memo.pdf" in notified
    await handle.signal(Approval.decide, "rejected")
    await env.wait_idle()
    assert await handle.query(Approval.pending) is False
    assert (await handle.result())["outcome"] == "rejected"


async def test_a_failing_workflow_task_raises_instead_of_hanging(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(not_registered, id="bug")  # no worker registers it
    with pytest.raises(WorkflowTaskFailedError) as caught:
        await handle.result()
    assert caught.value.workflow_id == "bug"
    assert "not_registered" in str(caught.value.cause)


async def test_get_workflow_handle_also_skips(env: WorkflowEnvironment) -> None:
    await env.client.start_workflow(nap, 24.0, id="later")
    handle = env.client.get_workflow_handle("later")
    assert isinstance(handle, WorkflowHandle)
    assert await handle.result() == "rested"


async def test_a_second_worker_on_another_queue(env: WorkflowEnvironment) -> None:
    @activity.defn(name="gpu_job", task_queue="gpu")
    async def gpu_job(x: int) -> int:
        return x * 2

    @workflow.defn(name="uses_gpu")
    async def uses_gpu(x: int) -> int:
        await workflow.sleep(timedelta(hours=1))
        return await gpu_job(x)

    await env.start_worker(task_queue="gpu", activities=[gpu_job])
    await env.start_worker(task_queue="main", workflows=[uses_gpu])
    env.mock_activity("gpu_job", lambda x: x * 3)  # a sync fake, run in a thread
    assert await env.client.execute_workflow(uses_gpu, 7, id="gpu", task_queue="main") == 21


async def test_a_bad_registration_fails_start_and_closes_the_store() -> None:
    env = WorkflowEnvironment(activities=[lambda: None])
    with pytest.raises(TypeError, match="not an activity"):
        await env.start()
    with pytest.raises(StoreError, match="closed"):
        await env.store.next_timer_time()


# -- activity mocking --------------------------------------------------------------------------------


async def test_mock_replaces_an_activity_by_name(env: WorkflowEnvironment) -> None:
    calls: list[tuple[str, int]] = []

    @activity.defn(name="escalate")
    def fake_escalate(document: str) -> str:
        calls.append((document, activity.info().attempt))
        return "paged the manager"

    env.mock_activity(fake_escalate)
    result = await env.client.execute_workflow(Approval.run, "po.pdf", id="mocked")
    assert result["outcome"] == "paged the manager"
    assert calls == [("po.pdf", 1)]


async def test_mocking_an_unknown_activity_after_start_is_refused(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(ValueError, match="no worker of this environment registers"):
        env.mock_activity("nope", lambda: None)
    with pytest.raises(TypeError):
        env.mock_activity("escalate")


async def test_mock_before_start_may_name_an_unregistered_activity() -> None:
    env = WorkflowEnvironment(workflows=[Approval], activities=[notify])
    env.mock_activity(escalate, lambda document: f"fake {document}")
    async with env:
        result = await env.client.execute_workflow(Approval.run, "x.pdf", id="pre-mock")
    assert result["outcome"] == "fake x.pdf"


# -- ActivityEnvironment -----------------------------------------------------------------------------


@activity.defn(start_to_close_timeout=timedelta(seconds=30))
async def crawl(pages: int) -> dict[str, Any]:
    info = activity.info()
    start = info.heartbeat_details["page"] + 1 if info.heartbeat_details else 1
    done = []
    for page in range(start, pages + 1):
        activity.heartbeat({"page": page})
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            return {"done": done, "cancelled": True}
        done.append(page)
    return {"done": done, "attempt": info.attempt, "type": info.activity_type}


@activity.defn
def count_until_cancelled(limit: int) -> int:
    n = 0
    while n < limit and not activity.is_cancelled():
        n += 1
        activity.heartbeat(n)
    return n


async def test_activity_env_resumes_from_heartbeat_details() -> None:
    env = ActivityEnvironment(attempt=3, heartbeat_details={"page": 2})
    result = await env.run(crawl, 4)
    assert result == {"done": [3, 4], "attempt": 3, "type": "crawl"}
    assert env.heartbeats == [{"page": 3}, {"page": 4}]
    assert env.info.start_to_close_timeout == timedelta(seconds=30)


async def test_activity_env_cancels_an_async_activity() -> None:
    env = ActivityEnvironment(on_heartbeat=lambda d: env.cancel() if d["page"] == 2 else None)
    result = await env.run(crawl, 5)
    assert result == {"done": [1], "cancelled": True}
    assert env.cancelled


def test_activity_env_runs_a_sync_activity_and_cancels_it() -> None:
    env = ActivityEnvironment(on_heartbeat=lambda n: env.cancel() if n == 3 else None)
    assert env.run(count_until_cancelled, 10) == 3
    assert env.heartbeats == [1, 2, 3]
    assert ActivityEnvironment().run(count_until_cancelled, 2) == 2


def test_activity_env_rejects_heartbeats_that_are_not_json() -> None:
    @activity.defn
    def bad() -> None:
        activity.heartbeat(object())

    with pytest.raises(PayloadEncodeError):
        ActivityEnvironment().run(bad)
    with pytest.raises(ValueError):
        ActivityEnvironment(attempt=2, info=ActivityEnvironment().info)


# -- replay ------------------------------------------------------------------------------------------


@workflow.defn(name="Approval")
class ApprovalReordered:
    """A breaking change: escalates before notifying."""

    def __init__(self) -> None:
        self.decision: str | None = None

    @workflow.run
    async def run(self, document: str) -> dict[str, Any]:
        await escalate(document)
        await notify("alice@example.com", document)
        return {}

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision


async def _export_run(env: WorkflowEnvironment, workflow_id: str) -> dict[str, Any]:
    """Run Approval to its end and export it as ``duro workflow show ID --json`` does."""
    handle = await env.client.start_workflow(Approval.run, "deploy.pdf", id=workflow_id)
    await handle.result()
    info = await handle.describe()
    events = [e.to_json() for e in await handle.fetch_history()]
    return {"workflow_id": info.workflow_id, "run_id": info.run_id, "events": events}


async def test_replay_helpers_accept_and_reject_code_changes(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    for wid in ("run-a", "run-b"):
        export = await _export_run(env, wid)
        (tmp_path / f"{wid}.json").write_text(json.dumps(export, default=str))

    ok = replay_history(tmp_path / "run-a.json", [Approval])
    assert ok.ok and ok.workflow_id == "run-a" and ok.workflow_type == "Approval"
    assert [r.workflow_id for r in replay_histories(tmp_path, [Approval])] == ["run-a", "run-b"]
    assert replay_history(export, [Approval]).run_id == export["run_id"]  # a parsed export

    with pytest.raises(NonDeterminismError) as one:
        replay_history(tmp_path / "run-a.json", [ApprovalReordered])
    assert any("run-a.json" in note for note in one.value.__notes__)
    with pytest.raises(ExceptionGroup) as every:  # all files replayed, every failure listed
        replay_histories(tmp_path, [ApprovalReordered])
    assert len(every.value.exceptions) == 2
    assert all(isinstance(e, NonDeterminismError) for e in every.value.exceptions)

    with pytest.raises(UnknownWorkflowTypeError):
        replay_history(export, [uses_flaky])
    with pytest.raises(ValueError, match="cannot read"):
        replay_history(tmp_path / "missing.json", [Approval])
    with pytest.raises(FileNotFoundError):
        replay_histories(tmp_path / "empty", [Approval])


def test_golden_histories_replay_through_the_helper() -> None:
    results = replay_histories(HISTORIES, [TravelAgent])
    assert results and all(r.ok and r.workflow_type == "TravelAgent" for r in results)


# -- pytest fixtures (this repository runs pytest-asyncio in auto mode) -------------------------------


@pytest.fixture
def duro_workflows() -> list[Any]:
    return [Approval]


@pytest.fixture
def duro_activities() -> list[Any]:
    return [notify, escalate]


async def test_fixtures_give_a_skipping_client_and_a_worker(
    duro_env: WorkflowEnvironment, duro_client: Any, duro_worker: Any
) -> None:
    assert duro_client is duro_env.client and duro_worker is duro_env.worker
    result = await duro_client.execute_workflow(Approval.run, "f.pdf", id="fixtures")
    assert result["outcome"] == "escalated f.pdf"
    assert duro_worker.statistics().workflow_tasks_completed >= 2


def test_public_surface() -> None:
    assert sorted(duro.testing.__all__) == [
        "ActivityEnvironment",
        "WorkflowEnvironment",
        "WorkflowTaskFailedError",
        "replay_histories",
        "replay_history",
    ]
