"""Errors raised by duro.

The tree::

    DuroError
    ├── ApplicationError             a failure raised by user code (activity or workflow)
    ├── ActivityError                an activity failed for good; .cause says why
    ├── TimeoutError                 an activity ran out of time; .kind names which timeout
    ├── WorkflowFailureError         client side: the run failed, was canceled or terminated
    ├── ChildWorkflowError           workflow side: a child workflow failed, was canceled or ended
    ├── ExternalWorkflowError        workflow side: a signal/cancel to another workflow failed
    ├── NonDeterminismError          replayed code produced other commands than history holds
    ├── NondeterministicCallError    workflow code called a clock, randomness or I/O
    ├── DeadlockError                workflow code did not yield within the deadlock timeout
    ├── WorkflowAlreadyStartedError  a start collided with a running workflow id
    ├── WorkflowNotFoundError        no run with that workflow id / run id
    ├── WorkflowClosedError          the run is closed and cannot take signals or cancels
    ├── UnknownWorkflowTypeError     no worker registers that workflow type
    ├── UnknownHandlerError          a signal or query name the workflow does not define
    ├── ScheduleError                a schedule id that exists already, or that does not exist
    ├── ResetFailedError             a reset/fork point that cannot be used
    ├── QueryError                   the query handler raised
    ├── UpdateFailedError            an update was rejected by its validator or its handler raised
    ├── PayloadError
    │   ├── PayloadEncodeError       a value cannot be turned into JSON
    │   └── PayloadDecodeError       stored JSON does not fit the expected type
    └── StoreError
        ├── ConcurrencyConflictError another writer advanced the run first
        ├── LeaseLostError           a task result came from a lease that is no longer current
        └── SchemaError              the database schema is newer than this code

Internal control flow (evicting a cached run, stopping a workflow coroutine) uses
``BaseException`` subclasses in ``duro.runtime`` so that a user's ``except Exception`` cannot
swallow it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class DuroError(Exception):
    """Base class of every error duro raises on purpose."""


class ApplicationError(DuroError):
    """A failure raised by user code, carried through history to whoever awaits the result.

    Raise it from an activity to control retries: ``non_retryable=True`` stops them,
    ``next_retry_delay`` overrides the policy's backoff for the next attempt (for example the
    ``Retry-After`` of an HTTP 429). Any other exception raised by an activity is turned into an
    ``ApplicationError`` whose ``type`` is the exception's class name.
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        next_retry_delay: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.type = type or "ApplicationError"
        self.non_retryable = non_retryable
        self.next_retry_delay = next_retry_delay

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.type != "ApplicationError" else self.message


class TimeoutError(DuroError):
    """An activity attempt ran past one of its timeouts; ``kind`` names which one."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or f"activity {kind} timeout")
        self.kind = kind


class ActivityError(DuroError):
    """Raised in workflow code when an activity failed after its last attempt.

    ``cause`` holds the final failure (an ``ApplicationError`` or ``TimeoutError``).
    """

    def __init__(
        self, activity_type: str, activity_id: str, attempt: int, cause: BaseException
    ) -> None:
        super().__init__(
            f"activity {activity_type!r} (id {activity_id}) failed after {attempt} "
            f"attempt(s): {cause}"
        )
        self.activity_type = activity_type
        self.activity_id = activity_id
        self.attempt = attempt
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        assert self.__cause__ is not None
        return self.__cause__


class WorkflowFailureError(DuroError):
    """Raised by ``handle.result()`` when the run failed, was canceled or was terminated."""

    def __init__(self, workflow_id: str, run_id: str, status: str, cause: BaseException) -> None:
        super().__init__(f"workflow {workflow_id!r} (run {run_id}) {status.lower()}: {cause}")
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.status = status
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        assert self.__cause__ is not None
        return self.__cause__


class ChildWorkflowError(DuroError):
    """Raised in the parent when a child workflow did not complete; ``.cause`` says why."""

    def __init__(self, workflow_type: str, status: str, cause: BaseException) -> None:
        super().__init__(f"child workflow {workflow_type!r} {status.lower()}: {cause}")
        self.workflow_type = workflow_type
        self.status = status
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        assert self.__cause__ is not None
        return self.__cause__


class ExternalWorkflowError(DuroError):
    """A signal or cancel request sent by workflow code found no running target."""


class NonDeterminismError(DuroError):
    """Replayed workflow code produced a command that differs from the recorded history.

    The workflow task fails and is retried; the run is not lost. Fix the code (see
    ``docs/determinism.md``: guard the change with ``workflow.patched``) or reset the run.
    """

    def __init__(
        self,
        event_id: int | None,
        recorded: str | None,
        produced: str | None,
        *,
        hint: str | None = None,
    ) -> None:
        self.event_id = event_id
        self.recorded = recorded
        self.produced = produced
        where = f"at event {event_id}" if event_id is not None else "at the end of history"
        advice = hint or ("changing workflow code under running workflows needs workflow.patched()")
        super().__init__(
            f"non-deterministic workflow {where}: history recorded "
            f"{recorded or 'no command'}, the code produced {produced or 'no command'}. "
            f"{advice[0].upper()}{advice[1:]}; see docs/determinism.md"
        )


class NondeterministicCallError(DuroError):
    """Workflow code called something whose answer changes between runs (caught on first run).

    The workflow task fails (and is retried); fix the code: use the ``duro.workflow``
    equivalent, or move the call into an activity.
    """

    def __init__(self, call: str, workflow_type: str, where: str, hint: str) -> None:
        self.call = call
        self.workflow_type = workflow_type
        self.where = where
        self.hint = hint
        super().__init__(
            f"workflow {workflow_type!r} called {call} at {where}: workflow code is replayed "
            f"and must be deterministic; {hint}. If this call is safe here, wrap it in "
            "`with workflow.unsafe.allow(...)`"
        )


class DeadlockError(DuroError):
    """Workflow code ran without yielding for longer than the worker's deadlock timeout."""

    def __init__(self, workflow_type: str, workflow_id: str, run_id: str, limit: float, stack: str):
        self.stack = stack
        super().__init__(
            f"workflow {workflow_type!r} {workflow_id!r} (run {run_id}) did not yield for "
            f"{limit:g} s: a blocking call or an endless loop in workflow code? Its stack:\n"
            f"{stack}"
        )


