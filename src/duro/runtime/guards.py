"""Determinism guards: catch clocks, randomness and I/O in workflow code on the first run.

Workflow code is replayed, so a call whose answer changes between runs (the clock, a random
number, a network or file read) makes a later replay diverge "at the worst possible time". The
guards turn that into an immediate, precise error that says what to use instead.

Mechanism, chosen for cost (no per-run import sandbox):

- **Patched module functions**, installed once per process: ``time.time``/``time_ns``, the
  ``random`` module's functions, ``uuid.uuid1``/``uuid4``, ``os.urandom``, ``secrets.*`` and
  ``threading.Thread.start``. Each wrapper checks one thread-local slot (is workflow code of a
  guarded instance running on this thread?) and otherwise calls straight through, so activities
  and the rest of the process pay one attribute lookup.
- **An audit hook** (``sys.addaudithook``), installed once: sockets (``connect``, DNS),
  ``open`` and subprocesses raise audit events before they happen; the hook refuses them while
  workflow code runs. This catches LLM SDKs (``openai``, ``httpx``, ``requests``) however they
  reach the network.
- **A static check** at ``@workflow.defn`` time for ``datetime.now()``/``utcnow()``/``today()``
  and ``date.today()``, which are C methods that cannot be patched; a hit is reported when the
  workflow first runs.

Calls made by the standard library's own machinery on behalf of workflow code (logging's
timestamps, imports reading files, tracebacks reading source lines) and by duro itself are let
through. ``workflow.unsafe.allow(...)`` lifts the guards for a block; ``Worker(
determinism_guards=False)`` turns them off for a worker.
"""

from __future__ import annotations

import ast
import datetime as _datetime
import inspect
import os
import random
import secrets
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from duro.errors import DeadlockError, NondeterministicCallError
from duro.runtime import context

if TYPE_CHECKING:
    from duro.runtime.instance import WorkflowInstance

KINDS = ("time", "random", "network", "file", "subprocess", "thread")
"""What ``workflow.unsafe.allow(*kinds)`` can lift; no kinds lifts all."""

_HINTS = {
    "time": "use workflow.now() (the time of the current workflow task)",
    "random": "use workflow.random() or workflow.uuid4() (seeded from the run)",
    "network": "move it into an activity (model and tool calls are activities)",
    "file": "move it into an activity",
    "subprocess": "move it into an activity",
    "thread": "move it into an activity (for concurrency inside a workflow, use asyncio "
    "tasks: asyncio.gather, asyncio.create_task)",
}

_DURO_DIR = str(Path(__file__).resolve().parents[1])
_STDLIB_DIRS = tuple(
    {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
)
# Frames of these modules call clocks and files for their own bookkeeping, not for the workflow.
_MACHINERY = ("logging", "traceback", "linecache", "importlib", "_frozen_importlib", "duro.")

_installed = False
_install_lock = threading.Lock()


def _active(kind: str) -> WorkflowInstance | None:
    """The running instance if ``kind`` is guarded right now on this thread, else None."""
    inst = context.current_or_none()
    if inst is None or not inst.guards_enabled or inst.guards_suspended:
        return None
    allowed = inst.allowed_kinds
    if allowed and (kind in allowed or "*" in allowed):
        return None
    return inst


def _called_by_machinery(frame: FrameType | None) -> bool:
    """True when the nearest caller is logging, importlib, traceback or duro itself."""
    if frame is None:
        return False
    name = frame.f_globals.get("__name__", "")
    filename = frame.f_code.co_filename
    return name.startswith(_MACHINERY) or filename.startswith(("<frozen importlib", _DURO_DIR))


def _user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame that is neither duro nor the standard library nor site-packages."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            filename.startswith(_DURO_DIR)
            or filename.startswith("<")
            or "site-packages" in filename
            or (filename.startswith(_STDLIB_DIRS) and "site-packages" not in filename)
        ):
            return frame
        frame = frame.f_back
    return None


def violation(inst: WorkflowInstance, call: str, kind: str, frame: FrameType | None) -> None:
    """Record and raise the error for a forbidden call; the workflow task will fail."""
    user = _user_frame(frame)
    where = f"{user.f_code.co_filename}:{user.f_lineno}" if user is not None else "unknown line"
    err = NondeterministicCallError(call, inst.defn.name, where, _HINTS[kind])
    # Sticky: a user's `except Exception` around the call cannot hide it from the task.
    if inst.task_error is None:
        inst.task_error = err
    raise err


