"""The embedded store: one SQLite file, safe for several worker processes.

Concurrency model: every operation of this process runs on one writer thread that owns the
connection. The thread takes whatever operations are queued, runs them in one ``BEGIN
IMMEDIATE`` transaction (each in its own savepoint, so one failing operation rolls back alone)
and commits once: group commit. Other processes on the same file are serialized by SQLite's
lock (``busy_timeout``); when the thread is idle it watches ``PRAGMA data_version`` so commits
made by other processes wake this process's pollers within milliseconds.

Durability: WAL with ``synchronous=NORMAL`` survives any process crash; a power loss may drop
the last transactions. Pass ``synchronous="FULL"`` to fsync every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from duro.converter import dumps, loads
from duro.engine import activity as activity_rules
from duro.engine import requests as request_rules
from duro.engine import start as start_rules
from duro.engine import timers as timer_rules
from duro.engine import workflow_task as wt_rules
from duro.engine.model import (
    ActivitySpec,
    ActivityTaskRecord,
    RunRecord,
    Transition,
    WorkflowTaskState,
)
from duro.engine.start import StartDecision, StartRequest
from duro.errors import (
    ConcurrencyConflictError,
    LeaseLostError,
    SchemaError,
    StoreError,
    WorkflowNotFoundError,
)
from duro.history import Event, EventType, NewEvent, RunStatus
from duro.store import migrate
from duro.store.notify import Notifier
from duro.store.protocol import (
    ActivityTaskLease,
    CompletionResult,
    ExecutionInfo,
    PendingActivityInfo,
    QueryOutcome,
    QueryTask,
    ReapResult,
    StartResult,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)

T = TypeVar("T")

WORKFLOW_TASK_LEASE = 10.0
"""Seconds a worker may hold a workflow task before another may take it."""
STICKY_TIMEOUT = 3.0
"""Seconds a run's next workflow task waits for the worker that has it cached."""
QUERY_LEASE = 10.0

_EVENT_TYPES = {t.value: t for t in EventType}


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def _new_id() -> str:
    """Unique lease / run ids: a per-process random prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


@dataclass
class _Tx:
    """One operation's view of the open transaction."""

    conn: sqlite3.Connection
    now: float
    notes: set[Hashable] = field(default_factory=set)


_Op = Callable[..., Any]


def _connect(path: str, synchronous: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Wait for other processes' writes (while migrating; the loop runner then sets 0).
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


class _Writer(threading.Thread):
    """Owns the connection; runs queued operations in group-committed transactions."""

    MAX_BATCH = 128

    def __init__(self, store: SQLiteStore, path: str, synchronous: str, watch_interval: float):
        super().__init__(name=f"duro-sqlite:{Path(path).name}", daemon=True)
        self.store = store
        self.path = path
        self.synchronous = synchronous
        self.watch_interval = watch_interval
        self.ops: queue.SimpleQueue[tuple[_Op, tuple[Any, ...], asyncio.Future[Any], bool] | None]
        self.ops = queue.SimpleQueue()
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self.conn: sqlite3.Connection | None = None
        self._data_version = -1

    def run(self) -> None:
        try:
            self.conn = _connect(self.path, self.synchronous, busy_timeout_ms=30000)
            migrate.migrate_sqlite(self.conn)
            self._data_version = self._read_data_version()
        except BaseException as e:  # reported to open()
            self.startup_error = e
            self.ready.set()
            return
        self.ready.set()
        conn = self.conn
        while True:
            try:
                item = self.ops.get(timeout=self.watch_interval)
            except queue.Empty:
                self._check_foreign_commits()
                continue
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self.ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
            self._check_foreign_commits()
            if stop:
                break
        conn.close()

    def _read_data_version(self) -> int:
        assert self.conn is not None
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def _check_foreign_commits(self) -> None:
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self.store._post_notify_all()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        while True:
            done = _execute_batch(self.store, conn, batch)
            if done is not None:
                self.store._post_results(*done)
                return


_Item = tuple[_Op, tuple[Any, ...], "asyncio.Future[Any]", bool]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _is_busy(e: sqlite3.Error) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def _execute_batch(
    store: SQLiteStore, conn: sqlite3.Connection, batch: list[_Item]
) -> tuple[list[_Outcome], set[Hashable]] | None:
    """Run queued operations in one transaction, each in its own savepoint (group commit).

    Returns None when another process holds the write lock, so the caller retries later.
    """
    readonly = all(ro for _, _, _, ro in batch)
    try:
        conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        if _is_busy(e):
            return None
        raise
    outcomes: list[_Outcome] = []
    notes: set[Hashable] = set()
    try:
        now = store.now()
        for fn, args, fut, _ in batch:
            tx = _Tx(conn, now)
            conn.execute("SAVEPOINT op")
            try:
                result = fn(tx, *args)
            except BaseException as e:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((fut, None, e))
            else:
                conn.execute("RELEASE op")
                outcomes.append((fut, result, None))
                notes |= tx.notes
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if _is_busy(e):
            return None
        err = StoreError(f"SQLite transaction failed: {e}")
        err.__cause__ = e
        return [(fut, None, err) for _, _, fut, _ in batch], set()
    return outcomes, notes


class _LoopRunner:
    """Runs operations on the event loop thread itself, batching those queued in one turn.

    No thread hop and no GIL hand-off per operation: an operation is queued, and one callback
    per loop turn commits everything queued so far in one transaction (group commit). When
    another process holds the write lock, the batch is retried a moment later instead of
    blocking the loop. Idle, it polls ``PRAGMA data_version`` to notice other processes'
    commits.
    """

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection, watch_interval: float):
        self.store = store
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.pending: list[_Item] = []
        self.scheduled = False
        self.busy_retries = 0
        self.watch_interval = watch_interval
        self.closed = False
        self._data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        self._watch_handle = self.loop.call_later(watch_interval, self._watch)

    def submit(self, item: _Item) -> None:
        self.pending.append(item)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        batch, self.pending = self.pending, []
        if not batch:
            return
        done = _execute_batch(self.store, self.conn, batch)
        if done is None:  # locked by another process: retry soon, without blocking the loop
            self.pending = batch + self.pending
            self.busy_retries += 1
            self.scheduled = True
            self.loop.call_later(min(0.001 * self.busy_retries, 0.05), self._flush)
            return
        self.busy_retries = 0
        self.store._deliver(*done)
        self._check_foreign_commits()

    def _check_foreign_commits(self) -> None:
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            self._data_version = version
            self.store._notifier.notify_all()

    def _watch(self) -> None:
        if self.closed:
            return
        if not self.scheduled:
            with contextlib.suppress(sqlite3.Error):
                self._check_foreign_commits()
        self._watch_handle = self.loop.call_later(self.watch_interval, self._watch)

    def close(self) -> None:
        self.closed = True
        self._watch_handle.cancel()
        if self.pending:
            self._flush()
        self.conn.close()


