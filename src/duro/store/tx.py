"""How a SQL store turns an engine ``Transition`` into rows, inside one transaction.

``apply_transition`` is the one place that appends history: every append comes with one UPDATE
of the run's executions row guarded by the ``next_event_id`` read in the same transaction (the
optimistic lock), and with the task, timer and buffer rows the transition implies. ``Claims``
lets a caller take the work it just created (eager hand-off) without a later poll.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from duro import search_attributes
from duro.converter import dumps, loads
from duro.engine import children as child_rules
from duro.engine import flow
from duro.engine import requests as request_rules
from duro.engine.model import ActivitySpec, RunRecord, Transition, WorkflowTaskState
from duro.engine.timers import EXECUTION_TIMEOUT_SEQ, RUN_TIMEOUT_SEQ
from duro.errors import ConcurrencyConflictError, WorkflowNotFoundError
from duro.history import Event, EventType, NewEvent, RunStatus
from duro.store.protocol import ActivityTaskLease, WorkflowTaskLease
from duro.store.sql import SQLITE, Connection, Dialect

WORKFLOW_TASK_LEASE = 10.0
"""Seconds a worker may hold a workflow task before another may take it."""
STICKY_TIMEOUT = 3.0
"""Seconds a run's next workflow task waits for the worker that has it cached."""
QUERY_LEASE = 10.0

EVENT_TYPES = {t.value: t for t in EventType}


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def _reset_ids_after_fork() -> None:
    # A forked child would otherwise hand out its parent's lease ids, defeating fencing.
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = uuid.uuid4().hex[:12]
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reset_ids_after_fork)


def new_run_id() -> str:
    """A run id: a UUIDv7 (RFC 9562) in 32 hex digits, time-ordered.

    Runs started together get neighbouring ids, so their rows sit together in the ``executions``
    and ``history`` B-trees and a commit touching several of them writes fewer pages: in the
    compare fan-out, 24% fewer WAL bytes and about 10% more steps/s than with random uuid4 ids.
    The first 12 digits are the start time in milliseconds; the rest are random.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return f"{value:032x}"


def new_id() -> str:
    """Unique lease / run ids: a per-process random prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


class NeedsLocks(Exception):
    """An operation run without locks (``Tx.unlocked``) came to a write it cannot make as one
    guarded statement. It has written nothing; the store runs it again the usual way."""


@dataclass(slots=True)
class Unlocked:
    """An operation that reads without a transaction and commits its writes as one statement.

    A workflow step on PostgreSQL in two round trips (read, write) instead of five (BEGIN,
    lock, write, insert, COMMIT). The read keeps the versions (``xmin``) of the run's row and
    of the task row the operation completes (an activity's, or the workflow task's); the write
    locks both rows again by those versions (run, then task, the usual order) and every part of
    it runs only if both are unchanged, so a step that raced another writer changes nothing and
    is run again with locks. Only a step whose
    writes fit the one statement runs this way (``fits_one_statement``); any other write is
    refused before it is sent (``NeedsLocks``), by the connection itself.
    """

    notification: Callable[[set[Hashable]], tuple[str, str]]
    """The store's wake-up for a set of topics: ``pg_notify``'s channel and payload."""
    run_version: int = 0
    task_id: int = 0
    task_version: int = 0
    task_kind: str = ""
    """``activity`` (a result) or ``workflow`` (a workflow task's completion)."""
    closing: bool = False
    """The operation's commands close the run: its read also checks whether the close must
    do more than the one statement does (end children, fail accepted updates)."""
    new_run: tuple[str, list[Any]] | None = None
    """A start: the new run's ``executions`` columns and values, which the one statement
    inserts (with the run's state after its first transition) instead of a statement of
    their own (``insert_execution``)."""
    retire: tuple[str, int] | None = None
    """A start whose workflow id has a closed current run: that run's id and the version
    read; the one statement makes it no longer current, and inserts only if it still was."""
    armed: bool = False
    """The next write is the operation's one statement."""
    written: bool = False
    notified: set[Hashable] = field(default_factory=set)
    """Topics the statement sent its wake-up for; the store sends any added later."""

    def check_write(self) -> None:
        """Called by the connection before a write: only the armed statement may run."""
        if self.written:
            raise RuntimeError("a write after an unlocked operation's one statement")
        if not self.armed:
            raise NeedsLocks()
        self.armed = False
        self.written = True


NO_ACTIVITY_LIMITS = "no_activity_limits"
"""``Tx.shared`` key (with a namespace): the namespace has no activity flow limits."""


@dataclass
class Tx:
    """One operation's view of the open transaction."""

    conn: Connection
    now: float
    dialect: Dialect = SQLITE
    notes: set[Hashable] = field(default_factory=set)
    gates: dict[str, FlowGate] = field(default_factory=dict)
    appended: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    """History rows this transaction appended, by run: a lease handed out in the same
    transaction reads its newest events from here instead of querying them back."""
    shared: dict[Hashable, Any] = field(default_factory=dict)
    """Facts read once and shared by every operation batched into the transaction (SQLite's
    group commit runs many operations in one; PostgreSQL runs one). SQLite keeps them from one
    committed transaction to the next while no other process writes (``sqlite._Facts``)."""
    unlocked: Unlocked | None = None
    """Set while the operation runs without a transaction (see ``Unlocked``)."""

    def gate(self, namespace: str) -> FlowGate:
        """The namespace's flow limits, read once per operation."""
        gate = self.gates.get(namespace)
        if gate is None:
            gate = self.gates[namespace] = FlowGate(self, namespace)
        return gate


