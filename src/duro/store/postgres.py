"""The PostgreSQL store: many worker processes on many machines share one database.

Each operation (the same ``ops.py`` functions SQLite runs) runs in a transaction of its own on
a pooled asyncpg connection, through ``bridge.run_op``; read-only ones run without one (under
READ COMMITTED each statement reads its own snapshot either way). So does a workflow step whose
writes fit one statement (``tx.Unlocked``): it reads without locks, then writes everything in
one statement that applies only if the rows it read are unchanged, two round trips instead of
five; a step that raced another writer, or needs more, runs again with locks.

Writers coordinate with row locks: an operation locks a run's row as it reads it
(``SELECT … FOR UPDATE``), and polls take tasks with ``FOR UPDATE SKIP LOCKED``, so a task goes
to one worker and a run changes one transaction at a time; the ``next_event_id`` check stays
as a second guard. Lock conflicts PostgreSQL resolves by aborting one side (deadlock, unique
index race) are retried from the start.

Wake-ups: every transaction that makes work ready sends ``NOTIFY duro`` with its topics; each
store LISTENs on one dedicated connection and wakes its local waiters, so a worker idle on
another machine takes a new task, signal or timer change within milliseconds. Waiters also
poll on their own timeouts, and a lost listener connection wakes everyone once it is back.

Connection loss (a server restart, ``pg_terminate_backend``): the failed operation is retried
on a fresh connection when it failed before its COMMIT was sent. When the connection drops
during the COMMIT itself the outcome is unknown; the operation is not blindly re-run (a signal
would be delivered twice) and the caller gets ``StoreError``. Everything a worker does is
fenced by leases, so its own retry then either applies once or is refused.

Time is the database server's clock (its offset from this machine's clock is measured at start),
so that workers on machines with skewed clocks agree on when timers and leases are due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from duro.errors import ConcurrencyConflictError, DuroError, StoreError
from duro.store import migrate, ops
from duro.store.bridge import await_, run_op
from duro.store.facade import SqlStore
from duro.store.notify import Notifier
from duro.store.sql import POSTGRES, Dialect
from duro.store.tx import NeedsLocks, Tx, Unlocked
from duro.store.urls import is_postgres_url, redact

__all__ = ["PostgresStore"]

log = logging.getLogger("duro.store.postgres")
_AnyConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
T = TypeVar("T")

_CHANNEL = "duro"
_READ_ONLY = Dialect("postgresql")
"""Reads need no row locks: an operation that changes nothing never waits for a writer."""

_RETRYABLE = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.UniqueViolationError,  # two transactions inserting the same key (e.g. a new run)
    asyncpg.LockNotAvailableError,
    ConcurrencyConflictError,
)
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
_NOT_COMMITTED = (asyncpg.PostgresError, ConcurrencyConflictError, asyncio.CancelledError)
"""What an unlocked operation's one statement ends with when it did not apply: the server
refused it (it rolled back), or its guard found the rows changed (it wrote nothing); a
cancellation propagates as such, as during a ``COMMIT``."""
_LIVENESS_OPS = frozenset({"heartbeat_worker"})
_UNLOCKED_OPS: dict[str, Callable[[tuple[Any, ...]], bool]] = {
    "complete_activity_and_task": lambda args: ops.may_fit_one_statement(args[3]),
    "complete_workflow_task": lambda args: ops.may_fit_one_statement(args[1]),
    "start_workflow": lambda args: args[1] is None and ops.may_start_in_one_statement(args[0]),
}
"""Operations tried first without a transaction, their writes as one statement (``Unlocked``),
when their arguments allow it."""
_CONFLICTS_FOR = 10.0
"""Seconds an operation keeps retrying after conflicts (a run held by another transaction)."""
_RECONNECT_FOR = 60.0
"""Seconds an operation keeps retrying while the database is unreachable."""
_ATTEMPT_TIMEOUT = 60.0
"""Seconds an operation's statements may take, and then its commit: a connection that stops
answering (a half-open TCP connection) is dropped and the operation retried (or, at the commit,
reported as ambiguous). One timer for the statements, not asyncpg's ``command_timeout`` (one per
statement, a measurable cost on every step)."""


_LITERAL = re.compile(r"'[^']*'")
_PLACEHOLDER = re.compile(rf"{_LITERAL.pattern}|\?")
_WRITE_AFTER_WITH = re.compile(r"\)\s*(INSERT|UPDATE|DELETE)\b")
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|SAVEPOINT|RELEASE|ROLLBACK)\b")
_translated: dict[str, tuple[str, bool, bool]] = {}


def _translate(sql: str) -> tuple[str, bool, bool]:
    """``?`` placeholders to ``$1…``, whether the statement returns rows, and whether it may
    write or lock (cached)."""
    hit = _translated.get(sql)
    if hit is None:
        n = 0

        def number(m: re.Match[str]) -> str:
            nonlocal n
            if m.group(0) != "?":
                return m.group(0)  # a string literal, left alone
            n += 1
            return f"${n}"

        text = _PLACEHOLDER.sub(number, sql)
        upper = sql.lstrip().upper()
        returns_rows = (
            upper.startswith("SELECT")
            # WITH …: rows unless the main statement (after the last CTE) is a write
            or (upper.startswith("WITH") and not _WRITE_AFTER_WITH.search(upper))
            or " RETURNING " in upper + " "
        )
        # (A word inside a string literal, as in kind = 'update', is not a write.)
        writes = bool(_WRITES.search(_LITERAL.sub("''", upper)))
        hit = _translated[sql] = (text, returns_rows, writes)
    return hit


class _Cursor:
    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


class _Connection:
    """The DB-API-shaped face of an asyncpg connection that operations see (``sql.Connection``)."""

    __slots__ = ("conn", "unlocked")

    def __init__(self, conn: _AnyConnection, unlocked: Unlocked | None = None) -> None:
        self.conn = conn
        self.unlocked = unlocked
        """Set when the operation runs without a transaction: its only write is its last."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        text, returns_rows, writes = _translate(sql)
        if self.unlocked is not None and (writes or self.unlocked.written):
            self.unlocked.check_write()
        if returns_rows:
            rows = await_(self.conn.fetch(text, *parameters))
            return _Cursor(rows, len(rows))
        status = await_(self.conn.execute(text, *parameters))
        tail = status.rsplit(" ", 1)[-1]
        return _Cursor([], int(tail) if tail.isdigit() else -1)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        rows = [tuple(p) for p in parameters]
        if rows:
            if self.unlocked is not None:
                self.unlocked.check_write()
            await_(self.conn.executemany(_translate(sql)[0], rows))