class SQLiteStore:
    """The embedded default store. Open with ``await SQLiteStore.open("sqlite:///duro.db")``."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        watch_interval: float = 0.005,
        thread: bool = False,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notifier = Notifier()
        self._synchronous = synchronous.upper()
        self._watch_interval = watch_interval
        self._writer = _Writer(self, path, self._synchronous, watch_interval) if thread else None
        self._runner: _LoopRunner | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, **options: Any) -> SQLiteStore:
        """Open (creating and migrating if needed) the database named by a ``sqlite:`` URL."""
        store = cls(sqlite_path(url), **options)
        await store.start()
        return store

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self._writer is None:
            try:
                conn = _connect(self.path, self._synchronous, busy_timeout_ms=30000)
                migrate.migrate_sqlite(conn)
            except StoreError:
                raise
            except sqlite3.Error as e:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {e}") from e
            # Operations never wait on the lock inside SQLite: the runner retries instead.
            conn.execute("PRAGMA busy_timeout = 0")
            self._runner = _LoopRunner(self, conn, self._watch_interval)
            return
        self._writer.start()
        await asyncio.to_thread(self._writer.ready.wait)
        if self._writer.startup_error is not None:
            err = self._writer.startup_error
            if isinstance(err, StoreError):
                raise err
            raise StoreError(f"cannot open SQLite database {self.path!r}: {err}") from err

    def now(self) -> float:
        return self._clock()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.close()
            return
        if self._writer is not None:
            self._writer.ops.put(None)
            await asyncio.to_thread(self._writer.join)

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = self._loop
        assert loop is not None, "store used before start()"
        fut: asyncio.Future[T] = loop.create_future()
        if self._runner is not None:
            self._runner.submit((fn, args, fut, readonly))
        else:
            assert self._writer is not None
            self._writer.ops.put((fn, args, fut, readonly))
        return await fut

    def _post_results(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        notes: set[Hashable],
    ) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed while we committed
            loop.call_soon_threadsafe(self._deliver, outcomes, notes)

    def _post_notify_all(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._notifier.notify_all)

    def _deliver(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        notes: set[Hashable],
    ) -> None:
        for topic in notes:
            self._notifier.notify(topic)
        for fut, result, error in outcomes:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def version(self, topic: Hashable) -> int:
        return self._notifier.version(topic)

    async def wait_for(
        self, topics: Iterable[Hashable], since: Mapping[Any, int], timeout: float
    ) -> None:
        await self._notifier.wait(topics, since, timeout)

    # -- starting and external requests ----------------------------------------------------------

    async def start_workflow(self, req: StartRequest) -> StartResult:
        return await self._call(_op_start_workflow, req)

    async def signal_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        request_id: str | None = None,
    ) -> None:
        await self._call(_op_signal, namespace, workflow_id, run_id, name, args, request_id)

    async def request_cancel(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            _op_request, request_rules.request_cancel, namespace, workflow_id, run_id, reason
        )

    async def terminate(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            _op_request, request_rules.terminate, namespace, workflow_id, run_id, reason
        )

    # -- workflow tasks --------------------------------------------------------------------------

    async def poll_workflow_tasks(
        self,
        namespace: str,
        task_queue: str,
        worker_id: str,
        max_tasks: int,
        cached_upto: Callable[[str], int] | None = None,
    ) -> list[WorkflowTaskLease]:
        return await self._call(
            _op_poll_workflow_tasks, namespace, task_queue, worker_id, max_tasks, cached_upto
        )

    async def get_history(self, run_id: str, after_event_id: int = 0) -> list[Event]:
        return await self._call(_op_get_history, run_id, after_event_id, readonly=True)

    async def complete_workflow_task(
        self, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
    ) -> CompletionResult:
        return await self._call(_op_complete_workflow_task, lease, completion)

    async def fail_workflow_task(self, lease: WorkflowTaskLease, failure: dict[str, Any]) -> None:
        await self._call(_op_fail_workflow_task, lease, failure)

    # -- activity tasks --------------------------------------------------------------------------

    async def poll_activity_tasks(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[ActivityTaskLease]:
        return await self._call(
            _op_poll_activity_tasks, namespace, task_queue, worker_id, max_tasks
        )

    async def complete_activity_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
    ) -> WorkflowTaskLease | None:
        return await self._call(
            _op_activity_outcome, lease, True, result, eager_worker_id, cached_upto
        )

    async def fail_activity_task(
        self,
        lease: ActivityTaskLease,
        failure: dict[str, Any],
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
    ) -> WorkflowTaskLease | None:
        return await self._call(
            _op_activity_outcome, lease, False, failure, eager_worker_id, cached_upto
        )

    async def heartbeat_activity_task(self, lease: ActivityTaskLease, details: Any) -> bool:
        return await self._call(_op_heartbeat_activity, lease, details)

    # -- timers ----------------------------------------------------------------------------------

    async def fire_due_timers(self, limit: int = 256) -> int:
        return await self._call(_op_fire_due_timers, limit)

    async def next_timer_time(self) -> float | None:
        return await self._call(_op_next_timer_time, readonly=True)

    # -- queries ---------------------------------------------------------------------------------

    async def submit_query(
        self, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
    ) -> int:
        return await self._call(_op_submit_query, namespace, workflow_id, run_id, name, args)

    async def poll_queries(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[QueryTask]:
        return await self._call(_op_poll_queries, namespace, task_queue, worker_id, max_tasks)

    async def answer_query(
        self, query_id: int, lease_id: str, result: Any, error: str | None
    ) -> None:
        await self._call(_op_answer_query, query_id, lease_id, result, error)

    async def take_query_outcome(self, query_id: int) -> QueryOutcome:
        return await self._call(_op_take_query_outcome, query_id)

    # -- workers ---------------------------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        namespace: str,
        task_queue: str,
        identity: str,
        workflow_types: dict[str, dict[str, list[str]]],
    ) -> None:
        await self._call(
            _op_register_worker, worker_id, namespace, task_queue, identity, workflow_types
        )

    async def heartbeat_worker(self, worker_id: str) -> None:
        await self._call(_op_heartbeat_worker, worker_id)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._call(_op_unregister_worker, worker_id)

    async def reap(self, liveness_timeout: float) -> ReapResult:
        return await self._call(_op_reap, liveness_timeout)

    async def workflow_type_handlers(
        self, namespace: str, workflow_type: str
    ) -> dict[str, list[str]] | None:
        return await self._call(_op_type_handlers, namespace, workflow_type, readonly=True)

    async def known_workflow_types(self, namespace: str, task_queue: str) -> list[str] | None:
        return await self._call(_op_known_types, namespace, task_queue, readonly=True)

    # -- visibility ------------------------------------------------------------------------------

    async def describe(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> ExecutionInfo:
        return await self._call(_op_describe, namespace, workflow_id, run_id, readonly=True)

    async def list_workflows(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        status: RunStatus | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[ExecutionInfo]:
        return await self._call(
            _op_list, namespace, workflow_type, status, workflow_id, limit, readonly=True
        )

    async def resolve_run(self, namespace: str, workflow_id: str, run_id: str | None) -> str:
        """The run id of ``run_id`` or, if None, of the workflow id's current run."""
        return await self._call(_op_resolve_run, namespace, workflow_id, run_id, readonly=True)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``, ``sqlite:////abs.db`` -> ``/abs.db``; paths as is."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise ValueError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        path = rest[1:]
        if not path:
            raise ValueError(f"bad SQLite URL {url!r}: no file name")
        return path
    if "://" in url:
        raise ValueError(f"not a SQLite URL: {url!r}")
    return url