class FlowGate:
    """Decides whether an activity attempt may start now under the namespace's limits.

    Concurrency limits count leased attempts (of an activity type, or on a task queue); rate
    limits are token buckets kept in ``flow_limits``. Every worker's poll goes through here, in
    the same transaction as the claim, so the limits hold across workers.
    """

    def __init__(self, tx: Tx, namespace: str) -> None:
        self.tx = tx
        self.namespace = namespace
        self.limits: dict[tuple[str, str], list[Any]] = {}
        if (NO_ACTIVITY_LIMITS, namespace) not in tx.shared:
            self.limits = {
                (r[0], r[1]): list(r[2:])
                for r in tx.conn.execute(
                    "SELECT scope, name, max_concurrent, rate, burst, tokens, refilled_at "
                    "FROM flow_limits WHERE namespace = ? "
                    "AND scope IN ('activity_type', 'task_queue')" + tx.dialect.for_update,
                    (namespace,),
                ).fetchall()
            }
            if not self.limits:
                tx.shared[(NO_ACTIVITY_LIMITS, namespace)] = True
        self._counts: dict[tuple[str, str], int] = {}

    def _leased(self, key: tuple[str, str]) -> int:
        count = self._counts.get(key)
        if count is None:
            column = "activity_type" if key[0] == "activity_type" else "task_queue"
            count = self.tx.conn.execute(
                f"SELECT COUNT(*) FROM tasks WHERE namespace = ? AND kind = 'activity' "
                f"AND lease_id IS NOT NULL AND {column} = ?",
                (self.namespace, key[1]),
            ).fetchone()[0]
            self._counts[key] = int(count)
        return self._counts[key]

    def allow(self, activity_type: str, task_queue: str) -> bool:
        if not self.limits:
            return True
        keys = [
            k
            for k in (("activity_type", activity_type), ("task_queue", task_queue))
            if k in self.limits
        ]
        for key in keys:
            max_concurrent = self.limits[key][0]
            if max_concurrent is not None and self._leased(key) >= max_concurrent:
                return False
        buckets = []
        for key in keys:
            _, rate, burst, tokens, refilled_at = self.limits[key]
            if rate is None:
                continue
            bucket = flow.Bucket(
                rate,
                burst or max(1.0, rate),
                burst or max(1.0, rate) if tokens is None else tokens,
                self.tx.now if refilled_at is None else refilled_at,
            )
            probe = flow.Bucket(bucket.rate, bucket.burst, bucket.tokens, bucket.refilled_at)
            if not flow.take(probe, self.tx.now):
                return False
            buckets.append((key, bucket))
        for key, bucket in buckets:
            flow.take(bucket, self.tx.now)
            self.limits[key][3], self.limits[key][4] = bucket.tokens, bucket.refilled_at
            self.tx.conn.execute(
                "UPDATE flow_limits SET tokens = ?, refilled_at = ? "
                "WHERE namespace = ? AND scope = ? AND name = ?",
                (bucket.tokens, bucket.refilled_at, self.namespace, *key),
            )
        for key in keys:
            if self.limits[key][0] is not None:
                self._counts[key] = self._leased(key) + 1
        return True


RUN_COLUMNS = (
    "namespace, workflow_id, run_id, workflow_type, task_queue, status, next_event_id, "
    "wt_state, wt_attempt, sticky_worker, buffered, build_ids, pinned_build_id, history_size, "
    "parent_run_id, parent_seq, priority, concurrency_key"
)
RUN_COLUMNS_E = ", ".join(f"e.{c.strip()}" for c in RUN_COLUMNS.split(","))


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
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
        build_ids=loads(row[11]) or [],
        pinned_build_id=row[12],
        history_size=row[13],
        parent_run_id=row[14],
        parent_seq=row[15],
        priority=row[16],
        concurrency_key=row[17],
    )


def load_run(tx: Tx, run_id: str) -> RunRecord:
    """The run's record, locked against other writers until the transaction ends."""
    row = tx.conn.execute(
        f"SELECT {RUN_COLUMNS} FROM executions WHERE run_id = ?{tx.dialect.for_update}", (run_id,)
    ).fetchone()
    if row is None:
        raise WorkflowNotFoundError("?", run_id)
    return run_from_row(row)


def find_run(
    tx: Tx, namespace: str, workflow_id: str, run_id: str | None, *, nowait: bool = False
) -> RunRecord:
    """The run (the workflow id's current one if ``run_id`` is None), locked like ``load_run``.

    ``nowait``: fail at once (and have the operation retried) if another transaction holds
    it, for an operation that already holds another run.
    """
    lock = tx.dialect.for_update_nowait if nowait else tx.dialect.for_update
    if run_id:
        row = tx.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM executions WHERE run_id = ? AND namespace = ? "
            f"AND workflow_id = ?{lock}",
            (run_id, namespace, workflow_id),
        ).fetchone()
    else:
        row = tx.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM executions WHERE namespace = ? AND workflow_id = ? "
            f"AND is_current = 1{lock}",
            (namespace, workflow_id),
        ).fetchone()
    if row is None:
        if not run_id and lock:
            raise_if_current_moved(tx, namespace, workflow_id)
        raise WorkflowNotFoundError(workflow_id, run_id)
    return run_from_row(row)


def raise_if_current_moved(
    tx: Tx, namespace: str, workflow_id: str, *, running_only: bool = False
) -> None:
    """A locked lookup of the current run found none, but one may exist.

    While the lookup waited for the then-current run's lock, that run continued as new: it is
    not current any more, and its successor was not in the lookup's snapshot. Retrying the
    operation finds the successor.
    """
    running = " AND status = 'Running'" if running_only else ""
    row = tx.conn.execute(
        "SELECT run_id FROM executions WHERE namespace = ? AND workflow_id = ? "
        f"AND is_current = 1{running}",
        (namespace, workflow_id),
    ).fetchone()
    if row is not None:
        raise ConcurrencyConflictError(row[0], 0)


