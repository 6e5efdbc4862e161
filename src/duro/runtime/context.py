"""The instance whose code is running now.

Activations are synchronous calls on the worker's thread (workflow code only runs inside
``WorkflowInstance.activate`` or ``query``), so one thread-local slot is enough and cheaper
than a ContextVar copied into every task.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duro.runtime.instance import WorkflowInstance

_local = threading.local()


def current() -> WorkflowInstance:
    """The running workflow instance; raises when called outside workflow code."""
    inst: WorkflowInstance | None = getattr(_local, "instance", None)
    if inst is None:
        raise RuntimeError(
            "not in workflow code: duro.workflow functions work only inside a running workflow"
        )
    return inst


def current_or_none() -> WorkflowInstance | None:
    return getattr(_local, "instance", None)


def set_current(inst: WorkflowInstance | None) -> WorkflowInstance | None:
    previous: WorkflowInstance | None = getattr(_local, "instance", None)
    _local.instance = inst
    return previous