# ===============================================================================================
# Operations. Each runs on the writer thread inside the open transaction (its own savepoint).
# Invariant: one engine rule decides, _apply persists; every history append checks and bumps
# the run's next_event_id.
# =================================================================================================

_RUN_COLUMNS = (
    "namespace, workflow_id, run_id, workflow_type, task_queue, status, next_event_id, "
    "wt_state, wt_attempt, sticky_worker, buffered"
)
_RUN_COLUMNS_E = ", ".join(f"e.{c.strip()}" for c in _RUN_COLUMNS.split(","))


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        namespace=row[0],
        workflow_id=row[1],
        run_id=row[2],
        workflow_type=row[3],
        task_queue=row[4],
        status=RunStatus(row[5]),
        next_event_id=row[6],
        wt_state=WorkflowTaskState(row[7]),
        wt_attempt=row[8],
        sticky_worker=row[9],
        has_buffered=bool(row[10]),
    )


def _load_run(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM executions WHERE run_id = ?", (run_id,)
    ).fetchone()
    if row is None:
        raise WorkflowNotFoundError("?", run_id)
    return _run_from_row(row)


def _find_run(
    conn: sqlite3.Connection, namespace: str, workflow_id: str, run_id: str | None
) -> RunRecord:
    if run_id:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM executions WHERE run_id = ? AND namespace = ? "
            "AND workflow_id = ?",
            (run_id, namespace, workflow_id),
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM executions WHERE namespace = ? AND workflow_id = ? "
            "AND is_current = 1",
            (namespace, workflow_id),
        ).fetchone()
    if row is None:
        raise WorkflowNotFoundError(workflow_id, run_id)
    return _run_from_row(row)


@dataclass
class _Claims:
    """Work to hand to the calling worker inside the same transaction (no later poll)."""

    worker_id: str
    activity_queue: str | None = None
    max_activities: int = 0
    workflow_task: bool = False
    cached_upto: Callable[[str], int] | None = None
    activity_leases: list[ActivityTaskLease] = field(default_factory=list)
    workflow_lease: WorkflowTaskLease | None = None