@dataclass
class Claims:
    """Work to hand to the calling worker inside the same transaction (no later poll)."""

    worker_id: str
    activity_queue: str | None = None
    max_activities: int = 0
    workflow_task: bool = False
    build_id: str = ""
    """The claiming worker's build id: a pinned run is only handed to its own build."""
    cached_upto: Callable[[str], int] | None = None
    activity_leases: list[ActivityTaskLease] = field(default_factory=list)
    workflow_lease: WorkflowTaskLease | None = None


def apply_transition(
    tx: Tx,
    run: RunRecord,
    t: Transition,
    claims: Claims | None = None,
    sticky_worker: str | None = None,
) -> int:
    """Persist a transition; returns the run's new next_event_id.

    Invariant: one UPDATE of the executions row, guarded by the next_event_id read in the same
    transaction, accompanies every append (optimistic concurrency for multi-writer stores).
    """
    if tx.unlocked is not None and not fits_one_statement(run, t, tx.unlocked):
        raise NeedsLocks()
    conn, now = tx.conn, tx.now
    events = list(t.append)
    flushed = False
    if t.flush_buffer and run.has_buffered:
        rows = conn.execute(
            "SELECT type, attrs FROM buffered_events WHERE run_id = ? ORDER BY seq", (run.run_id,)
        ).fetchall()
        conn.execute("DELETE FROM buffered_events WHERE run_id = ?", (run.run_id,))
        events.extend(NewEvent(EVENT_TYPES[r[0]], loads(r[1])) for r in rows)
        flushed = True
    events.extend(t.append_after)
    next_id = run.next_event_id
    # A run has a workflow task row exactly while its task is scheduled or started; a task
    # completed in the transaction that woke it (the fused step) never had one to delete.
    had_workflow_task = run.wt_state != WorkflowTaskState.IDLE
    added_bytes = 0
    if events:
        rows = [
            (run.run_id, next_id + i, e.type.value, now, dumps(e.attrs))
            for i, e in enumerate(events)
        ]
        added_bytes = sum(len(r[4]) for r in rows)
        if not tx.dialect.writes_in_with:  # else written with the run's update, below
            insert = "INSERT INTO history (run_id, event_id, type, time, attrs) VALUES (?,?,?,?,?)"
            if len(rows) == 1:  # the common case; execute is cheaper than executemany
                conn.execute(insert, rows[0])
            else:
                conn.executemany(insert, rows)
        tx.appended.setdefault(run.run_id, []).extend(rows)
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
        and run.pinned_build_id in (None, claims.build_id)
    )
    if claim_wt:
        wt_state = WorkflowTaskState.STARTED
    sets = ["next_event_id = ?", "wt_state = ?", "history_size = history_size + ?"]
    params: list[Any] = [new_next, int(wt_state), added_bytes]
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
    if tx.unlocked is not None:
        if t.close is not None:
            tx.notes.add(("closed", run.run_id))
            tx.notes.add(("closed", run.namespace, run.workflow_id))
        first_task = None
        if tx.unlocked.new_run is not None:
            first_task = _FirstTask(
                claims if claim_wt else None,
                visible,
                t.wt_attempt or 1,
                (new_next, int(wt_state), added_bytes),
            )
            if first_task.claims is None:
                tx.notes.add(("workflow", run.namespace, run.task_queue))
        task_id = _write_unlocked(
            tx, run, t, claims, rows if events else [], (sets, params), first_task
        )
        run.next_event_id = new_next
        run.wt_state = wt_state
        run.history_size += added_bytes
        if t.close is not None:
            run.status = t.close
        if first_task is not None and first_task.claims is not None:
            assert task_id is not None
            assert first_task.lease_id is not None
            first_task.claims.workflow_lease = workflow_lease(
                tx, run, task_id, first_task.lease_id, first_task.attempt, first_task.cached_upto
            )
        return new_next
    update = f"UPDATE executions SET {', '.join(sets)} WHERE run_id = ? AND next_event_id = ?"
    # PostgreSQL: the events, the finished activities' task rows and the run's update in one
    # statement, one round trip (the writes touch different rows, so their order is free).
    with_writes: list[str] = []
    with_params: list[Any] = []
    if events and tx.dialect.writes_in_with:
        with_writes.append(
            "h AS (INSERT INTO history (run_id, event_id, type, time, attrs) "
            "SELECT ?, ? + e.i - 1, e.type, ?, e.attrs "
            "FROM unnest(?::text[], ?::text[]) WITH ORDINALITY AS e(type, attrs, i))"
        )
        with_params += [run.run_id, next_id, now, [r[2] for r in rows], [r[4] for r in rows]]
    deletes_done = bool(t.delete_activities) and tx.dialect.writes_in_with and t.close is None
    if deletes_done:
        with_writes.append(
            "d AS (DELETE FROM tasks WHERE run_id = ? AND kind = 'activity' "
            "AND seq = ANY(?::bigint[]))"
        )
        with_params += [run.run_id, list(t.delete_activities)]
    if with_writes:
        update = f"WITH {', '.join(with_writes)} {update}"
    cur = conn.execute(update, (*with_params, *params, run.run_id, next_id))
    if cur.rowcount != 1:
        raise ConcurrencyConflictError(run.run_id, next_id)
    run.next_event_id = new_next
    run.wt_state = wt_state
    run.history_size += added_bytes
    if t.buffer:
        conn.executemany(
            "INSERT INTO buffered_events (run_id, type, attrs) VALUES (?, ?, ?)",
            [(run.run_id, e.type.value, dumps(e.attrs)) for e in t.buffer],
        )
    if t.search_attributes:
        _upsert_search_attributes(tx, run, t.search_attributes)
    if t.memo:
        row = conn.execute("SELECT memo FROM executions WHERE run_id = ?", (run.run_id,)).fetchone()
        memo = {**(loads(row[0]) or {}), **t.memo}
        memo = {k: v for k, v in memo.items() if v is not None}
        conn.execute("UPDATE executions SET memo = ? WHERE run_id = ?", (dumps(memo), run.run_id))
    for update_id, result, failure in t.completed_updates:
        _finish_update(tx, run.run_id, update_id, dumps(result), _failure_message(failure))
    if t.close is not None:
        run.status = t.close
        if t.continue_as_new is not None:
            _continue_as_new(tx, run, *t.continue_as_new)
        elif run.parent_run_id is not None and run.parent_seq is not None:
            # A child's outcome reaches its parent's history in the same transaction (unless
            # retention deleted the parent already: an abandoned child may outlive it).
            parent = _parent_if_kept(tx, run.parent_run_id)
            if parent is not None:
                apply_transition(
                    tx,
                    parent,
                    child_rules.child_closed(parent, run.parent_seq, t.close, t.result, t.failure),
                )
        _apply_parent_close_policy(tx, run)
        _admit_next(tx, run)
        # Updates accepted but not finished never will be: tell their callers.
        for (update_id,) in conn.execute(
            "SELECT update_id FROM queries WHERE run_id = ? AND kind = 'update' AND done = 2",
            (run.run_id,),
        ).fetchall():
            message = f"the workflow closed ({t.close.value}) before the update completed"
            _finish_update(tx, run.run_id, update_id, None, message)
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
    elif wt_state == WorkflowTaskState.SCHEDULED and tx.dialect.skip_locked:
        # A poll skips tasks whose run another transaction holds, this one included: wake
        # the pollers again once it commits, or the waiting task sits until their next poll.
        tx.notes.add(("workflow", run.namespace, run.task_queue))
    elif t.wt_state == WorkflowTaskState.IDLE and had_workflow_task:
        conn.execute("DELETE FROM tasks WHERE run_id = ? AND kind = 'workflow'", (run.run_id,))
    if t.schedule_activities:
        _schedule_activities(tx, run, t.schedule_activities, claims)
    for seq in () if deletes_done else t.delete_activities:
        conn.execute(
            "DELETE FROM tasks WHERE run_id = ? AND kind = 'activity' AND seq = ?",
            (run.run_id, seq),
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


_CARRIED_OVER = (
    EventType.WORKFLOW_EXECUTION_SIGNALED,
    EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
)


def _upsert_search_attributes(tx: Tx, run: RunRecord, attrs: dict[str, Any]) -> None:
    for name, value in attrs.items():
        if value is None:
            tx.conn.execute(
                "DELETE FROM search_attributes WHERE run_id = ? AND name = ?", (run.run_id, name)
            )
            continue
        str_value, num_value = search_attributes.columns(value)
        tx.conn.execute(
            "INSERT INTO search_attributes (run_id, namespace, name, str_value, num_value) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET "
            "str_value = excluded.str_value, num_value = excluded.num_value",
            (run.run_id, run.namespace, name, str_value, num_value),
        )
        tx.conn.execute(
            "INSERT INTO search_attribute_names (namespace, name) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            (run.namespace, name),
        )


def _parent_if_kept(tx: Tx, run_id: str) -> RunRecord | None:
    try:
        return load_run(tx, run_id)
    except WorkflowNotFoundError:
        return None


def _apply_parent_close_policy(tx: Tx, parent: RunRecord) -> None:
    """The parent closed: terminate or cancel its running children (unless abandoned)."""
    rows = tx.conn.execute(
        f"SELECT {RUN_COLUMNS}, parent_close_policy FROM executions WHERE parent_run_id = ? "
        "AND status = 'Running' AND COALESCE(parent_close_policy, 'terminate') <> 'abandon'"
        f"{tx.dialect.for_update_nowait}",
        (parent.run_id,),
    ).fetchall()
    for row in rows:
        child, policy = run_from_row(row[:-1]), row[-1] or "terminate"
        reason = f"parent {parent.workflow_id} closed ({parent.status.value})"
        if policy == "terminate":
            apply_transition(tx, child, request_rules.terminate(child, reason, tx.now))
        elif policy == "request_cancel":
            apply_transition(tx, child, request_rules.request_cancel(child, reason, tx.now))


def insert_execution(
    tx: Tx,
    *,
    namespace: str,
    workflow_id: str,
    run_id: str,
    workflow_type: str,
    task_queue: str,
    args: list[Any],
    memo_json: str | None,
    parent: tuple[str | None, str | None, int | None, str | None] = (None, None, None, None),
    execution_deadline: float | None = None,
    run_timeout: float | None = None,
    priority: int = 0,
    concurrency_key: str | None = None,
    admitted: bool = True,
) -> RunRecord:
    """Insert a new, current, running execution row (no history yet) and return its record.

    ``parent`` is ``(parent workflow id, parent run id, seq, close policy)`` for a child run.
    """
    values = [
        run_id,
        namespace,
        workflow_id,
        workflow_type,
        task_queue,
        RunStatus.RUNNING.value,
        tx.now,
        dumps(args),
        memo_json,
        *parent,
        execution_deadline,
        run_timeout,
        priority,
        concurrency_key,
        int(admitted),
    ]
    if tx.unlocked is not None:
        tx.unlocked.new_run = (_EXECUTION_COLUMNS, values)
    else:
        tx.conn.execute(
            f"INSERT INTO executions ({_EXECUTION_COLUMNS}, is_current, next_event_id, wt_state) "
            f"VALUES ({', '.join('?' * len(values))}, 1, 1, 0)",
            values,
        )
    return RunRecord(
        namespace=namespace,
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type=workflow_type,
        task_queue=task_queue,
        status=RunStatus.RUNNING,
        next_event_id=1,
        wt_state=WorkflowTaskState.IDLE,
        parent_run_id=parent[1],
        parent_seq=parent[2],
        priority=priority,
        concurrency_key=concurrency_key,
    )


_EXECUTION_COLUMNS = (
    "run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, args, memo, "
    "parent_workflow_id, parent_run_id, parent_seq, parent_close_policy, execution_deadline, "
    "run_timeout, priority, concurrency_key, admitted"
)
"""A new run's own columns (``insert_execution``); it starts current, with no history."""


def key_limit(tx: Tx, namespace: str, workflow_type: str) -> int | None:
    row = tx.conn.execute(
        # Locked: starts and closes of runs with a key then count admitted runs one at a time.
        "SELECT max_concurrent FROM flow_limits WHERE namespace = ? AND scope = 'workflow_key' "
        f"AND name = ?{tx.dialect.for_update}",
        (namespace, workflow_type),
    ).fetchone()
    return None if row is None else row[0]


def admitted_count(tx: Tx, namespace: str, workflow_type: str, key: str) -> int:
    return int(
        tx.conn.execute(
            "SELECT COUNT(*) FROM executions WHERE namespace = ? AND workflow_type = ? "
            "AND concurrency_key = ? AND status = 'Running' AND admitted = 1",
            (namespace, workflow_type, key),
        ).fetchone()[0]
    )


def _admit_next(tx: Tx, closed: RunRecord) -> None:
    """A run holding a key's slot closed: let the oldest run waiting for that key in."""
    key = closed.concurrency_key
    if key is None:
        return
    limit = key_limit(tx, closed.namespace, closed.workflow_type)
    if (
        limit is not None
        and admitted_count(tx, closed.namespace, closed.workflow_type, key) >= limit
    ):
        return
    row = tx.conn.execute(
        "SELECT run_id, task_queue FROM executions WHERE namespace = ? AND workflow_type = ? "
        "AND concurrency_key = ? AND status = 'Running' AND admitted = 0 "
        f"ORDER BY start_time LIMIT 1{tx.dialect.for_update}",
        (closed.namespace, closed.workflow_type, key),
    ).fetchone()
    if row is not None:
        tx.conn.execute("UPDATE executions SET admitted = 1 WHERE run_id = ?", (row[0],))
        tx.notes.add(("workflow", closed.namespace, row[1]))


def _continue_as_new(tx: Tx, old: RunRecord, new_run_id: str, args: list[Any]) -> None:
    """Start the next run of ``old``'s workflow id, carrying over buffered signals/updates."""
    conn, now = tx.conn, tx.now
    carried: list[NewEvent] = []
    if old.has_buffered:
        for kind, attrs in conn.execute(
            "SELECT type, attrs FROM buffered_events WHERE run_id = ? ORDER BY seq", (old.run_id,)
        ).fetchall():
            if EVENT_TYPES[kind] in _CARRIED_OVER:
                carried.append(NewEvent(EVENT_TYPES[kind], loads(attrs)))
    memo = conn.execute(
        "SELECT memo, parent_workflow_id, parent_close_policy, execution_deadline, run_timeout "
        "FROM executions WHERE run_id = ?",
        (old.run_id,),
    ).fetchone()
    deadline, run_timeout = memo[3], memo[4]
    conn.execute("UPDATE executions SET is_current = 0 WHERE run_id = ?", (old.run_id,))
    # The next run inherits the parent link: the parent hears of the chain's final outcome.
    run = insert_execution(
        tx,
        namespace=old.namespace,
        workflow_id=old.workflow_id,
        run_id=new_run_id,
        workflow_type=old.workflow_type,
        task_queue=old.task_queue,
        args=args,
        memo_json=memo[0],
        parent=(memo[1], old.parent_run_id, old.parent_seq, memo[2]),
        execution_deadline=deadline,
        run_timeout=run_timeout,
    )
    started = NewEvent(
        EventType.WORKFLOW_EXECUTION_STARTED,
        {
            "workflow_type": old.workflow_type,
            "workflow_id": old.workflow_id,
            "run_id": new_run_id,
            "namespace": old.namespace,
            "task_queue": old.task_queue,
            "args": args,
            "memo": loads(memo[0]) or {},
            "continued_from": old.run_id,
        },
    )
    apply_transition(
        tx,
        run,
        Transition(
            append=[started, *carried],
            wt_state=WorkflowTaskState.SCHEDULED,
            wt_visible_at=now,
            wt_attempt=1,
            # The chain keeps its execution deadline; each run gets its own run timeout.
            start_timers=[
                *([(RUN_TIMEOUT_SEQ, now + run_timeout)] if run_timeout else []),
                *([(EXECUTION_TIMEOUT_SEQ, deadline)] if deadline else []),
            ],
        ),
    )
    # Updates carried over now belong to the new run; the rest fail with the old run.
    conn.executemany(
        "UPDATE queries SET run_id = ? WHERE run_id = ? AND update_id = ?",
        [
            (new_run_id, old.run_id, e.attrs["update_id"])
            for e in carried
            if e.type == EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ],
    )


def _failure_message(failure: dict[str, Any] | None) -> str | None:
    if failure is None:
        return None
    kind, message = failure.get("type", "Error"), failure.get("message", "")
    return f"{kind}: {message}"


def _finish_update(
    tx: Tx, run_id: str, update_id: str, result_json: str | None, error: str | None
) -> None:
    """Hand an update's outcome to the caller waiting on its request row."""
    row = tx.conn.execute(
        "UPDATE queries SET done = 1, result = ?, error = ? "
        "WHERE run_id = ? AND update_id = ? RETURNING query_id",
        (result_json, error, run_id, update_id),
    ).fetchone()
    if row is not None:
        tx.notes.add(("query_done", row[0]))


def _schedule_workflow_task(
    tx: Tx, run: RunRecord, t: Transition, visible: float, claims: Claims | None
) -> None:
    """Create (or reset) the run's workflow task; leased at once to ``claims`` if given."""
    attempt = t.wt_attempt if t.wt_attempt is not None else run.wt_attempt
    sticky = run.sticky_worker
    lease_id = owner = None
    expires = None
    if claims is not None:
        lease_id, owner, expires = new_id(), claims.worker_id, tx.now + WORKFLOW_TASK_LEASE
    cur = tx.conn.execute(
        "INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, attempt, "
        "sticky_worker, sticky_until, lease_id, lease_owner, lease_expires, priority) "
        "VALUES ('workflow', ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?) "
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
            run.priority,
        ),
    )
    task_id = cur.fetchone()[0]
    if claims is not None and lease_id is not None:
        claims.workflow_lease = workflow_lease(
            tx, run, task_id, lease_id, attempt, claims.cached_upto
        )
    else:
        tx.notes.add(("workflow", run.namespace, run.task_queue))


