"""What ``@workflow.defn`` and ``@activity.defn`` record, read by the runtime and the worker.

Kept below both the public decorators and the runtime so neither imports the other's internals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from duro.converter import Signature, signature_of
from duro.retry import RetryPolicy

DEFAULT_START_TO_CLOSE = timedelta(minutes=5)
"""Activity attempt timeout when neither the call nor the definition sets one."""


@dataclass(frozen=True)
class HandlerDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    signature: Signature
    validator: Callable[..., Any] | None = None
    """Update handlers only: runs before the update is accepted; raising rejects it."""


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    cls: type | None
    """The ``@workflow.defn`` class, or None for a plain async function."""
    run_fn: Callable[..., Any]
    run_signature: Signature
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)
    updates: dict[str, HandlerDefinition] = field(default_factory=dict)
    static_findings: tuple[Any, ...] = ()
    """Clock calls the determinism guards found in the source (reported on the first run)."""
    fail_run_on_nondeterminism: bool = False
    """Replay divergence fails the run (True) or only the workflow task (default)."""
    pinned: bool = False
    """Only workers of the build id that started a run may advance it."""

    def handler_names(self) -> dict[str, list[str]]:
        """Registered in the store so clients can reject unknown signal / query names."""
        return {
            "signals": sorted(self.signals),
            "queries": sorted(self.queries),
            "updates": sorted(self.updates),
        }


@dataclass(frozen=True)
class ActivityDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    signature: Signature
    start_to_close_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    task_queue: str | None = None


_WORKFLOW_ATTR = "__duro_workflow__"
_ACTIVITY_ATTR = "__duro_activity__"
_HANDLER_ATTR = "__duro_handler__"


def set_workflow_definition(target: Any, defn: WorkflowDefinition) -> None:
    setattr(target, _WORKFLOW_ATTR, defn)


def workflow_definition(target: Any) -> WorkflowDefinition | None:
    """The definition behind a workflow class, its run method, or a workflow function."""
    defn = getattr(target, _WORKFLOW_ATTR, None)
    if defn is None and inspect.ismethod(target):
        defn = getattr(target.__self__, _WORKFLOW_ATTR, None)
    if defn is None:
        owner = _method_owner(target)
        if owner is not None:
            defn = getattr(owner, _WORKFLOW_ATTR, None)
    return defn if isinstance(defn, WorkflowDefinition) else None


def _method_owner(fn: Any) -> type | None:
    qualname = getattr(fn, "__qualname__", "")
    module = inspect.getmodule(fn)
    if "." not in qualname or module is None:
        return None
    owner: Any = module
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner if isinstance(owner, type) else None


def set_activity_definition(target: Any, defn: ActivityDefinition) -> None:
    setattr(target, _ACTIVITY_ATTR, defn)


def activity_definition(target: Any) -> ActivityDefinition | None:
    defn = getattr(target, _ACTIVITY_ATTR, None)
    return defn if isinstance(defn, ActivityDefinition) else None


def mark_handler(fn: Callable[..., Any], kind: str, name: str | None) -> None:
    setattr(fn, _HANDLER_ATTR, (kind, name or fn.__name__))


def handler_mark(fn: Any) -> tuple[str, str] | None:
    mark = getattr(fn, _HANDLER_ATTR, None)
    return mark if isinstance(mark, tuple) else None


def handler_name(handler: Callable[..., Any] | str, kind: str) -> str:
    """The registered name of a ``@workflow.<kind>`` method, or ``handler`` if it is a name."""
    if isinstance(handler, str):
        return handler
    mark = handler_mark(handler)
    if mark is None or mark[0] != kind:
        raise TypeError(
            f"{handler!r} is not a @workflow.{kind} method; pass the method or its name"
        )
    return mark[1]


_VALIDATOR_ATTR = "__duro_validator__"


def set_validator(update_fn: Callable[..., Any], validator: Callable[..., Any]) -> None:
    setattr(update_fn, _VALIDATOR_ATTR, validator)


def make_handler(name: str, fn: Callable[..., Any], *, skip_self: bool) -> HandlerDefinition:
    return HandlerDefinition(
        name=name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        signature=signature_of(fn, skip_self),
        validator=getattr(fn, _VALIDATOR_ATTR, None),
    )