def _apply(
    tx: _Tx,
    run: RunRecord,
    t: Transition,
    claims: _Claims | None = None,
    sticky_worker: str | None = None,
) -> int:
    """Persist a transition; returns the run's new next_event_id.

    Invariant: one UPDATE of the executions row, guarded by the next_event_id read in the same
    transaction, accompanies every append (optimistic concurrency for multi-writer stores).
    """
    conn, now = tx.conn, tx.now
    events = list(t.append)
    flushed = False
    if t.flush_buffer and run.has_buffered:
        rows = conn.execute(
            "SELECT type, attrs FROM buffered_events WHERE run_id = ? ORDER BY seq", (run.run_id,)
        ).fetchall()
        conn.execute("DELETE FROM buffered_events WHERE run_id = ?", (run.run_id,))
        events.extend(NewEvent(_EVENT_TYPES[r[0]], loads(r[1])) for r in rows)
        flushed = True
    events.extend(t.append_after)
    next_id = run.next_event_id
    if events:
        conn.executemany(
            "INSERT INTO history (run_id, event_id, type, time, attrs) VALUES (?, ?, ?, ?, ?)",
            [
                (run.run_id, next_id + i, e.type.value, now, dumps(e.attrs))
                for i, e in enumerate(events)
            ],
        )
    new_next = next_id + len(events)
    wt_state = t.wt_state if t.wt_state is not None else run.wt_state
    if t.close is not None:
        wt_state = WorkflowTaskState.IDLE
    visible = t.wt_visible_at if t.wt_visible_at is not None else now
    claim_wt = (
        claims is not None
        and claims.workflow_task
        and t.close is None
        and t.wt_state == WorkflowTaskState.SCHEDULED
        and visible <= now
    )
    if claim_wt:
        wt_state = WorkflowTaskState.STARTED
    sets = ["next_event_id = ?", "wt_state = ?"]
    params: list[Any] = [new_next, int(wt_state)]
    if t.wt_attempt is not None:
        sets.append("wt_attempt = ?")
        params.append(t.wt_attempt)
        if t.wt_failure is None and t.wt_attempt == 1:
            sets.append("wt_failure = NULL")
    if t.wt_failure is not None:
        sets.append("wt_failure = ?")
        params.append(dumps(t.wt_failure))
    if sticky_worker is not None:
        sets.append("sticky_worker = ?")
        params.append(sticky_worker)
        run.sticky_worker = sticky_worker
    if t.buffer and not run.has_buffered:
        sets.append("buffered = 1")
        run.has_buffered = True
    elif flushed and not t.buffer:
        sets.append("buffered = 0")
        run.has_buffered = False
    if t.close is not None:
        sets += ["status = ?", "close_time = ?", "result = ?", "failure = ?", "buffered = 0"]
        params += [
            t.close.value,
            now,
            dumps(t.result),
            dumps(t.failure) if t.failure is not None else None,
        ]
    cur = conn.execute(
        f"UPDATE executions SET {', '.join(sets)} WHERE run_id = ? AND next_event_id = ?",
        (*params, run.run_id, next_id),
    )
    if cur.rowcount != 1:
        raise ConcurrencyConflictError(run.run_id, next_id)
    run.next_event_id = new_next
    run.wt_state = wt_state
    if t.buffer:
        conn.executemany(
            "INSERT INTO buffered_events (run_id, type, attrs) VALUES (?, ?, ?)",
            [(run.run_id, e.type.value, dumps(e.attrs)) for e in t.buffer],
        )
    if t.close is not None:
        run.status = t.close
        conn.execute("DELETE FROM tasks WHERE run_id = ?", (run.run_id,))
        conn.execute("DELETE FROM timers WHERE run_id = ?", (run.run_id,))
        if run.has_buffered:
            conn.execute("DELETE FROM buffered_events WHERE run_id = ?", (run.run_id,))
            run.has_buffered = False
        tx.notes.add(("closed", run.run_id))
        tx.notes.add(("closed", run.namespace, run.workflow_id))
        return new_next
    if t.wt_state == WorkflowTaskState.SCHEDULED:
        _schedule_workflow_task(tx, run, t, visible, claims if claim_wt else None)
    elif t.wt_state == WorkflowTaskState.IDLE:
        conn.execute("DELETE FROM tasks WHERE run_id = ? AND kind = 'workflow'", (run.run_id,))
    if t.schedule_activities:
        _schedule_activities(tx, run, t.schedule_activities, claims)
    if t.delete_activities:
        conn.executemany(
            "DELETE FROM tasks WHERE run_id = ? AND kind = 'activity' AND seq = ?",
            [(run.run_id, s) for s in t.delete_activities],
        )
    if t.retry_activity is not None:
        r = t.retry_activity
        conn.execute(
            "UPDATE tasks SET attempt = ?, visible_at = ?, last_failure = ?, lease_id = NULL, "
            "lease_owner = NULL, lease_expires = NULL, started_time = NULL WHERE task_id = ?",
            (r.attempt, r.visible_at, dumps(r.last_failure), r.task_id),
        )
        tx.notes.add("timer")  # pollers recompute their next wake-up
    if t.start_timers:
        conn.executemany(
            "INSERT INTO timers (run_id, seq, fire_at) VALUES (?, ?, ?)",
            [(run.run_id, s, at) for s, at in t.start_timers],
        )
        tx.notes.add("timer")
    if t.cancel_timers:
        conn.executemany(
            "DELETE FROM timers WHERE run_id = ? AND seq = ?",
            [(run.run_id, s) for s in t.cancel_timers],
        )
    if t.delete_timer is not None:
        conn.execute(
            "DELETE FROM timers WHERE run_id = ? AND seq = ?", (run.run_id, t.delete_timer)
        )
    return new_next


def _schedule_workflow_task(
    tx: _Tx, run: RunRecord, t: Transition, visible: float, claims: _Claims | None
) -> None:
    """Create (or reset) the run's workflow task; leased at once to ``claims`` if given."""
    attempt = t.wt_attempt if t.wt_attempt is not None else run.wt_attempt
    sticky = run.sticky_worker
    lease_id = owner = None
    expires = None
    if claims is not None:
        lease_id, owner, expires = _new_id(), claims.worker_id, tx.now + WORKFLOW_TASK_LEASE
    cur = tx.conn.execute(
        "INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, attempt, "
        "sticky_worker, sticky_until, lease_id, lease_owner, lease_expires) "
        "VALUES ('workflow', ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (run_id, kind, seq) DO UPDATE SET visible_at = excluded.visible_at, "
        "attempt = excluded.attempt, lease_id = excluded.lease_id, "
        "lease_owner = excluded.lease_owner, lease_expires = excluded.lease_expires, "
        "sticky_worker = excluded.sticky_worker, sticky_until = excluded.sticky_until "
        "RETURNING task_id",
        (
            run.namespace,
            run.task_queue,
            run.run_id,
            visible,
            attempt,
            sticky,
            visible + STICKY_TIMEOUT if sticky else None,
            lease_id,
            owner,
            expires,
        ),
    )
    task_id = cur.fetchone()[0]
    if claims is not None and lease_id is not None:
        claims.workflow_lease = _workflow_lease(
            tx, run, task_id, lease_id, attempt, claims.cached_upto
        )
    else:
        tx.notes.add(("workflow", run.namespace, run.task_queue))