def _schedule_activities(
    tx: Tx, run: RunRecord, specs: list[ActivitySpec], claims: Claims | None
) -> None:
    """Create activity tasks; up to ``claims.max_activities`` are leased to the caller at once."""
    for a, lease in _plan_activities(tx, run, specs, claims):
        cur = tx.conn.execute(
            f"INSERT INTO tasks ({_ACTIVITY_TASK_COLUMNS}) "
            "VALUES ('activity', ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING task_id",
            (run.namespace, run.run_id, tx.now, *_activity_values(tx, a, lease)),
        )
        if lease is not None and claims is not None:
            claims.activity_leases.append(_activity_lease(tx, run, a, cur.fetchone()[0], lease))


_ACTIVITY_TASK_COLUMNS = (
    "kind, namespace, run_id, attempt, visible_at, scheduled_time, task_queue, seq, "
    "activity_type, args, retry_policy, start_to_close_timeout, schedule_to_close_timeout, "
    "heartbeat_timeout, lease_id, lease_owner, lease_expires, started_time, "
    "schedule_to_start_timeout, priority"
)
"""A new activity task's columns: the first five from the run and the time, then the
activity's own (``_activity_values``)."""


@dataclass(slots=True)
class _Lease:
    lease_id: str
    owner: str
    expires: float


