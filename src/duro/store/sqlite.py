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
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Sized
from pathlib import Path
from typing import Any, TypeVar

from duro.errors import DuroError, StoreError
from duro.store import migrate
from duro.store.facade import SqlStore
from duro.store.notify import Notifier
from duro.store.tx import Tx

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
    # LEAST as PostgreSQL has it (NULLs ignored), so operations' SQL is the same for both.
    conn.create_function("LEAST", -1, _least, deterministic=True)
    return conn


def _least(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _is_busy(e: sqlite3.Error) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def _execute_batch(
    store: SQLiteStore, conn: sqlite3.Connection, batch: list[_Item], facts: _Facts
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
        shared = facts.begin(conn)
        for fn, args, fut, _ in batch:
            tx = Tx(conn, now, shared=shared)
            outcomes.append((fut, fn(tx, *args), None))
            notes |= tx.notes
        conn.execute("COMMIT")
        facts.committed(shared)
        return outcomes, notes
    except Exception as e:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error) and _is_busy(e):
            return None
        if len(batch) == 1:
            return [(batch[0][2], None, _as_store_error(e))], set()
    return _execute_isolated(store, conn, batch, readonly, facts)


def _execute_isolated(
    store: SQLiteStore,
    conn: sqlite3.Connection,
    batch: list[_Item],
    readonly: bool,
    facts: _Facts,
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
        shared = facts.begin(conn)
        for fn, args, fut, _ in batch:
            tx = Tx(conn, now, shared=shared)
            conn.execute("SAVEPOINT op")
            try:
                result = fn(tx, *args)
            except Exception as e:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                shared.clear()  # what the rolled-back operation learned may not hold
                outcomes.append((fut, None, _as_store_error(e)))
            else:
                conn.execute("RELEASE op")
                outcomes.append((fut, result, None))
                notes |= tx.notes
        conn.execute("COMMIT")
        facts.committed(shared)
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


class _Facts:
    """Facts operations read (``Tx.shared``: "this namespace has no flow limits"), kept from one
    committed transaction to the next while no other process writes to the database.

    Each transaction starts from a copy and hands it back only once it has committed, so what a
    rolled-back transaction read is dropped. Operations that change a fact drop it themselves
    (``set_flow_limit``). Another process's commits are seen at the start of the next
    transaction, inside it (``PRAGMA data_version``), and drop everything; that check also wakes
    this process's waiters, since those commits may have made work ready.
    """

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection) -> None:
        self.store = store
        self.known: dict[Hashable, Any] = {}
        self.data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])

    def begin(self, conn: sqlite3.Connection) -> dict[Hashable, Any]:
        """The facts for a transaction that has just begun on ``conn``."""
        self.check_foreign_commits(conn)
        return dict(self.known)

    def committed(self, facts: dict[Hashable, Any]) -> None:
        self.known = facts

    def check_foreign_commits(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self.data_version:
            self.data_version = version
            self.known = {}
            self.store._notifier.notify_all()


_MAX_DEFERRALS = 8
"""Loop turns a commit waits at most for other ready callbacks (``_LoopRunner._flush``). In
the compare fan-out (300 x 5 steps, starts one after another) this took batches from 1.75 to
3.4 operations; beyond 8 they grew no more."""
_MAX_BATCH = 256
"""Operations that make a batch big enough to commit without waiting longer."""


class _LoopRunner:
    """Runs the store's operations on the event loop thread: those queued while the loop is
    busy (a few turns at most) share one transaction."""

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection, watch_interval: float):
        self.store = store
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.ready: Sized | None = getattr(self.loop, "_ready", None)
        """asyncio's queue of ready callbacks (another loop has none: it commits at once)."""
        self.pending: list[_Item] = []
        self.scheduled = False
        self.deferred = 0
        self.busy_retries = 0
        self.watch_interval = watch_interval
        self.closed = False
        self.facts = _Facts(store, conn)
        self._watch_handle = self.loop.call_later(watch_interval, self._watch)

    def submit(self, item: _Item) -> None:
        self.pending.append(item)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Commit the pending operations; first, while the loop has other callbacks ready
        (steps of other runs, about to submit theirs), let those run, for a few turns at most,
        so that one commit takes them all. An idle loop commits at once."""
        ready = self.ready
        if ready and self.deferred < _MAX_DEFERRALS and len(self.pending) < _MAX_BATCH:
            self.deferred += 1
            self.loop.call_soon(self._flush)
            return
        self._commit()

    def _commit(self) -> None:
        self.deferred = 0
        self.scheduled = False
        # An operation whose caller was cancelled (a poll at shutdown) is not run at all.
        batch = [item for item in self.pending if not item[2].cancelled()]
        self.pending = []
        if not batch:
            return
        try:
            done = _execute_batch(self.store, self.conn, batch, self.facts)
        except Exception as e:  # a bug outside the operations: fail the callers, never hang them
            self.store._deliver(_all_failed(batch, e), set())
            return
        if done is None:  # locked by another process: retry soon, without blocking the loop
            self.pending = batch + self.pending
            self.busy_retries += 1
            self.scheduled = True
            self.loop.call_later(min(0.001 * self.busy_retries, 0.05), self._flush)
            return
        self.busy_retries = 0
        self.store._deliver(*done)

    def _watch(self) -> None:
        """An idle store still notices other processes' commits (a busy one, at each batch)."""
        if self.closed:
            return
        if not self.scheduled:
            with contextlib.suppress(sqlite3.Error):
                self.facts.check_foreign_commits(self.conn)
        self._watch_handle = self.loop.call_later(self.watch_interval, self._watch)

    def close(self) -> None:
        self.closed = True
        self._watch_handle.cancel()
        if self.pending:
            self._commit()
        self.conn.close()