def _schedule_activities(
    tx: _Tx, run: RunRecord, specs: list[ActivitySpec], claims: _Claims | None
) -> None:
    """Create activity tasks; up to ``claims.max_activities`` are leased to the caller at once."""
    now = tx.now
    eager = claims.max_activities if claims is not None and claims.activity_queue else 0
    queues = set()
    for a in specs:
        claim = (
            claims
            if eager > 0 and claims is not None and a.task_queue == claims.activity_queue
            else None
        )
        lease_id = owner = None
        expires = started = None
        if claim is not None:
            eager -= 1
            lease_id, owner, started = _new_id(), claim.worker_id, now
            expires = now + a.start_to_close_timeout
            if a.schedule_to_close_timeout:
                expires = min(expires, now + a.schedule_to_close_timeout)
        cur = tx.conn.execute(
            "INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, "
            "attempt, activity_type, args, retry_policy, start_to_close_timeout, "
            "schedule_to_close_timeout, heartbeat_timeout, scheduled_time, lease_id, "
            "lease_owner, lease_expires, started_time) "
            "VALUES ('activity', ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.namespace,
                a.task_queue,
                run.run_id,
                a.seq,
                now,
                a.activity_type,
                dumps(a.args),
                dumps(a.retry_policy),
                a.start_to_close_timeout,
                a.schedule_to_close_timeout,
                a.heartbeat_timeout,
                now,
                lease_id,
                owner,
                expires,
                started,
            ),
        )
        if claim is None or lease_id is None:
            queues.add(a.task_queue)
            continue
        assert cur.lastrowid is not None
        claim.activity_leases.append(
            ActivityTaskLease(
                task_id=cur.lastrowid,
                lease_id=lease_id,
                namespace=run.namespace,
                workflow_id=run.workflow_id,
                run_id=run.run_id,
                workflow_type=run.workflow_type,
                seq=a.seq,
                activity_type=a.activity_type,
                task_queue=a.task_queue,
                args=a.args,
                attempt=1,
                scheduled_time=now,
                started_time=now,
                start_to_close_timeout=a.start_to_close_timeout,
                heartbeat_timeout=a.heartbeat_timeout,
                heartbeat_details=None,
                retry_policy=a.retry_policy,
            )
        )
    for q in queues:
        tx.notes.add(("activity", run.namespace, q))


def _op_start_workflow(tx: _Tx, req: StartRequest) -> StartResult:
    conn, now = tx.conn, tx.now
    if req.request_id:
        row = conn.execute(
            "SELECT run_id FROM requests WHERE namespace = ? AND request_id = ?",
            (req.namespace, req.request_id),
        ).fetchone()
        if row is not None:
            return StartResult(run_id=row[0], started=False)
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM executions WHERE namespace = ? AND workflow_id = ? "
        "AND is_current = 1",
        (req.namespace, req.workflow_id),
    ).fetchone()
    current = _run_from_row(row) if row else None
    decision = start_rules.decide_start(req, current)
    if decision == StartDecision.USE_EXISTING:
        assert current is not None
        return StartResult(run_id=current.run_id, started=False)
    if current is not None:
        if decision == StartDecision.TERMINATE_AND_START:
            _apply(tx, current, request_rules.terminate(current, "terminated by a new start", now))
        conn.execute("UPDATE executions SET is_current = 0 WHERE run_id = ?", (current.run_id,))
    run_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue, "
        "status, is_current, start_time, next_event_id, wt_state, args, memo) "
        "VALUES (?, ?, ?, ?, ?, 'Running', 1, ?, 1, 0, ?, ?)",
        (
            run_id,
            req.namespace,
            req.workflow_id,
            req.workflow_type,
            req.task_queue,
            now,
            dumps(req.args),
            dumps(req.memo),
        ),
    )
    run = RunRecord(
        namespace=req.namespace,
        workflow_id=req.workflow_id,
        run_id=run_id,
        workflow_type=req.workflow_type,
        task_queue=req.task_queue,
        status=RunStatus.RUNNING,
        next_event_id=1,
        wt_state=WorkflowTaskState.IDLE,
    )
    _apply(tx, run, start_rules.start_workflow(req, run_id, now))
    if req.request_id:
        conn.execute(
            "INSERT INTO requests (namespace, request_id, run_id, created) VALUES (?, ?, ?, ?)",
            (req.namespace, req.request_id, run_id, now),
        )
    return StartResult(run_id=run_id, started=True)


def _op_signal(
    tx: _Tx,
    namespace: str,
    workflow_id: str,
    run_id: str | None,
    name: str,
    args: list[Any],
    request_id: str | None,
) -> None:
    conn = tx.conn
    if request_id:
        seen = conn.execute(
            "SELECT 1 FROM requests WHERE namespace = ? AND request_id = ?",
            (namespace, request_id),
        ).fetchone()
        if seen:
            return
    run = _find_run(conn, namespace, workflow_id, run_id)
    _apply(tx, run, request_rules.signal_workflow(run, name, args, tx.now))
    if request_id:
        conn.execute(
            "INSERT INTO requests (namespace, request_id, run_id, created) VALUES (?, ?, ?, ?)",
            (namespace, request_id, run.run_id, tx.now),
        )


def _op_request(
    tx: _Tx,
    rule: Callable[[RunRecord, str, float], Transition],
    namespace: str,
    workflow_id: str,
    run_id: str | None,
    reason: str,
) -> None:
    run = _find_run(tx.conn, namespace, workflow_id, run_id)
    _apply(tx, run, rule(run, reason, tx.now))


def _events_from_rows(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    return [Event(r[0], _EVENT_TYPES[r[1]], r[2], loads(r[3])) for r in rows]


def _op_get_history(tx: _Tx, run_id: str, after: int) -> list[Event]:
    rows = tx.conn.execute(
        "SELECT event_id, type, time, attrs FROM history WHERE run_id = ? AND event_id > ? "
        "ORDER BY event_id",
        (run_id, after),
    ).fetchall()
    return _events_from_rows(rows)


def _workflow_lease(
    tx: _Tx,
    run: RunRecord,
    task_id: int,
    lease_id: str,
    attempt: int,
    cached_upto: Callable[[str], int] | None,
) -> WorkflowTaskLease:
    after = cached_upto(run.run_id) if cached_upto is not None else 0
    if after >= run.next_event_id:
        after = 0
    return WorkflowTaskLease(
        task_id=task_id,
        lease_id=lease_id,
        namespace=run.namespace,
        workflow_id=run.workflow_id,
        run_id=run.run_id,
        workflow_type=run.workflow_type,
        task_queue=run.task_queue,
        attempt=attempt,
        started_time=tx.now,
        next_event_id=run.next_event_id,
        history=_op_get_history(tx, run.run_id, after),
        history_after=after,
    )


def _op_poll_workflow_tasks(
    tx: _Tx,
    namespace: str,
    task_queue: str,
    worker_id: str,
    max_tasks: int,
    cached_upto: Callable[[str], int] | None,
) -> list[WorkflowTaskLease]:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        f"SELECT t.task_id, t.attempt, {_RUN_COLUMNS_E} FROM tasks t "
        "JOIN executions e ON e.run_id = t.run_id WHERE t.kind = 'workflow' "
        "AND t.namespace = ? AND t.task_queue = ? AND t.lease_id IS NULL AND t.visible_at <= ? "
        "AND (t.sticky_worker IS NULL OR t.sticky_worker = ? OR t.sticky_until <= ?) "
        "ORDER BY t.visible_at LIMIT ?",
        (namespace, task_queue, now, worker_id, now, max_tasks),
    ).fetchall()
    leases = []
    for row in rows:
        task_id, attempt, run = row[0], row[1], _run_from_row(row[2:])
        lease_id = _new_id()
        conn.execute(
            "UPDATE tasks SET lease_id = ?, lease_owner = ?, lease_expires = ? WHERE task_id = ?",
            (lease_id, worker_id, now + WORKFLOW_TASK_LEASE, task_id),
        )
        conn.execute("UPDATE executions SET wt_state = 2 WHERE run_id = ?", (run.run_id,))
        leases.append(_workflow_lease(tx, run, task_id, lease_id, attempt, cached_upto))
    return leases