def _plan_activities(
    tx: Tx, run: RunRecord, specs: list[ActivitySpec], claims: Claims | None
) -> list[tuple[ActivitySpec, _Lease | None]]:
    """Each new activity task with its lease if the caller claims it (else its queue is woken)."""
    now = tx.now
    eager = claims.max_activities if claims is not None and claims.activity_queue else 0
    planned: list[tuple[ActivitySpec, _Lease | None]] = []
    for a in specs:
        if not (
            eager > 0
            and claims is not None
            and a.task_queue == claims.activity_queue
            and tx.gate(run.namespace).allow(a.activity_type, a.task_queue)
        ):
            tx.notes.add(("activity", run.namespace, a.task_queue))
            planned.append((a, None))
            continue
        eager -= 1
        expires = now + a.start_to_close_timeout
        if a.schedule_to_close_timeout:
            expires = min(expires, now + a.schedule_to_close_timeout)
        if a.heartbeat_timeout:
            expires = min(expires, now + a.heartbeat_timeout)
        planned.append((a, _Lease(new_id(), claims.worker_id, expires)))
    return planned


def _activity_values(tx: Tx, a: ActivitySpec, lease: _Lease | None) -> tuple[Any, ...]:
    """A new activity task's own columns: ``_ACTIVITY_TASK_COLUMNS`` from ``scheduled_time`` on."""
    return (
        tx.now,
        a.task_queue,
        a.seq,
        a.activity_type,
        dumps(a.args),
        dumps(a.retry_policy),
        a.start_to_close_timeout,
        a.schedule_to_close_timeout,
        a.heartbeat_timeout,
        lease.lease_id if lease else None,
        lease.owner if lease else None,
        lease.expires if lease else None,
        tx.now if lease else None,
        a.schedule_to_start_timeout,
        a.priority,
    )