def _wrap(kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        inst = _active(kind)
        if inst is not None:
            caller = sys._getframe(1)
            if not _called_by_machinery(caller):
                violation(inst, name, kind, caller)
        return fn(*args, **kwargs)

    guarded.__name__ = getattr(fn, "__name__", name)
    guarded.__qualname__ = getattr(fn, "__qualname__", name)
    guarded.__doc__ = fn.__doc__
    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


_RANDOM_FUNCTIONS = (
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "normalvariate",
    "getrandbits",
    "randbytes",
    "triangular",
    "betavariate",
    "expovariate",
)
_SECRETS_FUNCTIONS = (
    "token_bytes",
    "token_hex",
    "token_urlsafe",
    "choice",
    "randbelow",
    "randbits",
)

_AUDIT_EVENTS = {
    "socket.connect": ("network", "a network connection (socket.connect)"),
    "socket.getaddrinfo": ("network", "a DNS lookup (socket.getaddrinfo)"),
    "socket.gethostbyname": ("network", "a DNS lookup (socket.gethostbyname)"),
    "socket.gethostbyaddr": ("network", "a DNS lookup (socket.gethostbyaddr)"),
    "socket.sendto": ("network", "a network send (socket.sendto)"),
    "open": ("file", "file I/O (open)"),
    "subprocess.Popen": ("subprocess", "a subprocess (subprocess.Popen)"),
    "os.system": ("subprocess", "a subprocess (os.system)"),
    "os.posix_spawn": ("subprocess", "a subprocess (os.posix_spawn)"),
    "os.exec": ("subprocess", "a subprocess (os.exec*)"),
    "os.fork": ("subprocess", "a fork (os.fork)"),
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    spec = _AUDIT_EVENTS.get(event)
    if spec is None:
        return
    kind, call = spec
    inst = _active(kind)
    if inst is None:
        return
    frame = sys._getframe(1)
    # Imports, tracebacks and logging open files on the code's behalf: walking out from the
    # event, machinery met before the first user frame means the call is theirs, not the code's.
    f: FrameType | None = frame
    while f is not None:
        if _called_by_machinery(f):
            return
        if _user_frame(f) is f:
            break
        f = f.f_back
    if event == "open" and args and isinstance(args[0], int):
        return  # os.fdopen of an existing descriptor
    violation(inst, call, kind, frame)


_wrappers: dict[int, tuple[Any, Callable[..., Any]]] = {}
"""id(original function) -> (original, its guarded wrapper)."""


def _patch(owner: Any, attr: str, kind: str, name: str) -> None:
    original = getattr(owner, attr)
    wrapper = _wrap(kind, name, original)
    _wrappers[id(original)] = (original, wrapper)
    setattr(owner, attr, wrapper)


def install() -> None:
    """Install the patches and the audit hook, once per process (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _patch(time, "time", "time", "time.time()")
        _patch(time, "time_ns", "time", "time.time_ns()")
        for name in _RANDOM_FUNCTIONS:
            if hasattr(random, name):
                _patch(random, name, "random", f"random.{name}()")
        for name in _SECRETS_FUNCTIONS:
            _patch(secrets, name, "random", f"secrets.{name}()")
        _patch(uuid, "uuid1", "random", "uuid.uuid1()")
        _patch(uuid, "uuid4", "random", "uuid.uuid4()")
        _patch(os, "urandom", "random", "os.urandom()")
        _patch(threading.Thread, "start", "thread", "threading.Thread.start()")
        sys.addaudithook(_audit)
        _installed = True


def rebind(namespace: dict[str, Any]) -> None:
    """Point names bound by ``from time import time`` (and the like) at the guarded wrappers.

    Such a name holds the original function, taken before the patches existed; replacing it
    in the workflow's own module makes the guard see those calls too. Outside workflow code the
    wrapper calls straight through, so other users of the module are unaffected.
    """
    install()
    for name, value in list(namespace.items()):
        entry = _wrappers.get(id(value))
        if entry is not None and entry[0] is value:
            namespace[name] = entry[1]


# -- static check for what cannot be patched ------------------------------------------------------


@dataclass(frozen=True)
class StaticFinding:
    call: str
    where: str


_CLOCK_METHODS = {"now", "utcnow", "today"}


def scan(target: Any) -> list[StaticFinding]:
    """Find ``datetime.now()``-style calls in a workflow class or function's source.

    Calls lexically inside ``with workflow.unsafe.allow(...)`` blocks are skipped. Source that
    cannot be read (a REPL, a frozen app) yields no findings.
    """
    try:
        source = textwrap.dedent(inspect.getsource(target))
        filename = inspect.getsourcefile(target) or "<unknown>"
        first_line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    namespace = vars(module) if module is not None else {}
    findings: list[StaticFinding] = []

    def resolve(node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return namespace.get(node.id)
        if isinstance(node, ast.Attribute):
            base = resolve(node.value)
            return getattr(base, node.attr, None) if base is not None else None
        return None

    def visit(node: ast.AST, allowed: bool) -> None:
        if isinstance(node, ast.With | ast.AsyncWith) and any(
            _is_unsafe_allow(item.context_expr) for item in node.items
        ):
            allowed = True
        if (
            not allowed
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CLOCK_METHODS
        ):
            owner = resolve(node.func.value)
            if owner in (_datetime.datetime, _datetime.date):
                call = f"{owner.__name__}.{node.func.attr}()"
                findings.append(StaticFinding(call, f"{filename}:{first_line + node.lineno - 1}"))
        for child in ast.iter_child_nodes(node):
            visit(child, allowed)

    visit(tree, False)
    return findings


def _is_unsafe_allow(expr: ast.expr) -> bool:
    return (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr == "allow"
        and isinstance(expr.func.value, ast.Attribute | ast.Name)
        and (
            (isinstance(expr.func.value, ast.Attribute) and expr.func.value.attr == "unsafe")
            or (isinstance(expr.func.value, ast.Name) and expr.func.value.id == "unsafe")
        )
    )


def report_static(inst: WorkflowInstance, findings: tuple[Any, ...]) -> None:
    """Fail the task for the first static finding (called when the workflow first runs)."""
    if not findings or not inst.guards_enabled:
        return
    first = findings[0]
    err = NondeterministicCallError(first.call, inst.defn.name, first.where, _HINTS["time"])
    if inst.task_error is None:
        inst.task_error = err


# -- deadlock detection -------------------------------------------------------------------------


class DeadlockDetected(BaseException):
    """Injected into a workflow activation that did not yield in time (internal)."""


class Watchdog:
    """One thread per process that notices activations running longer than their limit.

    An activation registers itself (thread id, start, limit) under a lock; the watchdog, polling
    a few times a second, captures the stuck thread's stack and raises ``DeadlockDetected`` in
    it (``PyThreadState_SetAsyncExc``). The activation clears any injection that did not land
    before it unregisters, under the same lock, so the exception never escapes workflow code.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._running: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="duro-watchdog", daemon=True)
            # The guarded Thread.start must not refuse our own thread if started mid-activation.
            threading.Thread.start.__wrapped__(self._thread)  # type: ignore[attr-defined]

    def watch(self, inst: WorkflowInstance, limit: float) -> _Watched:
        return _Watched(self, inst, limit)

    def _loop(self) -> None:
        import ctypes

        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                for tid, w in list(self._running.items()):
                    # Inject again every `limit` seconds: code with a bare `except:` may have
                    # swallowed the previous one and kept looping.
                    if now - max(w.started, w.last_injection) < w.limit:
                        continue
                    frame = sys._current_frames().get(tid)
                    w.stack = "".join(traceback_format(frame)) if frame is not None else ""
                    w.injected = True
                    w.last_injection = now
                    info = w.inst.info
                    if not isinstance(w.inst.task_error, DeadlockError):
                        w.inst.task_error = DeadlockError(
                            w.inst.defn.name, info.workflow_id, info.run_id, w.limit, w.stack
                        )
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(tid), ctypes.py_object(DeadlockDetected)
                    )


def traceback_format(frame: FrameType) -> list[str]:
    import traceback

    return traceback.format_stack(frame)


class _Watched:
    def __init__(self, dog: Watchdog, inst: WorkflowInstance, limit: float) -> None:
        self.dog = dog
        self.inst = inst
        self.limit = limit
        self.started = 0.0
        self.injected = False
        self.last_injection = 0.0
        self.stack = ""
        self.tid = threading.get_ident()

    def __enter__(self) -> _Watched:
        self.dog._ensure_started()
        self.started = time.monotonic()
        with self.dog._lock:
            self.dog._running[self.tid] = self
        return self

    def __exit__(self, *exc: object) -> None:
        with self.dog._lock:
            self.dog._running.pop(self.tid, None)
            if self.injected:
                import ctypes

                # Clear an injection that has not been delivered yet.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), None)


def iter_kinds(kinds: tuple[str, ...]) -> Iterator[str]:
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} for workflow.unsafe.allow; use {KINDS}")
        yield kind


watchdog = Watchdog()