def _leased_run(conn: sqlite3.Connection, lease: WorkflowTaskLease) -> RunRecord:
    """The run of a workflow task, if ``lease`` still holds the task (fencing)."""
    row = conn.execute(
        f"SELECT t.lease_id, {_RUN_COLUMNS_E} FROM tasks t JOIN executions e "
        "ON e.run_id = t.run_id WHERE t.task_id = ?",
        (lease.task_id,),
    ).fetchone()
    if row is None or row[0] != lease.lease_id:
        raise LeaseLostError(f"workflow task of run {lease.run_id}")
    return _run_from_row(row[1:])


def _op_complete_workflow_task(
    tx: _Tx, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
) -> CompletionResult:
    run = _leased_run(tx.conn, lease)
    first = run.next_event_id
    t = wt_rules.complete_workflow_task(
        run,
        completion.commands,
        has_buffered=run.has_buffered,
        workflow_time=completion.workflow_time,
        now=tx.now,
        identity=completion.identity,
        build_id=completion.build_id,
    )
    claims = _Claims(
        worker_id=completion.worker_id,
        activity_queue=completion.eager_activity_queue,
        max_activities=completion.eager_activities,
    )
    sticky = completion.worker_id if completion.worker_id and t.rejected is None else None
    _apply(tx, run, t, claims, sticky_worker=sticky)
    if t.rejected is not None:
        return CompletionResult(accepted=False, reason=t.rejected)
    return CompletionResult(
        accepted=True,
        last_event_id=first + len(t.append) - 1,
        activity_leases=claims.activity_leases,
    )


def _op_fail_workflow_task(tx: _Tx, lease: WorkflowTaskLease, failure: dict[str, Any]) -> None:
    run = _leased_run(tx.conn, lease)
    _apply(tx, run, wt_rules.fail_workflow_task(run, failure, tx.now))
    tx.notes.add("timer")


_ACTIVITY_COLUMNS = (
    "t.task_id, t.run_id, t.seq, t.activity_type, t.attempt, t.retry_policy, t.scheduled_time, "
    "t.start_to_close_timeout, t.schedule_to_close_timeout, t.lease_id"
)


def _activity_record(row: tuple[Any, ...]) -> ActivityTaskRecord:
    return ActivityTaskRecord(
        task_id=row[0],
        run_id=row[1],
        seq=row[2],
        activity_type=row[3],
        attempt=row[4],
        retry_policy=loads(row[5]),
        scheduled_time=row[6],
        start_to_close_timeout=row[7],
        schedule_to_close_timeout=row[8],
        lease_id=row[9],
    )


def _op_poll_activity_tasks(
    tx: _Tx, namespace: str, task_queue: str, worker_id: str, max_tasks: int
) -> list[ActivityTaskLease]:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        "SELECT t.task_id, t.run_id, t.seq, t.activity_type, t.args, t.attempt, "
        "t.scheduled_time, t.start_to_close_timeout, t.heartbeat_timeout, t.heartbeat_details, "
        "t.retry_policy, e.namespace, e.workflow_id, e.workflow_type, t.schedule_to_close_timeout "
        "FROM tasks t JOIN executions e ON e.run_id = t.run_id WHERE t.kind = 'activity' "
        "AND t.namespace = ? AND t.task_queue = ? AND t.lease_id IS NULL AND t.visible_at <= ? "
        "ORDER BY t.visible_at LIMIT ?",
        (namespace, task_queue, now, max_tasks),
    ).fetchall()
    leases = []
    for row in rows:
        start_to_close = row[7]
        expires = now + start_to_close
        if row[14]:
            expires = min(expires, row[6] + row[14])
        lease_id = _new_id()
        conn.execute(
            "UPDATE tasks SET lease_id = ?, lease_owner = ?, lease_expires = ?, started_time = ? "
            "WHERE task_id = ?",
            (lease_id, worker_id, expires, now, row[0]),
        )
        leases.append(
            ActivityTaskLease(
                task_id=row[0],
                lease_id=lease_id,
                namespace=row[11],
                workflow_id=row[12],
                run_id=row[1],
                workflow_type=row[13],
                seq=row[2],
                activity_type=row[3],
                task_queue=task_queue,
                args=loads(row[4]),
                attempt=row[5],
                scheduled_time=row[6],
                started_time=now,
                start_to_close_timeout=start_to_close,
                heartbeat_timeout=row[8],
                heartbeat_details=loads(row[9]),
                retry_policy=loads(row[10]),
            )
        )
    return leases


def _op_activity_outcome(
    tx: _Tx,
    lease: ActivityTaskLease,
    ok: bool,
    value: Any,
    eager_worker_id: str | None,
    cached_upto: Callable[[str], int] | None,
) -> WorkflowTaskLease | None:
    conn, now = tx.conn, tx.now
    row = conn.execute(
        f"SELECT {_ACTIVITY_COLUMNS}, {_RUN_COLUMNS_E} FROM tasks t "
        "JOIN executions e ON e.run_id = t.run_id WHERE t.task_id = ?",
        (lease.task_id,),
    ).fetchone()
    if row is None or row[9] != lease.lease_id:
        raise LeaseLostError(
            f"activity {lease.activity_type!r} (seq {lease.seq}) of run {lease.run_id}"
        )
    task, run = _activity_record(row[:10]), _run_from_row(row[10:])
    if ok:
        t = activity_rules.complete_activity(run, task, value, now)
    else:
        t = activity_rules.fail_activity(run, task, value, now)
    # The worker has this run cached: hand it the next workflow task in this transaction.
    claims = None
    if eager_worker_id is not None:
        claims = _Claims(worker_id=eager_worker_id, workflow_task=True, cached_upto=cached_upto)
    _apply(tx, run, t, claims)
    return claims.workflow_lease if claims is not None else None


