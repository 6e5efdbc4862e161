"""The embedded store: one SQLite file, safe for several worker processes.

Concurrency model. Every operation runs on the event loop's own thread, inside one transaction
per loop turn: ``_call`` queues the operation, and a single callback later in the same turn runs
everything queued so far in one ``BEGIN IMMEDIATE`` transaction, each operation in its own
savepoint (one failing operation rolls back alone), and commits once. This is group commit
without a writer thread: an operation costs no thread hop and no GIL hand-off, which measured
faster than a dedicated writer thread (see docs/architecture.md). Other processes on the same
file are serialized by SQLite's write lock; a batch that finds the lock taken is retried a moment
later rather than blocking the loop. While idle the store polls ``PRAGMA data_version`` so that
commits made by other processes wake this process's pollers within milliseconds.

WAL checkpoints (copying the log back into the database, with an fsync) run on a background
thread with their own connection, so they never stall the loop inside a commit.

Durability: WAL with ``synchronous=NORMAL`` survives any process crash; a power loss may drop
the last transactions. Pass ``synchronous="FULL"`` to fsync every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from duro.engine import requests as request_rules
from duro.engine.start import StartRequest
from duro.errors import DuroError, StoreError
from duro.history import Event, RunStatus
from duro.store import migrate
from duro.store import sqlite_ops as ops
from duro.store.notify import Notifier
from duro.store.protocol import (
    ActivityTaskLease,
    CompletionResult,
    ExecutionInfo,
    FlowLimit,
    NamespaceSettings,
    QueryOutcome,
    QueryTask,
    ReapResult,
    ScheduleInfo,
    StartResult,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)
from duro.store.sqlite_tx import Tx, get_history
from duro.visibility import Query

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")

_Op = Callable[..., Any]
_Item = tuple[_Op, tuple[Any, ...], "asyncio.Future[Any]", bool]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")  # while migrating; the runner then sets 0
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def _is_busy(e: sqlite3.Error) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def _execute_batch(
    store: SQLiteStore, conn: sqlite3.Connection, batch: list[_Item]
) -> tuple[list[_Outcome], set[Hashable]] | None:
    """Run queued operations in one transaction and commit once (group commit).

    Fast path: all operations back to back. Operations rarely fail (a stale lease, an unknown
    id); when one does, the whole transaction is rolled back and the batch runs again with each
    operation in its own savepoint, so the failure rolls back alone. Nothing is committed
    before either path finishes, so re-running is safe.

    Returns None when another process holds the write lock, so the caller retries later.
    """
    readonly = all(ro for _, _, _, ro in batch)
    try:
        conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        if _is_busy(e):
            return None
        return _all_failed(batch, e), set()
    outcomes: list[_Outcome] = []
    notes: set[Hashable] = set()
    try:
        now = store.now()
        for fn, args, fut, _ in batch:
            tx = Tx(conn, now)
            outcomes.append((fut, fn(tx, *args), None))
            notes |= tx.notes
        conn.execute("COMMIT")
        return outcomes, notes
    except Exception as e:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error) and _is_busy(e):
            return None
        if len(batch) == 1:
            return [(batch[0][2], None, _as_store_error(e))], set()
    return _execute_isolated(store, conn, batch, readonly)


def _execute_isolated(
    store: SQLiteStore, conn: sqlite3.Connection, batch: list[_Item], readonly: bool
) -> tuple[list[_Outcome], set[Hashable]] | None:
    """The slow path: one transaction, each operation in a savepoint of its own."""
    try:
        conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        if _is_busy(e):
            return None
        return _all_failed(batch, e), set()
    outcomes: list[_Outcome] = []
    notes: set[Hashable] = set()
    try:
        now = store.now()
        for fn, args, fut, _ in batch:
            tx = Tx(conn, now)
            conn.execute("SAVEPOINT op")
            try:
                result = fn(tx, *args)
            except Exception as e:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((fut, None, _as_store_error(e)))
            else:
                conn.execute("RELEASE op")
                outcomes.append((fut, result, None))
                notes |= tx.notes
        conn.execute("COMMIT")
    except Exception as e:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error) and _is_busy(e):
            return None
        return _all_failed(batch, e), set()
    return outcomes, notes


def _as_store_error(e: Exception) -> Exception:
    """Errors duro raises on purpose pass through; anything else becomes a ``StoreError``.

    Workers and clients handle ``DuroError``s; a raw driver error (or a bug in an operation)
    must not escape as something they do not expect.
    """
    if isinstance(e, DuroError):
        return e
    err = StoreError(f"store operation failed: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err


def _all_failed(batch: list[_Item], e: BaseException) -> list[_Outcome]:
    err = StoreError(f"SQLite transaction failed: {e}")
    err.__cause__ = e
    return [(fut, None, err) for _, _, fut, _ in batch]


class _LoopRunner:
    """Runs the store's operations on the event loop thread, one transaction per loop turn."""

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
        # An operation whose caller was cancelled (a poll at shutdown) is not run at all.
        batch = [item for item in self.pending if not item[2].cancelled()]
        self.pending = []
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
        with contextlib.suppress(sqlite3.Error):
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