def _encode_topics(topics: Iterable[Hashable]) -> list[Any]:
    return [list(t) if isinstance(t, tuple) else t for t in topics]


def _decode_topic(item: Any) -> Hashable:
    return tuple(item) if isinstance(item, list) else item


class _AmbiguousCommit(Exception):
    pass


class PostgresStore(SqlStore):
    """Open with ``await PostgresStore.open("postgresql://user@host/db")``."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
    ) -> None:
        """Configure the store; ``start()`` connects.

        Args:
            clock: The store's clock (seconds since the epoch); injectable for tests. Default:
                the database server's clock.
            min_connections, max_connections: Size of the connection pool.
        """
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}")
        self.url = url
        self._clock = clock
        self._offset = 0.0
        self._min = min_connections
        self._max = max(max_connections, min_connections)
        self._pool: asyncpg.Pool | None = None
        self._liveness_pool: asyncpg.Pool | None = None
        self._notifier = Notifier()
        self._token = uuid.uuid4().hex[:12]
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self.operation_counts: Counter[str] = Counter()
        """Transactions committed per operation name (``poll_…:empty`` for empty polls)."""
        self.retries: Counter[str] = Counter()
        """Operations run again, by what stopped the first try (deadlock, lost connection…)."""

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresStore:
        """Connect (creating and migrating the schema if needed) to the database at ``url``."""
        store = cls(url, **options)
        await store.start()
        return store

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min,
                max_size=self._max,
                statement_cache_size=1024,
                reset=_keep_session,
            )
            # Liveness heartbeats get a connection of their own: queued behind a burst of work
            # in the main pool, a live worker's heartbeat would arrive late and it would be
            # taken for dead.
            self._liveness_pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=1, command_timeout=60
            )
        except (*_CONNECTION_LOST, asyncpg.PostgresError) as e:
            if self._pool is not None:
                await self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.url)}: {e}") from e
        try:
            async with self._pool.acquire() as conn:
                await migrate.migrate_postgres(conn)
                if self._clock is None:
                    self._offset = await _clock_offset(conn)
        except BaseException:
            await self._pool.close()
            await self._liveness_pool.close()
            raise
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(ready), name="duro-pg-listener")
        try:
            await ready
        except BaseException:
            await self._pool.close()
            await self._liveness_pool.close()
            raise

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return time.time() + self._offset

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for pool in (self._pool, self._liveness_pool):
            if pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pool.close(), 10)

    # -- running operations --------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        if self._closed:
            raise StoreError("store is closed")
        assert self._pool is not None, "store used before start()"
        conflicts = 0
        conflict_deadline = time.monotonic() + _CONFLICTS_FOR
        deadline = time.monotonic() + _RECONNECT_FOR
        delay = 0.01
        # First without a transaction when the operation can write as one statement; any retry
        # (it needed locks, or another writer came first) takes the locks.
        fits = _UNLOCKED_OPS.get(fn.__name__)
        unlocked = fits is not None and fits(args)
        while True:
            try:
                result, notes = await self._attempt(fn, args, readonly, unlocked)
            except _AmbiguousCommit as e:
                raise StoreError(
                    f"the connection to PostgreSQL was lost (or the code after it failed) while "
                    f"committing {fn.__name__}: the change may or may not have been applied"
                ) from e.__cause__
            except NeedsLocks:
                self.retries["needs locks"] += 1
                unlocked = False
                continue
            except _RETRYABLE as e:
                self.retries[type(e).__name__] += 1
                unlocked = False
                conflicts += 1
                if time.monotonic() > conflict_deadline:
                    raise _as_store_error(e) from e
                await asyncio.sleep(min(0.001 * conflicts, 0.05))
                continue
            except _CONNECTION_LOST as e:
                self.retries["connection lost"] += 1
                unlocked = False
                if self._closed or time.monotonic() > deadline:
                    raise StoreError(f"PostgreSQL unreachable: {type(e).__name__}: {e}") from e
                log.log(
                    logging.WARNING if delay == 0.01 else logging.DEBUG,
                    "PostgreSQL connection lost (%s); retrying %s",
                    e,
                    fn.__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except DuroError:
                raise
            except Exception as e:  # a driver error, or a bug in an operation
                raise _as_store_error(e) from e
            for topic in notes:
                self._notifier.notify(topic)
            self.operation_counts[fn.__name__] += 1
            if isinstance(result, list) and not result:
                self.operation_counts[f"{fn.__name__}:empty"] += 1
            return result

    async def _attempt(
        self, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool, unlocked: bool
    ) -> tuple[T, set[Hashable]]:
        pool = self._liveness_pool if fn.__name__ in _LIVENESS_OPS else self._pool
        assert pool is not None
        conn = await pool.acquire()
        # Set once the commit may have happened: a failure after it must not look like the
        # operation's own (it would be run a second time).
        sent_commit = False
        one = Unlocked(self._notification) if unlocked else None
        try:
            tx = Tx(
                _Connection(conn, one),
                self.now(),
                dialect=_READ_ONLY if readonly else POSTGRES,
                unlocked=one,
            )
            try:
                async with asyncio.timeout(_ATTEMPT_TIMEOUT):
                    if readonly or one is not None:
                        # No transaction: under READ COMMITTED each statement reads its own
                        # snapshot inside one as well, so BEGIN and COMMIT would only cost two
                        # round trips. An unlocked operation's one write commits on its own.
                        result = await run_op(fn, tx, *args)
                    else:
                        await conn.execute("BEGIN")
                        result = await run_op(fn, tx, *args)
            except BaseException as e:
                if one is not None and one.written and not isinstance(e, _NOT_COMMITTED):
                    # The one statement is the commit: sent, then the connection was lost (or
                    # code after it failed), so whether it applied is unknown.
                    sent_commit = True
                    with contextlib.suppress(Exception):  # (asyncpg may have detached it)
                        conn.terminate()
                    raise _AmbiguousCommit() from e
                if isinstance(e, asyncpg.PostgresError | DuroError | NeedsLocks) and (
                    not conn.is_closed()
                ):
                    if not readonly and one is None:  # else no transaction is open
                        with contextlib.suppress(Exception):
                            await conn.execute("ROLLBACK")
                else:
                    # Cancelled mid-statement, or the client side failed: the connection's
                    # state is unknown, so it is dropped (the pool opens a new one), never reused.
                    conn.terminate()
                raise
            if readonly:
                return result, tx.notes
            if one is not None:
                sent_commit = one.written
                if sent_commit and tx.notes - one.notified:
                    with contextlib.suppress(Exception):  # only a wake-up; the step is committed
                        await conn.execute(
                            self._notify_statement(tx.notes - one.notified),
                            timeout=_ATTEMPT_TIMEOUT,
                        )
                return result, tx.notes
            sent_commit = True
            try:
                await conn.execute(self._commit_statement(tx.notes), timeout=_ATTEMPT_TIMEOUT)
            except _CONNECTION_LOST as e:
                raise _AmbiguousCommit() from e
            return result, tx.notes
        finally:
            try:
                await pool.release(conn)
            except Exception:
                # The pool resets a connection it takes back; if that fails (the connection
                # dropped just now) the pool discards it. After a COMMIT that error must not
                # look like the operation's: it would be run a second time.
                if not sent_commit:
                    raise

    def _notification(self, notes: set[Hashable]) -> tuple[str, str]:
        """``pg_notify``'s channel and payload that wake other processes' waiters for ``notes``."""
        payload = json.dumps({"p": self._token, "t": _encode_topics(notes)})
        if len(payload) >= 7900:  # too many topics for one notification: everyone re-polls
            payload = "*"
        return _CHANNEL, payload

    def _notify_statement(self, notes: set[Hashable]) -> str:
        # Dollar quoting: no escaping rules (standard_conforming_strings or not) apply inside.
        tag = f"$n{self._token}$"
        return f"SELECT pg_notify('{_CHANNEL}', {tag}{self._notification(notes)[1]}{tag})"

    def _commit_statement(self, notes: set[Hashable]) -> str:
        """COMMIT, preceded by the NOTIFY that wakes other processes' waiters for ``notes``."""
        if not notes:
            return "COMMIT"
        return f"{self._notify_statement(notes)}; COMMIT"

    # -- wake-ups ------------------------------------------------------------------------------

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        """Keep one connection LISTENing; after a reconnect, wake every waiter once."""
        delay = 0.05
        first = True
        while not self._closed:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(_CHANNEL, self._on_notify)
                if first:
                    first = False
                    ready.set_result(None)
                else:
                    self._notifier.notify_all()  # whatever was sent while we were away
                delay = 0.05
                while not lost.is_set():
                    # A half-open TCP connection never reports its end: check now and then.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
                raise
            except Exception as e:
                if first:
                    first = False
                    ready.set_exception(
                        StoreError(f"cannot LISTEN on PostgreSQL at {redact(self.url)}: {e}")
                    )
                    return
                log.warning("PostgreSQL listener connection lost (%s); reconnecting", e)
            if conn is not None:
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        if payload == "*":
            self._notifier.notify_all()
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("p") == self._token:
            return  # our own commit: local waiters were woken already
        for item in message.get("t", ()):
            self._notifier.notify(_decode_topic(item))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool runs on a connection it takes back, after its own rollback: nothing.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, one
    more round trip per operation. Operations change no session state (no ``SET``, no session
    advisory locks, no cursors or ``LISTEN`` on pooled connections: the listener has its own),
    and the pool rolls back a transaction left open before this runs.
    """


async def _clock_offset(conn: _AnyConnection) -> float:
    """Seconds to add to this machine's clock to read the database server's clock.

    From the quickest of a few round trips; an offset within that round trip's error bar (half
    of it) is no evidence of skew (the server is this machine, or its clock agrees) and is 0.
    """
    best: tuple[float, float] | None = None
    for _ in range(5):
        t0 = time.time()
        server = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
        t1 = time.time()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, server - (t0 + t1) / 2)
    assert best is not None
    rtt, offset = best
    return 0.0 if abs(offset) <= rtt / 2 else offset


def _as_store_error(e: BaseException) -> StoreError:
    err = StoreError(f"store operation failed: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err