def _activity_lease(
    tx: Tx, run: RunRecord, a: ActivitySpec, task_id: int, lease: _Lease
) -> ActivityTaskLease:
    return ActivityTaskLease(
        task_id=task_id,
        lease_id=lease.lease_id,
        namespace=run.namespace,
        workflow_id=run.workflow_id,
        run_id=run.run_id,
        workflow_type=run.workflow_type,
        seq=a.seq,
        activity_type=a.activity_type,
        task_queue=a.task_queue,
        args=a.args,
        attempt=1,
        scheduled_time=tx.now,
        started_time=tx.now,
        start_to_close_timeout=a.start_to_close_timeout,
        heartbeat_timeout=a.heartbeat_timeout,
        heartbeat_details=None,
        retry_policy=a.retry_policy,
    )


def fits_one_statement(run: RunRecord, t: Transition, unlocked: Unlocked) -> bool:
    """Whether ``t``'s writes fit the unlocked step's one statement (``Unlocked``): events, the
    finished activities' task rows or the completed workflow task's, new activity tasks and
    timers, and the run's row; or a close that ends only this run (``closes_in_one_statement``);
    or a new run's row, first events, workflow task and timers (``Unlocked.new_run``)."""
    if unlocked.new_run is not None:  # a start: the run's row, its first events and task
        shape_fits = (
            t.close is None and t.wt_failure is None and t.wt_state == WorkflowTaskState.SCHEDULED
        )
    else:
        ends_workflow_task = unlocked.task_kind == "workflow" and (
            t.wt_state == WorkflowTaskState.IDLE or t.close is not None
        )
        shape_fits = (
            (run.wt_state == WorkflowTaskState.IDLE or ends_workflow_task)
            and t.wt_state != WorkflowTaskState.SCHEDULED
            and (t.close is None or closes_in_one_statement(run, t, unlocked))
        )
    return (
        shape_fits
        and not (t.flush_buffer and run.has_buffered)
        and not t.buffer
        and not t.search_attributes
        and not t.memo
        and not t.completed_updates
        and t.retry_activity is None
        and not t.cancel_timers
        and t.delete_timer is None
        and not t.external_requests
        and not t.start_children
    )