def _op_heartbeat_activity(tx: _Tx, lease: ActivityTaskLease, details: Any) -> bool:
    cur = tx.conn.execute(
        "UPDATE tasks SET heartbeat_details = ? WHERE task_id = ? AND lease_id = ?",
        (dumps(details), lease.task_id, lease.lease_id),
    )
    return cur.rowcount == 1


def _op_fire_due_timers(tx: _Tx, limit: int) -> int:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        "SELECT run_id, seq FROM timers WHERE fire_at <= ? ORDER BY fire_at LIMIT ?",
        (now, limit),
    ).fetchall()
    for run_id, seq in rows:
        run = _load_run(conn, run_id)
        _apply(tx, run, timer_rules.fire_timer(run, seq, now))
    # Activity retries whose backoff ended are due work too: wake the activity pollers.
    due = conn.execute(
        "SELECT DISTINCT namespace, task_queue FROM tasks WHERE kind = 'activity' "
        "AND lease_id IS NULL AND visible_at <= ? AND attempt > 1",
        (now,),
    ).fetchall()
    for ns, q in due:
        tx.notes.add(("activity", ns, q))
    wdue = conn.execute(
        "SELECT DISTINCT namespace, task_queue FROM tasks WHERE kind = 'workflow' "
        "AND lease_id IS NULL AND visible_at <= ? AND (attempt > 1 OR sticky_until IS NOT NULL)",
        (now,),
    ).fetchall()
    for ns, q in wdue:
        tx.notes.add(("workflow", ns, q))
    return len(rows)


def _op_next_timer_time(tx: _Tx) -> float | None:
    """The earliest moment something becomes due: a timer, a retry, a sticky timeout."""
    now = tx.now
    t1 = tx.conn.execute("SELECT MIN(fire_at) FROM timers").fetchone()[0]
    t2 = tx.conn.execute(
        "SELECT MIN(visible_at) FROM tasks WHERE lease_id IS NULL AND visible_at > ?", (now,)
    ).fetchone()[0]
    t3 = tx.conn.execute(
        "SELECT MIN(sticky_until) FROM tasks WHERE lease_id IS NULL AND sticky_until > ?", (now,)
    ).fetchone()[0]
    candidates = [t for t in (t1, t2, t3) if t is not None]
    return min(candidates) if candidates else None


def _op_submit_query(
    tx: _Tx, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
) -> int:
    run = _find_run(tx.conn, namespace, workflow_id, run_id)
    cur = tx.conn.execute(
        "INSERT INTO queries (namespace, task_queue, run_id, workflow_type, name, args, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (namespace, run.task_queue, run.run_id, run.workflow_type, name, dumps(args), tx.now),
    )
    tx.notes.add(("query", namespace, run.task_queue))
    assert cur.lastrowid is not None
    return cur.lastrowid


def _op_poll_queries(
    tx: _Tx, namespace: str, task_queue: str, worker_id: str, max_tasks: int
) -> list[QueryTask]:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        "SELECT query_id, run_id, workflow_type, name, args FROM queries WHERE namespace = ? "
        "AND task_queue = ? AND done = 0 AND (lease_id IS NULL OR lease_expires <= ?) "
        "ORDER BY query_id LIMIT ?",
        (namespace, task_queue, now, max_tasks),
    ).fetchall()
    out = []
    for qid, run_id, wtype, name, args in rows:
        lease_id = _new_id()
        conn.execute(
            "UPDATE queries SET lease_id = ?, lease_owner = ?, lease_expires = ? "
            "WHERE query_id = ?",
            (lease_id, worker_id, now + QUERY_LEASE, qid),
        )
        out.append(QueryTask(qid, lease_id, run_id, wtype, name, loads(args)))
    return out


def _op_answer_query(tx: _Tx, query_id: int, lease_id: str, result: Any, error: str | None) -> None:
    tx.conn.execute(
        "UPDATE queries SET done = 1, result = ?, error = ? WHERE query_id = ? AND lease_id = ?",
        (dumps(result), error, query_id, lease_id),
    )
    tx.notes.add(("query_done", query_id))


def _op_take_query_outcome(tx: _Tx, query_id: int) -> QueryOutcome:
    row = tx.conn.execute(
        "SELECT done, result, error FROM queries WHERE query_id = ?", (query_id,)
    ).fetchone()
    if row is None:
        return QueryOutcome(done=True, error="query was dropped")
    if not row[0]:
        return QueryOutcome(done=False)
    tx.conn.execute("DELETE FROM queries WHERE query_id = ?", (query_id,))
    return QueryOutcome(done=True, result=loads(row[1]), error=row[2])