class WorkflowAlreadyStartedError(DuroError):
    """A workflow with this id is already running and the conflict policy is ``fail``."""

    def __init__(self, workflow_id: str, run_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} is already running (run {run_id})")
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(DuroError):
    """No run matches the given workflow id (and run id)."""

    def __init__(self, workflow_id: str, run_id: str | None = None) -> None:
        suffix = f" with run {run_id}" if run_id else ""
        super().__init__(f"workflow {workflow_id!r}{suffix} not found")
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowClosedError(DuroError):
    """The run is closed: it takes no more signals or cancel requests."""

    def __init__(self, workflow_id: str, run_id: str, status: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} (run {run_id}) is closed ({status.lower()}); "
            "it cannot take this request"
        )
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.status = status


class UnknownWorkflowTypeError(DuroError):
    """The workflow type is not registered by the worker (or any worker of the task queue)."""

    def __init__(self, workflow_type: str, known: list[str]) -> None:
        known_list = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown workflow type {workflow_type!r}; registered types: {known_list}")
        self.workflow_type = workflow_type
        self.known = known


class UnknownHandlerError(DuroError):
    """A signal, query or update name that the workflow type does not define."""

    def __init__(self, kind: str, name: str, workflow_type: str, known: list[str]) -> None:
        known_list = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"workflow type {workflow_type!r} has no {kind} named {name!r}; "
            f"it defines: {known_list}"
        )
        self.kind = kind
        self.name = name
        self.workflow_type = workflow_type
        self.known = known


class ScheduleError(DuroError):
    """A schedule id that exists already (create) or that does not exist (the rest)."""


class ResetFailedError(DuroError):
    """The reset or fork point is not a usable workflow task of the run."""


class QueryError(DuroError):
    """The query could not be answered: the handler raised or the run could not be loaded."""


class UpdateFailedError(DuroError):
    """An update was rejected by its validator (history untouched) or its handler raised."""

    def __init__(self, name: str, workflow_id: str, reason: str) -> None:
        super().__init__(f"update {name!r} on workflow {workflow_id!r} failed: {reason}")
        self.name = name
        self.workflow_id = workflow_id
        self.reason = reason


class PayloadError(DuroError):
    """A value could not be converted to or from its stored JSON form."""


class PayloadEncodeError(PayloadError):
    """A value has no JSON form (an open file, a socket, an arbitrary object...)."""


class PayloadDecodeError(PayloadError):
    """Stored JSON does not fit the type the receiving function declares."""


class StoreError(DuroError):
    """A store operation failed; drivers' errors are translated into this family."""


class ConcurrencyConflictError(StoreError):
    """Another writer advanced the run between our read and our write (optimistic lock)."""

    def __init__(self, run_id: str, expected_next_event_id: int) -> None:
        super().__init__(
            f"run {run_id} changed concurrently (expected next event id {expected_next_event_id})"
        )
        self.run_id = run_id
        self.expected_next_event_id = expected_next_event_id


class LeaseLostError(StoreError):
    """A task completion carried a lease that is no longer current; the result is rejected."""

    def __init__(self, task: str) -> None:
        super().__init__(f"lease on {task} is no longer held; result rejected")
        self.task = task


class SchemaError(StoreError):
    """The database schema is newer than this version of duro knows, or is damaged."""