class _Checkpointer(threading.Thread):
    """Checkpoints the WAL from its own connection, off the event loop.

    SQLite's automatic checkpoint runs inside whichever COMMIT crosses the threshold, fsyncs,
    and so stalls the loop for milliseconds; it is turned off on the loop's connection and done
    here instead, every ``interval`` seconds, in PASSIVE mode (never blocks writers or readers).
    """

    def __init__(self, path: str, interval: float = 0.5) -> None:
        super().__init__(name="duro-sqlite-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self.stopping.wait(self.interval):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()


class SQLiteStore:
    """The embedded default store. Open with ``await SQLiteStore.open("sqlite:///duro.db")``."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        watch_interval: float = 0.005,
    ) -> None:
        """Configure the store; ``start()`` opens it.

        Args:
            clock: The store's clock (seconds since the epoch); injectable for tests.
            synchronous: SQLite's ``synchronous`` pragma. Default ``NORMAL`` (see module doc).
            watch_interval: How often an idle store looks for other processes' commits.
                Default 5 ms.
        """
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notifier = Notifier()
        self._synchronous = synchronous.upper()
        self._watch_interval = watch_interval
        self._runner: _LoopRunner | None = None
        self._checkpointer: _Checkpointer | None = None
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
        try:
            conn = await asyncio.to_thread(self._open_and_migrate)
        except StoreError:
            raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {e}") from e
        self._runner = _LoopRunner(self, conn, self._watch_interval)
        if self.path != ":memory:":
            self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.start()

    def _open_and_migrate(self) -> sqlite3.Connection:
        conn = _connect(self.path, self._synchronous)
        try:
            migrate.migrate_sqlite(conn)
            # From here on, operations never wait inside SQLite: the runner retries instead,
            # and checkpoints happen on the checkpointer's connection.
            conn.execute("PRAGMA busy_timeout = 0")
            if self.path != ":memory:":
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def now(self) -> float:
        return self._clock()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            await asyncio.to_thread(self._checkpointer.join)

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        if self._closed:
            raise StoreError("store is closed")
        runner = self._runner
        assert runner is not None, "store used before start()"
        fut: asyncio.Future[T] = runner.loop.create_future()
        runner.submit((fn, args, fut, readonly))
        return await fut

    def _deliver(self, outcomes: list[_Outcome], notes: set[Hashable]) -> None:
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
        return await self._call(ops.start_workflow, req)

    async def signal_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        request_id: str | None = None,
    ) -> None:
        await self._call(
            ops.signal_workflow, namespace, workflow_id, run_id, name, args, request_id
        )

    async def request_cancel(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            ops.external_request,
            request_rules.request_cancel,
            namespace,
            workflow_id,
            run_id,
            reason,
        )

    async def terminate(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str
    ) -> None:
        await self._call(
            ops.external_request, request_rules.terminate, namespace, workflow_id, run_id, reason
        )

    # -- workflow tasks --------------------------------------------------------------------------

    async def poll_workflow_tasks(
        self,
        namespace: str,
        task_queue: str,
        worker_id: str,
        max_tasks: int,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> list[WorkflowTaskLease]:
        return await self._call(
            ops.poll_workflow_tasks,
            namespace,
            task_queue,
            worker_id,
            max_tasks,
            cached_upto,
            build_id,
        )

    async def get_history(self, run_id: str, after_event_id: int = 0) -> list[Event]:
        return await self._call(get_history, run_id, after_event_id, readonly=True)

    async def complete_workflow_task(
        self, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
    ) -> CompletionResult:
        return await self._call(ops.complete_workflow_task, lease, completion)

    async def fail_workflow_task(self, lease: WorkflowTaskLease, failure: dict[str, Any]) -> None:
        await self._call(ops.fail_workflow_task, lease, failure)

    # -- activity tasks --------------------------------------------------------------------------

    async def poll_activity_tasks(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[ActivityTaskLease]:
        return await self._call(
            ops.poll_activity_tasks, namespace, task_queue, worker_id, max_tasks
        )

    async def complete_activity_task(
        self,
        lease: ActivityTaskLease,
        result: Any,
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None:
        return await self._call(
            ops.activity_outcome, lease, True, result, eager_worker_id, cached_upto, build_id
        )

    async def fail_activity_task(
        self,
        lease: ActivityTaskLease,
        failure: dict[str, Any],
        *,
        eager_worker_id: str | None = None,
        cached_upto: Callable[[str], int] | None = None,
        build_id: str = "",
    ) -> WorkflowTaskLease | None:
        return await self._call(
            ops.activity_outcome, lease, False, failure, eager_worker_id, cached_upto, build_id
        )

    async def detach_activity_task(self, task_id: int, lease_id: str) -> None:
        await self._call(ops.detach_activity, task_id, lease_id)

    async def complete_activity_by_token(
        self, task_id: int, lease_id: str, ok: bool, value: Any
    ) -> None:
        await self._call(ops.activity_outcome_by_token, task_id, lease_id, ok, value)

    async def heartbeat_activity_by_token(self, task_id: int, lease_id: str, details: Any) -> bool:
        return await self._call(ops.heartbeat_by_token, task_id, lease_id, details)

    async def heartbeat_activity_task(self, lease: ActivityTaskLease, details: Any) -> bool:
        return await self._call(ops.heartbeat_activity, lease, details)

    # -- timers ----------------------------------------------------------------------------------

    async def fire_due_timers(self, limit: int = 256) -> int:
        return await self._call(ops.fire_due_timers, limit)

    async def next_timer_time(self) -> float | None:
        return await self._call(ops.next_timer_time, readonly=True)

    async def pending_work(self) -> tuple[int, float | None]:
        """Work runnable now (leased or visible tasks, due timers) and the next due time.

        For the testing toolkit's clock: with nothing runnable, jumping to the next due time
        skips no work. Not part of the ``Store`` protocol.
        """
        return await self._call(ops.pending_work, readonly=True)

    # -- queries ---------------------------------------------------------------------------------

    async def submit_query(
        self, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
    ) -> int:
        return await self._call(ops.submit_query, namespace, workflow_id, run_id, name, args)

    async def submit_update(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        name: str,
        args: list[Any],
        update_id: str,
    ) -> int:
        return await self._call(
            ops.submit_update, namespace, workflow_id, run_id, name, args, update_id
        )

    async def accept_update(self, query_id: int, lease_id: str) -> None:
        await self._call(ops.accept_update, query_id, lease_id)

    async def poll_queries(
        self, namespace: str, task_queue: str, worker_id: str, max_tasks: int
    ) -> list[QueryTask]:
        return await self._call(ops.poll_queries, namespace, task_queue, worker_id, max_tasks)

    async def answer_query(
        self, query_id: int, lease_id: str, result: Any, error: str | None
    ) -> None:
        await self._call(ops.answer_query, query_id, lease_id, result, error)

    async def take_query_outcome(self, query_id: int) -> QueryOutcome:
        return await self._call(ops.take_query_outcome, query_id)

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
            ops.register_worker, worker_id, namespace, task_queue, identity, workflow_types
        )

    async def heartbeat_worker(self, worker_id: str) -> bool:
        return await self._call(ops.heartbeat_worker, worker_id)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._call(ops.unregister_worker, worker_id)

    async def reap(self, liveness_timeout: float) -> ReapResult:
        return await self._call(ops.reap_workers, liveness_timeout)

    async def workflow_type_handlers(
        self, namespace: str, workflow_type: str
    ) -> dict[str, list[str]] | None:
        return await self._call(ops.type_handlers, namespace, workflow_type, readonly=True)

    async def known_workflow_types(self, namespace: str, task_queue: str) -> list[str] | None:
        return await self._call(ops.known_types, namespace, task_queue, readonly=True)

    # -- schedules ----------------------------------------------------------------------------

    async def create_schedule(self, info: ScheduleInfo) -> None:
        await self._call(ops.create_schedule, info)

    async def describe_schedule(self, namespace: str, schedule_id: str) -> ScheduleInfo:
        return await self._call(ops.describe_schedule, namespace, schedule_id, readonly=True)

    async def list_schedules(self, namespace: str) -> list[ScheduleInfo]:
        return await self._call(ops.list_schedules, namespace, readonly=True)

    async def pause_schedule(
        self, namespace: str, schedule_id: str, paused: bool, note: str = ""
    ) -> None:
        await self._call(ops.pause_schedule, namespace, schedule_id, paused, note)

    async def delete_schedule(self, namespace: str, schedule_id: str) -> None:
        await self._call(ops.delete_schedule, namespace, schedule_id)

    async def trigger_schedule(self, namespace: str, schedule_id: str) -> str:
        return await self._call(ops.trigger_schedule, namespace, schedule_id)

    async def backfill_schedule(
        self, namespace: str, schedule_id: str, start: float, end: float
    ) -> list[str]:
        return await self._call(ops.backfill_schedule, namespace, schedule_id, start, end)

    # -- reset and fork -----------------------------------------------------------------------

    async def reset_workflow(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str | None,
        point: int | str,
        reason: str,
        reapply_signals: bool,
        fork_id: str | None,
    ) -> str:
        return await self._call(
            ops.reset_workflow,
            namespace,
            workflow_id,
            run_id,
            point,
            reason,
            reapply_signals,
            fork_id,
        )

    # -- flow limits -----------------------------------------------------------------------------

    async def set_flow_limit(self, limit: FlowLimit) -> None:
        await self._call(ops.set_flow_limit, limit)

    async def delete_flow_limit(self, namespace: str, scope: str, name: str) -> None:
        await self._call(ops.delete_flow_limit, namespace, scope, name)

    async def list_flow_limits(self, namespace: str) -> list[FlowLimit]:
        return await self._call(ops.list_flow_limits, namespace, readonly=True)

    # -- namespaces and retention ------------------------------------------------------------

    async def namespace_settings(self, namespace: str) -> NamespaceSettings:
        return await self._call(ops.namespace_settings, namespace, readonly=True)

    async def set_namespace_settings(self, settings: NamespaceSettings) -> None:
        await self._call(ops.set_namespace_settings, settings)

    async def register_search_attributes(self, namespace: str, names: list[str]) -> None:
        await self._call(ops.register_search_attributes, namespace, names)

    async def search_attribute_names(self, namespace: str) -> list[str]:
        return await self._call(ops.search_attribute_names, namespace, readonly=True)

    async def expired_runs(self, namespace: str, retention: float, limit: int) -> list[str]:
        return await self._call(ops.expired_runs, namespace, retention, limit, readonly=True)

    async def delete_runs(self, run_ids: list[str]) -> int:
        return await self._call(ops.delete_runs, run_ids)

    # -- visibility ------------------------------------------------------------------------------

    async def describe(
        self, namespace: str, workflow_id: str, run_id: str | None = None
    ) -> ExecutionInfo:
        return await self._call(ops.describe_run, namespace, workflow_id, run_id, readonly=True)

    async def count_workflows(self, namespace: str, query: Query | None = None) -> int:
        return await self._call(ops.count_workflows, namespace, query, readonly=True)

    async def list_workflows(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        status: RunStatus | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        query: Query | None = None,
    ) -> list[ExecutionInfo]:
        return await self._call(
            ops.list_workflows,
            namespace,
            workflow_type,
            status,
            workflow_id,
            limit,
            query,
            readonly=True,
        )

    async def resolve_run(self, namespace: str, workflow_id: str, run_id: str | None) -> str:
        """The run id of ``run_id`` or, if None, of the workflow id's current run."""
        return await self._call(ops.resolve_run, namespace, workflow_id, run_id, readonly=True)


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
