"""duro: durable execution for Python.

Write a workflow as an ordinary ``async`` function or class (``duro.workflow``), its side
effects as activities (``duro.activity``), run a ``Worker``, and start runs with a ``Client``.
Runs survive crashes and restarts: history is event-sourced and replayed deterministically.

Layout: ``workflow`` and ``activity`` are what user code imports; ``client`` and ``worker`` run
things; ``runtime`` (deterministic loop, replay), ``engine`` (pure state rules) and ``store``
(SQLite) are internal.
"""

from duro.client import Client, IdConflictPolicy, IdReusePolicy, WorkflowExecution, WorkflowHandle
from duro.errors import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    DeadlockError,
    DuroError,
    ExternalWorkflowError,
    NonDeterminismError,
    NondeterministicCallError,
    PayloadDecodeError,
    PayloadEncodeError,
    QueryError,
    ResetFailedError,
    ScheduleError,
    TimeoutError,
    UnknownHandlerError,
    UnknownWorkflowTypeError,
    UpdateFailedError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from duro.history import Event, EventType, RunStatus
from duro.replayer import Replayer, ReplayResult
from duro.retry import RetryPolicy
from duro.schedules import OverlapPolicy, ScheduleHandle, ScheduleSpec
from duro.visibility import QuerySyntaxError
from duro.worker import Worker, WorkerStatistics

__version__ = "0.1.0"

__all__ = [
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
    "OverlapPolicy",
    "PayloadDecodeError",
    "PayloadEncodeError",
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