def closes_in_one_statement(run: RunRecord, t: Transition, unlocked: Unlocked) -> bool:
    """Whether ``t`` closes the run with nothing more than the one statement writes (the run's
    row and history, its task and timer rows deleted): no next run to start, no parent to
    tell, no concurrency-key slot to hand on, no buffered events, and (checked by the read,
    ``Unlocked.closing``) no children to end or accepted updates to fail."""
    return (
        unlocked.closing
        and t.continue_as_new is None
        and run.parent_run_id is None
        and run.concurrency_key is None
        and not run.has_buffered
    )


@dataclass(slots=True)
class _FirstTask:
    """A new run's first workflow task, which the start's one statement writes (leased at once
    to ``claims`` if given), and the run's state once the start's transition is applied."""

    claims: Claims | None
    visible: float
    attempt: int
    run_state: tuple[int, int, int]
    """``next_event_id``, ``wt_state`` and ``history_size`` of the new run's row."""
    lease_id: str | None = None

    @property
    def cached_upto(self) -> Callable[[str], int] | None:
        return self.claims.cached_upto if self.claims is not None else None


def _write_unlocked(
    tx: Tx,
    run: RunRecord,
    t: Transition,
    claims: Claims | None,
    rows: list[tuple[Any, ...]],
    update: tuple[list[str], list[Any]],
    first_task: _FirstTask | None = None,
) -> int | None:
    """Write a step that ``fits_one_statement`` as one statement, committed on its own; the
    first workflow task's id for a start.

    ``r`` and ``k`` lock the run's row and the completed task's row, each only if it is still
    the version the operation read, and without waiting (a row another transaction holds may
    be about to change: the step takes the locked path at once). The run's update ``u`` runs
    only if both did, and every other write only if ``u`` did, so the statement writes all or
    nothing. Its wake-up (``pg_notify``) goes out only if it wrote.

    A start (``Unlocked.new_run``) has ``e`` insert the run's row instead, unless the workflow
    id has a current run by then (another start came first: the start runs again with locks,
    and its id policies decide); every other write runs only if ``e`` did. Over a closed
    current run (``Unlocked.retire``), ``o`` first makes that run no longer current, only if
    it is still the version read, and ``e`` inserts only if ``o`` did.
    """
    unlocked = tx.unlocked
    assert unlocked is not None
    now = tx.now
    params: list[Any]
    if unlocked.new_run is not None:
        assert first_task is not None
        columns, values = unlocked.new_run
        ctes, params, only_if = [], [], ""
        if unlocked.retire is not None:  # the id's closed run, unchanged since read, first
            ctes.append(
                "o AS (UPDATE executions SET is_current = 0 WHERE run_id = ? AND xmin = ?::xid "
                "AND is_current = 1 RETURNING 1)"
            )
            params += list(unlocked.retire)
            only_if = " WHERE EXISTS (SELECT 1 FROM o)"
        ctes.append(
            f"e AS (INSERT INTO executions ({columns}, is_current, next_event_id, wt_state, "
            f"history_size, wt_attempt) SELECT {', '.join('?' * len(values))}, 1, ?, ?, ?, ?"
            f"{only_if} ON CONFLICT (namespace, workflow_id) WHERE is_current = 1 DO NOTHING "
            "RETURNING 1)"
        )
        params += [*values, *first_task.run_state, first_task.attempt]
        source = "e"
    else:
        ctes = [
            "r AS MATERIALIZED (SELECT 1 FROM executions WHERE run_id = ? AND xmin = ?::xid "
            "FOR UPDATE NOWAIT)",
            "k AS MATERIALIZED (SELECT 1 FROM tasks WHERE task_id = ? AND xmin = ?::xid "
            "AND EXISTS (SELECT 1 FROM r) FOR UPDATE NOWAIT)",
        ]
        sets, set_params = update
        ctes.append(
            f"u AS (UPDATE executions SET {', '.join(sets)} "
            "WHERE run_id = ? AND next_event_id = ? AND EXISTS (SELECT 1 FROM k) RETURNING 1)"
        )
        params = [run.run_id, unlocked.run_version, unlocked.task_id, unlocked.task_version]
        params += [*set_params, run.run_id, run.next_event_id]
        source = "u"
    guard = f"EXISTS (SELECT 1 FROM {source})"  # every other write: only with the run's row
    if rows:
        ctes.append(
            "h AS (INSERT INTO history (run_id, event_id, type, time, attrs) "
            "SELECT ?, ? + e.i - 1, e.type, ?, e.attrs "
            "FROM unnest(?::text[], ?::text[]) WITH ORDINALITY AS e(type, attrs, i) "
            f"WHERE {guard})"
        )
        params += [run.run_id, run.next_event_id, now, [r[2] for r in rows], [r[4] for r in rows]]
    closing = t.close is not None
    if closing:  # a closed run has no tasks or timers (its new activities and timers never run)
        ctes.append(f"dt AS (DELETE FROM tasks WHERE run_id = ? AND {guard})")
        ctes.append(f"dti AS (DELETE FROM timers WHERE run_id = ? AND {guard})")
        params += [run.run_id, run.run_id]
    if t.delete_activities and not closing:
        ctes.append(
            "d AS (DELETE FROM tasks WHERE run_id = ? AND kind = 'activity' "
            f"AND seq = ANY(?::bigint[]) AND {guard})"
        )
        params += [run.run_id, list(t.delete_activities)]
    if unlocked.task_kind == "workflow" and not closing:  # the completed workflow task's row
        ctes.append(f"dw AS (DELETE FROM tasks WHERE task_id = ? AND {guard})")
        params.append(unlocked.task_id)
    planned = [] if closing else _plan_activities(tx, run, t.schedule_activities, claims)
    if planned:
        ctes.append(
            f"a AS (INSERT INTO tasks ({_ACTIVITY_TASK_COLUMNS}) "
            "SELECT 'activity', ?, ?, 1, ?, a.* FROM unnest(?::float8[], ?::text[], ?::bigint[], "
            "?::text[], ?::text[], ?::text[], ?::float8[], ?::float8[], ?::float8[], ?::text[], "
            "?::text[], ?::float8[], ?::float8[], ?::float8[], ?::bigint[]) AS a "
            f"WHERE {guard} RETURNING seq, task_id)"
        )
        params += [run.namespace, run.run_id, now]
        rows_of = [_activity_values(tx, a, lease) for a, lease in planned]
        params += [list(column) for column in zip(*rows_of, strict=True)]
    if first_task is not None:
        lease: tuple[str | None, str | None, float | None] = (None, None, None)
        if first_task.claims is not None:
            first_task.lease_id = new_id()
            lease = (first_task.lease_id, first_task.claims.worker_id, now + WORKFLOW_TASK_LEASE)
        ctes.append(
            "w AS (INSERT INTO tasks (kind, namespace, task_queue, run_id, seq, visible_at, "
            "attempt, lease_id, lease_owner, lease_expires, priority) "
            f"SELECT 'workflow', ?, ?, ?, 0, ?, ?, ?, ?, ?, ? WHERE {guard} RETURNING task_id)"
        )
        params += [run.namespace, run.task_queue, run.run_id, first_task.visible]
        params += [first_task.attempt, *lease, run.priority]
    if t.start_timers and not closing:
        ctes.append(
            "ti AS (INSERT INTO timers (run_id, seq, fire_at) SELECT ?, x.seq, x.fire_at "
            f"FROM unnest(?::bigint[], ?::float8[]) AS x(seq, fire_at) WHERE {guard})"
        )
        params += [run.run_id, [s for s, _ in t.start_timers], [at for _, at in t.start_timers]]
        tx.notes.add("timer")
    select = [f"(SELECT count(*) FROM {source})"]
    if planned:
        select.append("(SELECT array_agg(ARRAY[seq, task_id]) FROM a)")
    if first_task is not None:
        select.append("(SELECT task_id FROM w)")
    if tx.notes:
        select.append(f"(SELECT pg_notify(?, ?) FROM {source})")
        params += unlocked.notification(tx.notes)
        unlocked.notified = set(tx.notes)
    unlocked.armed = True
    row = tx.conn.execute(f"WITH {', '.join(ctes)} SELECT {', '.join(select)}", params).fetchone()
    if row[0] != 1:
        raise ConcurrencyConflictError(run.run_id, run.next_event_id)
    first_task_id: int | None = row[2 if planned else 1] if first_task is not None else None
    if planned and claims is not None:
        task_ids = {seq: task_id for seq, task_id in row[1]}
        claims.activity_leases += [
            _activity_lease(tx, run, a, task_ids[a.seq], lease)
            for a, lease in planned
            if lease is not None
        ]
    return first_task_id


def _events_from_rows(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    return [Event(r[0], EVENT_TYPES[r[1]], r[2], loads(r[3])) for r in rows]


def get_history(tx: Tx, run_id: str, after: int) -> list[Event]:
    rows = tx.conn.execute(
        "SELECT event_id, type, time, attrs FROM history WHERE run_id = ? AND event_id > ? "
        "ORDER BY event_id",
        (run_id, after),
    ).fetchall()
    return _events_from_rows(rows)


def _recent_history(tx: Tx, run: RunRecord, after: int) -> list[Event]:
    """Events after ``after``: from this transaction's own appends when they cover them all
    (a worker with the run cached gets just the events of the step it caused), else read."""
    rows = tx.appended.get(run.run_id)
    if rows and rows[0][1] <= after + 1 and rows[-1][1] == run.next_event_id - 1:
        return [Event(r[1], EVENT_TYPES[r[2]], r[3], loads(r[4])) for r in rows if r[1] > after]
    return get_history(tx, run.run_id, after)


def workflow_lease(
    tx: Tx,
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
        history=_recent_history(tx, run, after),
        history_after=after,
        history_size=run.history_size,
    )