def _op_register_worker(
    tx: _Tx,
    worker_id: str,
    namespace: str,
    task_queue: str,
    identity: str,
    workflow_types: dict[str, dict[str, list[str]]],
) -> None:
    conn, now = tx.conn, tx.now
    conn.execute(
        "INSERT OR REPLACE INTO workers (worker_id, namespace, task_queue, identity, started_at, "
        "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
        (worker_id, namespace, task_queue, identity, now, now),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO workflow_types (namespace, task_queue, workflow_type, handlers, "
        "updated_at) VALUES (?, ?, ?, ?, ?)",
        [(namespace, task_queue, name, dumps(h), now) for name, h in workflow_types.items()],
    )


def _op_heartbeat_worker(tx: _Tx, worker_id: str) -> None:
    tx.conn.execute("UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (tx.now, worker_id))


def _release_worker(tx: _Tx, worker_id: str, result: ReapResult) -> None:
    """Hand every lease of ``worker_id`` to others at once and forget its sticky runs."""
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        f"SELECT t.kind, {_ACTIVITY_COLUMNS} FROM tasks t WHERE t.lease_owner = ? "
        "AND t.lease_id IS NOT NULL",
        (worker_id,),
    ).fetchall()
    for row in rows:
        kind, rest = row[0], row[1:]
        run = _load_run(conn, rest[1])
        if kind == "workflow":
            _apply(tx, run, wt_rules.release_workflow_task(run, now))
            result.released_workflow_tasks += 1
        else:
            _apply(tx, run, activity_rules.worker_lost(run, _activity_record(rest), now))
            tx.notes.add(("activity", run.namespace, run.task_queue))
            result.released_activities += 1
    conn.execute("UPDATE executions SET sticky_worker = NULL WHERE sticky_worker = ?", (worker_id,))
    conn.execute(
        "UPDATE tasks SET sticky_worker = NULL, sticky_until = NULL WHERE sticky_worker = ?",
        (worker_id,),
    )
    conn.execute(
        "UPDATE queries SET lease_id = NULL, lease_owner = NULL WHERE lease_owner = ? AND done = 0",
        (worker_id,),
    )
    conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))


def _op_unregister_worker(tx: _Tx, worker_id: str) -> None:
    _release_worker(tx, worker_id, ReapResult())
    tx.notes.add("timer")


def _op_reap(tx: _Tx, liveness_timeout: float) -> ReapResult:
    conn, now = tx.conn, tx.now
    result = ReapResult()
    dead = [
        r[0]
        for r in conn.execute(
            "SELECT worker_id FROM workers WHERE heartbeat_at < ?", (now - liveness_timeout,)
        ).fetchall()
    ]
    for worker_id in dead:
        _release_worker(tx, worker_id, result)
        result.dead_workers.append(worker_id)
    # Leases held by workers that never registered or that outlived their timeout.
    expired = conn.execute(
        f"SELECT t.kind, {_ACTIVITY_COLUMNS} FROM tasks t WHERE t.lease_id IS NOT NULL "
        "AND t.lease_expires <= ?",
        (now,),
    ).fetchall()
    for row in expired:
        kind, rest = row[0], row[1:]
        run = _load_run(conn, rest[1])
        if kind == "workflow":
            _apply(tx, run, wt_rules.release_workflow_task(run, now))
            result.released_workflow_tasks += 1
        else:
            _apply(tx, run, activity_rules.expire_activity(run, _activity_record(rest), now))
            tx.notes.add(("activity", run.namespace, run.task_queue))
            result.released_activities += 1
    if dead or expired:
        tx.notes.add("timer")
    return result


def _op_type_handlers(tx: _Tx, namespace: str, workflow_type: str) -> dict[str, list[str]] | None:
    row = tx.conn.execute(
        "SELECT handlers FROM workflow_types WHERE namespace = ? AND workflow_type = ? "
        "ORDER BY updated_at DESC LIMIT 1",
        (namespace, workflow_type),
    ).fetchone()
    return loads(row[0]) if row else None


def _op_known_types(tx: _Tx, namespace: str, task_queue: str) -> list[str] | None:
    rows = tx.conn.execute(
        "SELECT workflow_type FROM workflow_types WHERE namespace = ? AND task_queue = ?",
        (namespace, task_queue),
    ).fetchall()
    return [r[0] for r in rows] if rows else None


_INFO_COLUMNS = (
    "namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time, close_time, "
    "next_event_id, args, result, failure, memo, wt_attempt, wt_failure"
)


def _info_from_row(row: tuple[Any, ...]) -> ExecutionInfo:
    return ExecutionInfo(
        namespace=row[0],
        workflow_id=row[1],
        run_id=row[2],
        workflow_type=row[3],
        task_queue=row[4],
        status=RunStatus(row[5]),
        start_time=row[6],
        close_time=row[7],
        history_length=row[8] - 1,
        args=loads(row[9]),
        result=loads(row[10]),
        failure=loads(row[11]),
        memo=loads(row[12]) or {},
        workflow_task_attempt=row[13],
        workflow_task_failure=loads(row[14]),
    )


def _op_resolve_run(tx: _Tx, namespace: str, workflow_id: str, run_id: str | None) -> str:
    return _find_run(tx.conn, namespace, workflow_id, run_id).run_id


def _op_describe(tx: _Tx, namespace: str, workflow_id: str, run_id: str | None) -> ExecutionInfo:
    conn, now = tx.conn, tx.now
    run = _find_run(conn, namespace, workflow_id, run_id)
    row = conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM executions WHERE run_id = ?", (run.run_id,)
    ).fetchone()
    info = _info_from_row(row)
    for r in conn.execute(
        "SELECT seq, activity_type, attempt, lease_id, scheduled_time, visible_at, last_failure, "
        "heartbeat_details, lease_owner FROM tasks WHERE run_id = ? AND kind = 'activity' "
        "ORDER BY seq",
        (run.run_id,),
    ).fetchall():
        info.pending_activities.append(
            PendingActivityInfo(
                seq=r[0],
                activity_type=r[1],
                attempt=r[2],
                state="started" if r[3] else "scheduled",
                scheduled_time=r[4],
                next_attempt_time=r[5] if not r[3] and r[5] > now else None,
                last_failure=loads(r[6]),
                heartbeat_details=loads(r[7]),
                worker=r[8] if r[3] else None,
            )
        )
    info.pending_timers = [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT seq, fire_at FROM timers WHERE run_id = ? ORDER BY fire_at", (run.run_id,)
        ).fetchall()
    ]
    return info


def _op_list(
    tx: _Tx,
    namespace: str,
    workflow_type: str | None,
    status: RunStatus | None,
    workflow_id: str | None,
    limit: int,
) -> list[ExecutionInfo]:
    where = ["namespace = ?"]
    params: list[Any] = [namespace]
    if workflow_type:
        where.append("workflow_type = ?")
        params.append(workflow_type)
    if status:
        where.append("status = ?")
        params.append(RunStatus(status).value)
    if workflow_id:
        where.append("workflow_id = ?")
        params.append(workflow_id)
    rows = tx.conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM executions WHERE {' AND '.join(where)} "
        "ORDER BY start_time DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_info_from_row(r) for r in rows]


__all__ = ["SQLiteStore", "SchemaError", "sqlite_path"]
