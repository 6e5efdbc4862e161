"""Pin the public surface: what users import from duro, duro.workflow and duro.activity."""

import duro
import duro.activity
import duro.workflow


def test_duro_exports() -> None:
    assert sorted(duro.__all__) == sorted(
        [
            "ActivityError",
            "ApplicationError",
            "ChildWorkflowError",
            "Client",
            "DeadlockError",
            "DuroError",
            "Event",
            "EventType",
            "ExternalWorkflowError",
            "IdConflictPolicy",
            "IdReusePolicy",
            "NonDeterminismError",
            "NondeterministicCallError",
            "PayloadDecodeError",
            "PayloadEncodeError",
            "OverlapPolicy",
            "QueryError",
            "QuerySyntaxError",
            "ReplayResult",
            "Replayer",
            "ResetFailedError",
            "RetryPolicy",
            "RunStatus",
            "ScheduleError",
            "ScheduleHandle",
            "ScheduleSpec",
            "TimeoutError",
            "UnknownHandlerError",
            "UnknownWorkflowTypeError",
            "UpdateFailedError",
            "Worker",
            "WorkerStatistics",
            "WorkflowAlreadyStartedError",
            "WorkflowClosedError",
            "WorkflowExecution",
            "WorkflowFailureError",
            "WorkflowHandle",
            "WorkflowNotFoundError",
            "__version__",
        ]
    )
    for name in duro.__all__:
        assert hasattr(duro, name), name


def test_workflow_exports() -> None:
    assert sorted(duro.workflow.__all__) == [
        "ActivityHandle",
        "ChildWorkflowHandle",
        "ExternalWorkflowHandle",
        "UpdateMethod",
        "WorkflowInfo",
        "continue_as_new",
        "defn",
        "deprecate_patch",
        "execute_activity",
        "execute_child_workflow",
        "get_external_workflow_handle",
        "in_workflow",
        "info",
        "logger",
        "now",
        "patched",
        "query",
        "random",
        "run",
        "signal",
        "sleep",
        "start_activity",
        "start_child_workflow",
        "unsafe",
        "update",
        "upsert_memo",
        "upsert_search_attributes",
        "uuid4",
        "wait_condition",
    ]
    for name in duro.workflow.__all__:
        assert hasattr(duro.workflow, name), name


def test_activity_exports() -> None:
    assert sorted(duro.activity.__all__) == [
        "ActivityInfo",
        "defn",
        "heartbeat",
        "in_activity",
        "info",
        "is_cancelled",
        "raise_complete_async",
    ]


def test_no_private_names_leak() -> None:
    for module in (duro, duro.workflow, duro.activity):
        assert not [n for n in module.__all__ if n.startswith("_") and n != "__version__"]


def test_workflow_functions_fail_clearly_outside_a_workflow() -> None:
    import pytest

    with pytest.raises(RuntimeError, match="not in workflow code"):
        duro.workflow.now()
    with pytest.raises(RuntimeError, match="not in an activity"):
        duro.activity.info()