class _Checkpointer(threading.Thread):
    """Checkpoints the WAL from its own connection, off the event loop.

    SQLite's automatic checkpoint runs inside whichever COMMIT crosses the threshold, fsyncs,
    and so stalls the loop for milliseconds; it is turned off on the loop's connection and done
    here instead, every ``interval`` seconds, in PASSIVE mode (never blocks writers or readers).

    A PASSIVE checkpoint never catches up with a writer that commits without pause, and the log
    is only rewound once one has: under a long burst it grew without bound (15 GB for 100,000
    runs started back to back). So once the log passes ``max_wal_bytes`` the checkpoint is a
    TRUNCATE one: it holds writers off until the log is copied back and emptied (the loop's
    batches find the database busy and are retried a moment later).
    """

    def __init__(self, path: str, interval: float = 0.5, max_wal_bytes: int = 64 * 2**20) -> None:
        super().__init__(name="duro-sqlite-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        self.max_wal_bytes = max_wal_bytes
        self.stopping = threading.Event()

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error:
            return
        try:
            while not self.stopping.wait(self.interval):
                mode = "TRUNCATE" if self._wal_bytes() > self.max_wal_bytes else "PASSIVE"
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()


class SQLiteStore(SqlStore):
    """The embedded default store. Open with ``await SQLiteStore.open("sqlite:///duro.db")``."""

    fuses_first_task = True
    """A start and its first task in one transaction: one commit of the group instead of two,
    and no task row written only to be deleted."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        watch_interval: float = 0.005,
        max_wal_bytes: int = 64 * 2**20,
    ) -> None:
        """Configure the store; ``start()`` opens it.

        Args:
            clock: The store's clock (seconds since the epoch); injectable for tests.
            synchronous: SQLite's ``synchronous`` pragma. Default ``NORMAL`` (see module doc).
            watch_interval: How often an idle store looks for other processes' commits.
                Default 5 ms.
            max_wal_bytes: Past this size the write-ahead log is checkpointed and emptied
                even if writers must wait for it. Default 64 MiB.
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
        self._max_wal_bytes = max_wal_bytes
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
            self._checkpointer = _Checkpointer(self.path, max_wal_bytes=self._max_wal_bytes)
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
