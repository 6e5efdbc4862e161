"""The SQLite store's operations: each runs inside the open transaction, in its own savepoint.

Invariant: one engine rule decides, ``apply_transition`` persists; nothing here appends history
by hand. Lease ids fence every completion (``LeaseLostError`` for a stale one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from duro import search_attributes
from duro.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordMarker,
    RequestCancelExternalWorkflow,
    ScheduleActivity,
    SignalExternalWorkflow,
    StartChildWorkflow,
    StartTimer,
)
from duro.converter import dumps, loads
from duro.engine import activity as activity_rules
from duro.engine import children as child_rules
from duro.engine import requests as request_rules
from duro.engine import reset as reset_rules
from duro.engine import schedules as sched
from duro.engine import start as start_rules
from duro.engine import timers as timer_rules
from duro.engine import workflow_task as wt_rules
from duro.engine.model import ActivityTaskRecord, RunRecord, Transition, WorkflowTaskState
from duro.engine.start import IdReusePolicy, StartDecision, StartRequest
from duro.errors import (
    LeaseLostError,
    ResetFailedError,
    ScheduleError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from duro.history import EventType, NewEvent, RunStatus
from duro.store.protocol import (
    ActivityStep,
    ActivityTaskLease,
    CompletionResult,
    ExecutionInfo,
    FirstTask,
    FlowLimit,
    NamespaceSettings,
    PendingActivityInfo,
    QueryOutcome,
    QueryTask,
    ReapResult,
    RunOutcome,
    ScheduleInfo,
    StartResult,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)
from duro.store.tx import (
    NO_ACTIVITY_LIMITS,
    QUERY_LEASE,
    RUN_COLUMNS,
    RUN_COLUMNS_E,
    WORKFLOW_TASK_LEASE,
    Claims,
    NeedsLocks,
    Tx,
    admitted_count,
    apply_transition,
    find_run,
    get_history,
    insert_execution,
    key_limit,
    load_run,
    new_id,
    new_run_id,
    raise_if_current_moved,
    run_from_row,
    workflow_lease,
)
from duro.visibility import FIELDS, And, Compare, Condition, Not, Or, Query, QuerySyntaxError


def start_workflow(tx: Tx, req: StartRequest, first: FirstTask | None = None) -> StartResult:
    """Start a run (per the id policies), then deliver ``req.signal`` / queue ``req.update``.

    One transaction: with signal-with-start the run never exists without its signal. With
    ``first`` (a fused start), the run's first task completes in it too.
    """
    result = _start(tx, req, first)
    # A repeated request was applied before, its signal with it. (An update is deduplicated
    # by its own id, and the caller needs its request to wait on.)
    if req.signal is not None and not result.repeated:
        run = load_run(tx, result.run_id)
        name, args = req.signal
        apply_transition(tx, run, request_rules.signal_workflow(run, name, args, tx.now))
    if req.update is not None:
        name, args, update_id = req.update
        result.update_request = submit_update(
            tx, req.namespace, req.workflow_id, result.run_id, name, args, update_id
        )
    return result


def _start(tx: Tx, req: StartRequest, first: FirstTask | None = None) -> StartResult:
    conn, now = tx.conn, tx.now
    if req.request_id:
        row = conn.execute(
            "SELECT run_id FROM requests WHERE namespace = ? AND request_id = ?",
            (req.namespace, f"start:{req.request_id}"),
        ).fetchone()
        if row is not None:
            return StartResult(run_id=row[0], started=False, repeated=True)
    # (Two starts of a new id racing on a multi-writer store: the unique index on current runs
    # rejects the second, which is retried and then sees the first.)
    # Unlocked (a start in one statement): read without a lock, keeping the current run's
    # version; if that run changes or another appears meanwhile, the statement writes nothing
    # and the start runs again with locks.
    unlocked = tx.unlocked
    version, lock = (", xmin", "") if unlocked is not None else ("", tx.dialect.for_update)
    row = conn.execute(
        f"SELECT {RUN_COLUMNS}{version} FROM executions WHERE namespace = ? AND workflow_id = ? "
        f"AND is_current = 1{lock}",
        (req.namespace, req.workflow_id),
    ).fetchone()
    current = run_from_row(row[:-1] if version else row) if row else None
    decision = start_rules.decide_start(req, current)
    if decision == StartDecision.USE_EXISTING:
        assert current is not None
        return StartResult(run_id=current.run_id, started=False)
    if current is not None and unlocked is not None:
        if decision != StartDecision.START:
            raise NeedsLocks()  # the running current run must be ended first
        unlocked.retire = (current.run_id, row[-1])  # closed: the statement retires it
    elif current is not None:
        if decision == StartDecision.TERMINATE_AND_START:
            apply_transition(
                tx, current, request_rules.terminate(current, "terminated by a new start", now)
            )
        conn.execute("UPDATE executions SET is_current = 0 WHERE run_id = ?", (current.run_id,))
    # A fused start: the worker ran the task on a first event of this id and time, so the
    # start writes exactly that (a signal or update with the start is for the task to see).
    fused = first if req.signal is None and req.update is None else None
    if fused is not None:
        run_id, now = fused.run_id, fused.time
        tx.now = now
    else:
        run_id = new_run_id()
    admitted = True
    if req.concurrency_key is not None:
        limit = key_limit(tx, req.namespace, req.workflow_type)
        if limit is not None:
            held = admitted_count(tx, req.namespace, req.workflow_type, req.concurrency_key)
            admitted = held < limit  # else it waits, in start order, for a slot of its key
    run = insert_execution(
        tx,
        namespace=req.namespace,
        workflow_id=req.workflow_id,
        run_id=run_id,
        workflow_type=req.workflow_type,
        task_queue=req.task_queue,
        args=req.args,
        memo_json=dumps(req.memo),
        parent=(req.parent_workflow_id, req.parent_run_id, req.parent_seq, req.parent_close_policy),
        execution_deadline=now + req.execution_timeout if req.execution_timeout else None,
        run_timeout=req.run_timeout,
        priority=req.priority,
        concurrency_key=req.concurrency_key,
        admitted=admitted,
    )
    started = start_rules.start_workflow(req, run_id, now)
    claims = None
    done = None
    if fused is not None and admitted:
        done = _complete_task(tx, run, fused.completion, woken_by=started)
    else:
        if req.eager_worker_id and admitted and req.signal is None and req.update is None:
            claims = Claims(
                worker_id=req.eager_worker_id, workflow_task=True, build_id=req.eager_build_id
            )
        apply_transition(tx, run, started, claims)
    if req.request_id:
        conn.execute(
            "INSERT INTO requests (namespace, request_id, run_id, created) VALUES (?, ?, ?, ?)",
            (req.namespace, f"start:{req.request_id}", run_id, now),
        )
    lease = claims.workflow_lease if claims is not None else None
    return StartResult(run_id=run_id, started=True, workflow_lease=lease, completion=done)


def signal_workflow(
    tx: Tx,
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
            (namespace, f"signal:{request_id}"),
        ).fetchone()
        if seen:
            return
    run = find_run(tx, namespace, workflow_id, run_id)
    apply_transition(tx, run, request_rules.signal_workflow(run, name, args, tx.now))
    if request_id:
        conn.execute(
            "INSERT INTO requests (namespace, request_id, run_id, created) VALUES (?, ?, ?, ?)",
            (namespace, f"signal:{request_id}", run.run_id, tx.now),
        )


def external_request(
    tx: Tx,
    rule: Callable[[RunRecord, str, float], Transition],
    namespace: str,
    workflow_id: str,
    run_id: str | None,
    reason: str,
) -> None:
    run = find_run(tx, namespace, workflow_id, run_id)
    apply_transition(tx, run, rule(run, reason, tx.now))


def poll_workflow_tasks(
    tx: Tx,
    namespace: str,
    task_queue: str,
    worker_id: str,
    max_tasks: int,
    cached_upto: Callable[[str], int] | None,
    build_id: str = "",
) -> list[WorkflowTaskLease]:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        f"SELECT t.task_id, t.attempt, {RUN_COLUMNS_E} FROM tasks t "
        "JOIN executions e ON e.run_id = t.run_id WHERE t.kind = 'workflow' "
        "AND t.namespace = ? AND t.task_queue = ? AND t.lease_id IS NULL AND t.visible_at <= ? "
        "AND (t.sticky_worker IS NULL OR t.sticky_worker = ? OR t.sticky_until <= ?) "
        "AND (e.pinned_build_id IS NULL OR e.pinned_build_id = ?) AND e.admitted = 1 "
        f"ORDER BY t.priority DESC, t.visible_at, t.task_id LIMIT ?{tx.dialect.skip_locked}",
        (namespace, task_queue, now, worker_id, now, build_id, max_tasks),
    ).fetchall()
    leases = []
    for row in rows:
        task_id, attempt, run = row[0], row[1], run_from_row(row[2:])
        if tx.dialect.for_update:
            # Now that the row is locked, read it afresh: a row a writer committed while the
            # poll ran may come back from the poll's older snapshot.
            run = load_run(tx, run.run_id)
        lease_id = new_id()
        conn.execute(
            "UPDATE tasks SET lease_id = ?, lease_owner = ?, lease_expires = ? WHERE task_id = ?",
            (lease_id, worker_id, now + WORKFLOW_TASK_LEASE, task_id),
        )
        conn.execute("UPDATE executions SET wt_state = 2 WHERE run_id = ?", (run.run_id,))
        leases.append(workflow_lease(tx, run, task_id, lease_id, attempt, cached_upto))
    return leases


def _task_and_run(tx: Tx, task_id: int, task_columns: str) -> tuple[Any, RunRecord] | None:
    """A task's row (``task_columns`` of ``tasks t``) and its run's record, both locked.

    With several writers the run is locked first, then the task, the order every other
    operation takes them in (run, then the run's task rows); the other order deadlocks with
    a completion that deletes the run's tasks. SQLite, one writer, reads both with a join.
    """
    if tx.unlocked is not None:
        return _task_and_run_unlocked(tx, task_id, task_columns)
    if not tx.dialect.for_update:
        row = tx.conn.execute(
            f"SELECT {task_columns}, {RUN_COLUMNS_E} FROM tasks t "
            "JOIN executions e ON e.run_id = t.run_id WHERE t.task_id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        width = len(task_columns.split(","))
        return row[:width], run_from_row(row[width:])
    # One round trip: the run's row is read (and locked) in a materialized CTE, the outer side
    # of the join, before the lateral read locks the task. It also tells whether the namespace
    # has activity flow limits, which a step that schedules activities would read next.
    row = tx.conn.execute(
        f"WITH r AS MATERIALIZED (SELECT {RUN_COLUMNS} FROM executions "
        f"WHERE run_id = (SELECT run_id FROM tasks WHERE task_id = ?){tx.dialect.for_update}) "
        "SELECT r.*, EXISTS (SELECT 1 FROM flow_limits f WHERE f.namespace = r.namespace "
        "AND f.scope IN ('activity_type', 'task_queue')), k.* "
        f"FROM r LEFT JOIN LATERAL (SELECT true, {task_columns} FROM tasks t "
        f"WHERE t.task_id = ?{tx.dialect.for_update}) k ON true",
        (task_id, task_id),
    ).fetchone()
    if row is None:
        return None
    width = len(RUN_COLUMNS.split(","))
    run = run_from_row(row[:width])
    has_limits, found, task = row[width], row[width + 1], row[width + 2 :]
    if not has_limits:
        tx.shared[(NO_ACTIVITY_LIMITS, run.namespace)] = True
    return (task, run) if found else None


def _task_and_run_unlocked(tx: Tx, task_id: int, task_columns: str) -> tuple[Any, RunRecord] | None:
    """``_task_and_run`` without locks (``Tx.unlocked``): both rows' versions are kept for the
    one statement that writes the step. A namespace with activity flow limits needs locks, and
    so does a close that must do more than the statement does (``_MORE_AT_CLOSE``)."""
    unlocked = tx.unlocked
    assert unlocked is not None
    more_at_close = _MORE_AT_CLOSE if unlocked.closing else "false"
    row = tx.conn.execute(
        f"SELECT {task_columns}, t.kind, t.xmin, {RUN_COLUMNS_E}, e.xmin, "
        "EXISTS (SELECT 1 FROM flow_limits f WHERE f.namespace = e.namespace "
        f"AND f.scope IN ('activity_type', 'task_queue')), {more_at_close} "
        "FROM tasks t JOIN executions e ON e.run_id = t.run_id WHERE t.task_id = ?",
        (task_id,),
    ).fetchone()
    if row is None:
        return None
    if row[-2] or row[-1]:
        raise NeedsLocks()
    width = len(task_columns.split(","))
    run = run_from_row(row[width + 2 : -3])
    tx.shared[(NO_ACTIVITY_LIMITS, run.namespace)] = True
    unlocked.task_id, unlocked.task_kind, unlocked.task_version = (
        task_id,
        row[width],
        row[width + 1],
    )
    unlocked.run_version = row[-3]
    return row[:width], run


_MORE_AT_CLOSE = (
    "(EXISTS (SELECT 1 FROM executions c WHERE c.parent_run_id = e.run_id "
    "AND c.status = 'Running' AND COALESCE(c.parent_close_policy, 'terminate') <> 'abandon') "
    "OR EXISTS (SELECT 1 FROM queries q WHERE q.run_id = e.run_id AND q.update_id IS NOT NULL "
    "AND q.kind = 'update' AND q.done = 2))"
)
"""Whether closing the run must also end its children or fail its accepted updates: work the
one statement does not do. Both start only with a change of the run's row, which the
statement's guard sees, so a run found without them still has none when it closes."""


def _leased_run(tx: Tx, lease: WorkflowTaskLease) -> RunRecord:
    """The run of a workflow task, if ``lease`` still holds the task (fencing)."""
    found = _task_and_run(tx, lease.task_id, "t.lease_id")
    if found is None or found[0][0] != lease.lease_id:
        raise LeaseLostError(f"workflow task of run {lease.run_id}")
    return found[1]


def complete_workflow_task(
    tx: Tx, lease: WorkflowTaskLease, completion: WorkflowTaskCompletion
) -> CompletionResult:
    _note_closing(tx, completion)
    return _complete_task(tx, _leased_run(tx, lease), completion)


def _new_run_id_if_continued(completion: WorkflowTaskCompletion) -> str:
    """The next run's id, drawn only for a task that continues as new (not on every step)."""
    continued = any(isinstance(c, ContinueAsNew) for c in completion.commands)
    return new_run_id() if continued else ""


def _complete_task(
    tx: Tx,
    run: RunRecord,
    completion: WorkflowTaskCompletion,
    woken_by: Transition | None = None,
) -> CompletionResult:
    """Append a workflow task's completion and carry out its commands.

    ``woken_by``: what woke the task, not yet written (the fused paths: an activity's result,
    or the run's start); its events go first, its activity task is deleted and its timers and
    search attributes are set, in the same single update of the run.
    """
    first = run.next_event_id
    t = wt_rules.complete_workflow_task(
        run,
        completion.commands,
        has_buffered=run.has_buffered,
        workflow_time=completion.workflow_time,
        now=tx.now,
        identity=completion.identity,
        build_id=completion.build_id,
        history_size=completion.history_size,
        new_run_id=_new_run_id_if_continued(completion),
    )
    if woken_by is not None:
        t.append[:0] = woken_by.append
        t.delete_activities[:0] = woken_by.delete_activities
        t.start_timers[:0] = woken_by.start_timers
        t.search_attributes = {**woken_by.search_attributes, **t.search_attributes}
    if tx.unlocked is not None and _build_change(run, completion) is not None:
        raise NeedsLocks()
    claims = Claims(
        worker_id=completion.worker_id,
        activity_queue=completion.eager_activity_queue,
        max_activities=completion.eager_activities,
    )
    sticky = completion.worker_id if completion.worker_id and t.rejected is None else None
    apply_transition(tx, run, t, claims, sticky_worker=sticky)
    if t.rejected is not None:
        return CompletionResult(accepted=False, reason=t.rejected)
    for child in t.start_children:
        _start_child(tx, run, child)
    for request in t.external_requests:
        _deliver_external(tx, run, request)
    _record_build(tx, run, completion)
    return CompletionResult(
        accepted=True,
        last_event_id=first + len(t.append) - 1,
        activity_leases=claims.activity_leases,
        history_size=run.history_size,
    )


def _start_child(tx: Tx, parent: RunRecord, child: StartChildWorkflow) -> None:
    """Start a child run in the parent's transaction; the parent hears how it went."""
    req = StartRequest(
        namespace=parent.namespace,
        workflow_id=child.workflow_id,
        workflow_type=child.workflow_type,
        task_queue=child.task_queue,
        args=child.args,
        parent_workflow_id=parent.workflow_id,
        parent_run_id=parent.run_id,
        parent_seq=child.seq,
        parent_close_policy=child.parent_close_policy,
    )
    tx.conn.execute("SAVEPOINT child")
    try:
        started = _start(tx, req)
    except WorkflowAlreadyStartedError as e:
        tx.conn.execute("ROLLBACK TO child")
        tx.conn.execute("RELEASE child")
        t = child_rules.child_start_failed(parent, child.seq, child.workflow_id, str(e))
    else:
        tx.conn.execute("RELEASE child")
        t = child_rules.child_started(parent, child.seq, child.workflow_id, started.run_id)
    apply_transition(tx, parent, t)


def _deliver_external(
    tx: Tx, sender: RunRecord, request: SignalExternalWorkflow | RequestCancelExternalWorkflow
) -> None:
    """A workflow signals or cancels another: delivered now, the outcome told to the sender."""
    kind = "signal" if isinstance(request, SignalExternalWorkflow) else "cancel"
    error: str | None = None
    tx.conn.execute("SAVEPOINT external")
    try:
        target = find_run(tx, sender.namespace, request.workflow_id, request.run_id, nowait=True)
        if isinstance(request, SignalExternalWorkflow):
            rule = request_rules.signal_workflow(target, request.name, request.args, tx.now)
        else:
            reason = f"requested by workflow {sender.workflow_id}"
            rule = request_rules.request_cancel(target, reason, tx.now)
        apply_transition(tx, target, rule)
    except (WorkflowNotFoundError, WorkflowClosedError) as e:
        tx.conn.execute("ROLLBACK TO external")
        error = str(e)
    tx.conn.execute("RELEASE external")
    sender = load_run(tx, sender.run_id)  # the target may be the sender itself
    apply_transition(
        tx, sender, request_rules.external_request_done(sender, request.seq, kind, error)
    )


def _build_change(
    run: RunRecord, completion: WorkflowTaskCompletion
) -> tuple[list[str], bool] | None:
    """The run's build ids after this task and whether it pins them, if either changes."""
    build = completion.build_id
    new_build = bool(build) and build not in run.build_ids
    pin = completion.pin and run.pinned_build_id is None
    if not new_build and not pin:
        return None
    return ([*run.build_ids, build] if new_build else run.build_ids), pin


def _record_build(tx: Tx, run: RunRecord, completion: WorkflowTaskCompletion) -> None:
    """Remember which builds advanced the run, and pin a pinned workflow to its first build."""
    change = _build_change(run, completion)
    if change is None:
        return
    builds, pin = change
    build = completion.build_id
    tx.conn.execute(
        "UPDATE executions SET build_ids = ?, pinned_build_id = COALESCE(pinned_build_id, ?) "
        "WHERE run_id = ?",
        (dumps(builds), build if pin else None, run.run_id),
    )
    run.build_ids = builds


def fail_workflow_task(tx: Tx, lease: WorkflowTaskLease, failure: dict[str, Any]) -> None:
    run = _leased_run(tx, lease)
    apply_transition(tx, run, wt_rules.fail_workflow_task(run, failure, tx.now))
    tx.notes.add("timer")


_ACTIVITY_COLUMNS = (
    "t.task_id, t.run_id, t.seq, t.activity_type, t.attempt, t.retry_policy, t.scheduled_time, "
    "t.start_to_close_timeout, t.schedule_to_close_timeout, t.lease_id, t.started_time, "
    "t.heartbeat_timeout"
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
        started_time=row[10],
        heartbeat_timeout=row[11],
    )


def poll_activity_tasks(
    tx: Tx, namespace: str, task_queue: str, worker_id: str, max_tasks: int
) -> list[ActivityTaskLease]:
    conn, now = tx.conn, tx.now
    gate = tx.gate(namespace)  # locks the limits before any task row: the order all take
    rows = conn.execute(
        "SELECT t.task_id, t.run_id, t.seq, t.activity_type, t.args, t.attempt, "
        "t.scheduled_time, t.start_to_close_timeout, t.heartbeat_timeout, t.heartbeat_details, "
        "t.retry_policy, e.namespace, e.workflow_id, e.workflow_type, t.schedule_to_close_timeout "
        "FROM tasks t JOIN executions e ON e.run_id = t.run_id WHERE t.kind = 'activity' "
        "AND t.namespace = ? AND t.task_queue = ? AND t.lease_id IS NULL AND t.visible_at <= ? "
        "ORDER BY t.priority DESC, t.visible_at, t.task_id "
        f"LIMIT ?{tx.dialect.skip_locked_of('t')}",
        (namespace, task_queue, now, max_tasks * 4),  # room to pass over throttled types
    ).fetchall()
    leases: list[ActivityTaskLease] = []
    for row in rows:
        if len(leases) >= max_tasks:
            break
        if not gate.allow(row[3], task_queue):
            continue  # its type or queue is at its concurrency or rate limit
        start_to_close = row[7]
        expires = now + start_to_close
        if row[14]:
            expires = min(expires, row[6] + row[14])
        if row[8]:
            expires = min(expires, now + row[8])  # the first heartbeat is due by then
        lease_id = new_id()
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


def activity_outcome(
    tx: Tx,
    lease: ActivityTaskLease,
    ok: bool,
    value: Any,
    eager_worker_id: str | None,
    cached_upto: Callable[[str], int] | None,
    build_id: str = "",
) -> WorkflowTaskLease | None:
    return _record_outcome(
        tx,
        lease.task_id,
        lease.lease_id,
        _what(lease),
        ok,
        value,
        eager_worker_id,
        cached_upto,
        build_id,
    )


def complete_activity_and_task(
    tx: Tx,
    lease: ActivityTaskLease,
    result: Any,
    seen_upto: int,
    completion: WorkflowTaskCompletion,
    cached_upto: Callable[[str], int] | None,
) -> ActivityStep:
    """One transaction per step: the result, and the task the worker ran on it in memory.

    Fused only when the worker's view was the run's whole state: the result is the event
    right after ``seen_upto``, no workflow task is scheduled or running, nothing is buffered,
    and the run may run on the worker's build. The history is the same as the two-transaction
    path writes (result, then ``WorkflowTaskCompleted`` and the commands), so replay cannot
    tell them apart.
    """
    _note_closing(tx, completion)
    task, run = _leased_activity(tx, lease.task_id, lease.lease_id, _what(lease))
    t = activity_rules.complete_activity(run, task, result, tx.now)
    fused = (
        run.next_event_id == seen_upto + 1
        and run.wt_state == WorkflowTaskState.IDLE
        and not run.has_buffered
        and len(t.append) == 1
        and t.wt_state == WorkflowTaskState.SCHEDULED
        and run.pinned_build_id in (None, completion.build_id)
    )
    if not fused:
        wt = _apply_outcome(tx, run, t, completion.worker_id, cached_upto, completion.build_id)
        return ActivityStep(workflow_lease=wt)
    done = _complete_task(tx, run, completion, woken_by=t)
    _wake_limited_pollers(tx, run.namespace)
    return ActivityStep(completion=done)


_CLOSING_COMMANDS = (CompleteWorkflow, FailWorkflow, CancelWorkflow)
_ONE_STATEMENT_COMMANDS = (ScheduleActivity, StartTimer, RecordMarker, *_CLOSING_COMMANDS)


def may_fit_one_statement(completion: WorkflowTaskCompletion) -> bool:
    """Whether a step with this completion may write as one statement (``Unlocked``).

    A step that continues as new or reaches other runs never does: the store takes locks at
    once instead of reading twice. A close may (``tx.closes_in_one_statement``).
    """
    return all(isinstance(c, _ONE_STATEMENT_COMMANDS) for c in completion.commands)


def may_start_in_one_statement(req: StartRequest) -> bool:
    """Whether a start may write as one statement (``Unlocked.new_run``): a run with its first
    event and task only, nothing else in the transaction (no request id to record, no signal
    or update with it, no concurrency key to count, no search attributes to index)."""
    return (
        req.request_id is None
        and req.signal is None
        and req.update is None
        and req.concurrency_key is None
        and not req.search_attributes
        and req.parent_run_id is None
    )


def _note_closing(tx: Tx, completion: WorkflowTaskCompletion) -> None:
    """An unlocked step that may close the run has its read check what a close must also do."""
    if tx.unlocked is not None:
        tx.unlocked.closing = any(isinstance(c, _CLOSING_COMMANDS) for c in completion.commands)


def activity_outcome_by_token(tx: Tx, task_id: int, lease_id: str, ok: bool, value: Any) -> None:
    """Asynchronous completion: the outcome arrives from a client holding the task token."""
    _record_outcome(tx, task_id, lease_id, f"activity task {task_id}", ok, value, None, None)


def _record_outcome(
    tx: Tx,
    task_id: int,
    lease_id: str,
    what: str,
    ok: bool,
    value: Any,
    eager_worker_id: str | None,
    cached_upto: Callable[[str], int] | None,
    build_id: str = "",
) -> WorkflowTaskLease | None:
    now = tx.now
    task, run = _leased_activity(tx, task_id, lease_id, what)
    if ok:
        t = activity_rules.complete_activity(run, task, value, now)
    else:
        # The worker's own start_to_close timer: a timeout, recorded as TimedOut if final.
        timed_out = isinstance(value, dict) and value.get("type") == "TimeoutError"
        t = activity_rules.fail_activity(run, task, value, now, timed_out=timed_out)
    # The worker has this run cached: hand it the next workflow task in this transaction.
    return _apply_outcome(tx, run, t, eager_worker_id, cached_upto, build_id)


def _leased_activity(
    tx: Tx, task_id: int, lease_id: str, what: str
) -> tuple[ActivityTaskRecord, RunRecord]:
    """An activity task and its run, if ``lease_id`` still holds the task (fencing)."""
    found = _task_and_run(tx, task_id, _ACTIVITY_COLUMNS)
    if found is None or found[0][9] != lease_id:
        raise LeaseLostError(what)
    return _activity_record(found[0]), found[1]


def _what(lease: ActivityTaskLease) -> str:
    return f"activity {lease.activity_type!r} (seq {lease.seq}) of run {lease.run_id}"


def _apply_outcome(
    tx: Tx,
    run: RunRecord,
    t: Transition,
    eager_worker_id: str | None,
    cached_upto: Callable[[str], int] | None,
    build_id: str,
) -> WorkflowTaskLease | None:
    """Write an attempt's outcome; the run's next workflow task, leased to ``eager_worker_id``
    in this transaction when one is due."""
    claims = None
    if eager_worker_id is not None:
        claims = Claims(
            worker_id=eager_worker_id,
            workflow_task=True,
            build_id=build_id,
            cached_upto=cached_upto,
        )
    apply_transition(tx, run, t, claims)
    _wake_limited_pollers(tx, run.namespace)
    return claims.workflow_lease if claims is not None else None


def _wake_limited_pollers(tx: Tx, namespace: str) -> None:
    """An attempt ended: under flow limits a slot may have opened, so pollers look again."""
    if not _has_activity_limits(tx, namespace):
        return
    for (queue,) in tx.conn.execute(
        "SELECT DISTINCT task_queue FROM tasks WHERE namespace = ? AND kind = 'activity' "
        "AND lease_id IS NULL",
        (namespace,),
    ).fetchall():
        tx.notes.add(("activity", namespace, queue))


def _has_activity_limits(tx: Tx, namespace: str) -> bool:
    """Read without locking the limits (a poll would lock them): only decides a wake-up."""
    gate = tx.gates.get(namespace)
    if gate is not None:
        return bool(gate.limits)
    if (NO_ACTIVITY_LIMITS, namespace) in tx.shared:
        return False
    found = (
        tx.conn.execute(
            "SELECT 1 FROM flow_limits WHERE namespace = ? "
            "AND scope IN ('activity_type', 'task_queue') LIMIT 1",
            (namespace,),
        ).fetchone()
        is not None
    )
    if not found:
        tx.shared[(NO_ACTIVITY_LIMITS, namespace)] = True
    return found


def detach_activity(tx: Tx, task_id: int, lease_id: str) -> None:
    """The attempt will complete asynchronously: no worker owns it any more.

    Its lease still expires (start_to_close, heartbeat timeout), but a worker's death no longer
    releases it.
    """
    cur = tx.conn.execute(
        "UPDATE tasks SET lease_owner = NULL WHERE task_id = ? AND lease_id = ?",
        (task_id, lease_id),
    )
    if cur.rowcount != 1:
        raise LeaseLostError(f"activity task {task_id}")


def heartbeat_by_token(tx: Tx, task_id: int, lease_id: str, details: Any) -> bool:
    return _heartbeat(tx, task_id, lease_id, details)


def heartbeat_activity(tx: Tx, lease: ActivityTaskLease, details: Any) -> bool:
    return _heartbeat(tx, lease.task_id, lease.lease_id, details)


def _heartbeat(tx: Tx, task_id: int, lease_id: str, details: Any) -> bool:
    # With a heartbeat timeout, each heartbeat moves the lease's end to now + heartbeat_timeout,
    # never past start_to_close or schedule_to_close.
    cur = tx.conn.execute(
        "UPDATE tasks SET heartbeat_details = ?, lease_expires = CASE "
        "WHEN heartbeat_timeout IS NULL THEN lease_expires "
        "ELSE LEAST(started_time + start_to_close_timeout, ? + heartbeat_timeout, "
        "COALESCE(scheduled_time + schedule_to_close_timeout, 1e18)) END "
        "WHERE task_id = ? AND lease_id = ?",
        (dumps(details), tx.now, task_id, lease_id),
    )
    return cur.rowcount == 1


def fire_due_timers(tx: Tx, limit: int) -> int:
    conn, now = tx.conn, tx.now
    # With several writers: runs another transaction holds are left for later, and a timer
    # is fired only if it still exists once its run is locked (its run may have moved on).
    rows = conn.execute(
        "SELECT t.run_id, t.seq FROM timers t JOIN executions e ON e.run_id = t.run_id "
        f"WHERE t.fire_at <= ? ORDER BY t.fire_at LIMIT ?{tx.dialect.skip_locked_of('e')}",
        (now, limit),
    ).fetchall()
    for run_id, seq in rows:
        run = load_run(tx, run_id)
        if tx.dialect.for_update and not _timer_exists(tx, run_id, seq):
            continue
        apply_transition(tx, run, timer_rules.fire_timer(run, seq, now))
    fired_schedules = fire_due_schedules(tx)
    # Activity retries whose backoff ended are due work too: wake the activity pollers.
    # (Also tasks held back by a flow limit whose budget may have refilled.)
    due = conn.execute(
        "SELECT DISTINCT namespace, task_queue FROM tasks WHERE kind = 'activity' "
        "AND lease_id IS NULL AND visible_at <= ? AND (attempt > 1 OR EXISTS "
        "(SELECT 1 FROM flow_limits f WHERE f.namespace = tasks.namespace))",
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
    return len(rows) + fired_schedules


def _timer_exists(tx: Tx, run_id: str, seq: int) -> bool:
    row = tx.conn.execute("SELECT 1 FROM timers WHERE run_id = ? AND seq = ?", (run_id, seq))
    return row.fetchone() is not None


def next_timer_time(tx: Tx) -> float | None:
    """The earliest moment something becomes due: a timer, a retry, a sticky timeout."""
    now = tx.now
    t1 = tx.conn.execute("SELECT MIN(fire_at) FROM timers").fetchone()[0]
    t2 = tx.conn.execute(
        "SELECT MIN(visible_at) FROM tasks WHERE lease_id IS NULL AND visible_at > ?", (now,)
    ).fetchone()[0]
    t3 = tx.conn.execute(
        "SELECT MIN(sticky_until) FROM tasks WHERE lease_id IS NULL AND sticky_until > ?", (now,)
    ).fetchone()[0]
    t4 = tx.conn.execute("SELECT MIN(next_fire_at) FROM schedules WHERE paused = 0").fetchone()[0]
    # When a rate-limited budget holds a whole token again.
    t5 = tx.conn.execute(
        "SELECT MIN(refilled_at + (1.0 - tokens) / rate) FROM flow_limits "
        "WHERE rate > 0 AND tokens < 1.0 AND refilled_at + (1.0 - tokens) / rate > ?",
        (now,),
    ).fetchone()[0]
    candidates = [t for t in (t1, t2, t3, t4, t5) if t is not None]
    return min(candidates) if candidates else None


def pending_work(tx: Tx) -> tuple[int, float | None]:
    """How much work can run now, and when the next becomes due (``next_timer_time``).

    The count covers tasks that are leased or visible and timers already due. Zero means every
    run waits on a timer, a retry backoff or something from outside (a signal), so a test clock
    may jump to the second value without skipping over any work (duro.testing's time skipping).
    """
    now = tx.now
    tasks = tx.conn.execute(
        "SELECT COUNT(*) FROM tasks WHERE lease_id IS NOT NULL OR visible_at <= ?", (now,)
    ).fetchone()[0]
    timers = tx.conn.execute("SELECT COUNT(*) FROM timers WHERE fire_at <= ?", (now,)).fetchone()[0]
    schedules = tx.conn.execute(
        "SELECT COUNT(*) FROM schedules WHERE paused = 0 AND next_fire_at <= ?", (now,)
    ).fetchone()[0]
    return int(tasks) + int(timers) + int(schedules), next_timer_time(tx)


def submit_query(
    tx: Tx, namespace: str, workflow_id: str, run_id: str | None, name: str, args: list[Any]
) -> int:
    run = find_run(tx, namespace, workflow_id, run_id)
    row = tx.conn.execute(
        "INSERT INTO queries (namespace, task_queue, run_id, workflow_type, name, args, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING query_id",
        (namespace, run.task_queue, run.run_id, run.workflow_type, name, dumps(args), tx.now),
    ).fetchone()
    tx.notes.add(("query", namespace, run.task_queue))
    return int(row[0])


def submit_update(
    tx: Tx,
    namespace: str,
    workflow_id: str,
    run_id: str | None,
    name: str,
    args: list[Any],
    update_id: str,
) -> int:
    """Queue an update for validation by a worker; the same update id twice is one update."""
    run = find_run(tx, namespace, workflow_id, run_id)
    existing = tx.conn.execute(
        "SELECT query_id FROM queries WHERE run_id = ? AND update_id = ?", (run.run_id, update_id)
    ).fetchone()
    if existing is not None:
        return int(existing[0])
    if run.status != RunStatus.RUNNING:
        raise WorkflowClosedError(run.workflow_id, run.run_id, run.status.value)
    row = tx.conn.execute(
        "INSERT INTO queries (namespace, task_queue, run_id, workflow_type, name, args, created, "
        "kind, update_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'update', ?) RETURNING query_id",
        (
            namespace,
            run.task_queue,
            run.run_id,
            run.workflow_type,
            name,
            dumps(args),
            tx.now,
            update_id,
        ),
    ).fetchone()
    tx.notes.add(("query", namespace, run.task_queue))
    return int(row[0])


def accept_update(tx: Tx, query_id: int, lease_id: str) -> None:
    """The validator passed: the update enters history (done = 2 until its handler returns)."""
    row = tx.conn.execute(
        "SELECT run_id, update_id, name, args FROM queries WHERE query_id = ? AND lease_id = ? "
        f"AND done = 0{tx.dialect.for_update}",
        (query_id, lease_id),
    ).fetchone()
    if row is None:
        raise LeaseLostError(f"update request {query_id}")
    run = load_run(tx, row[0])
    apply_transition(
        tx, run, request_rules.accept_update(run, row[1], row[2], loads(row[3]), tx.now)
    )
    tx.conn.execute("UPDATE queries SET done = 2 WHERE query_id = ?", (query_id,))


def poll_queries(
    tx: Tx, namespace: str, task_queue: str, worker_id: str, max_tasks: int
) -> list[QueryTask]:
    conn, now = tx.conn, tx.now
    rows = conn.execute(
        "SELECT query_id, run_id, workflow_type, name, args, kind, update_id FROM queries "
        "WHERE namespace = ? AND task_queue = ? AND done = 0 "
        f"AND (lease_id IS NULL OR lease_expires <= ?) ORDER BY query_id LIMIT ?"
        f"{tx.dialect.skip_locked}",
        (namespace, task_queue, now, max_tasks),
    ).fetchall()
    out = []
    for qid, run_id, wtype, name, args, kind, update_id in rows:
        lease_id = new_id()
        conn.execute(
            "UPDATE queries SET lease_id = ?, lease_owner = ?, lease_expires = ? "
            "WHERE query_id = ?",
            (lease_id, worker_id, now + QUERY_LEASE, qid),
        )
        out.append(QueryTask(qid, lease_id, run_id, wtype, name, loads(args), kind, update_id))
    return out


def answer_query(tx: Tx, query_id: int, lease_id: str, result: Any, error: str | None) -> None:
    tx.conn.execute(
        "UPDATE queries SET done = 1, result = ?, error = ? WHERE query_id = ? AND lease_id = ? "
        "AND done = 0",
        (dumps(result), error, query_id, lease_id),
    )
    tx.notes.add(("query_done", query_id))


def take_query_outcome(tx: Tx, query_id: int) -> QueryOutcome:
    row = tx.conn.execute(
        "SELECT done, result, error, kind FROM queries WHERE query_id = ?", (query_id,)
    ).fetchone()
    if row is None:
        return QueryOutcome(done=True, error="query was dropped")
    if row[0] != 1:  # 0: waiting for a worker; 2: update accepted, handler running
        return QueryOutcome(done=False)
    if row[3] == "query":
        # Update rows stay: a retried execute_update with the same id gets the same outcome.
        tx.conn.execute("DELETE FROM queries WHERE query_id = ?", (query_id,))
    return QueryOutcome(done=True, result=loads(row[1]), error=row[2])


def register_worker(
    tx: Tx,
    worker_id: str,
    namespace: str,
    task_queue: str,
    identity: str,
    workflow_types: dict[str, dict[str, list[str]]],
) -> None:
    conn, now = tx.conn, tx.now
    conn.execute(
        "INSERT INTO workers (worker_id, namespace, task_queue, identity, started_at, "
        "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
        "namespace = excluded.namespace, task_queue = excluded.task_queue, "
        "identity = excluded.identity, started_at = excluded.started_at, "
        "heartbeat_at = excluded.heartbeat_at",
        (worker_id, namespace, task_queue, identity, now, now),
    )
    conn.executemany(
        "INSERT INTO workflow_types (namespace, task_queue, workflow_type, handlers, "
        "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, task_queue, workflow_type) "
        "DO UPDATE SET handlers = excluded.handlers, updated_at = excluded.updated_at",
        [(namespace, task_queue, name, dumps(h), now) for name, h in workflow_types.items()],
    )


def heartbeat_worker(tx: Tx, worker_id: str) -> bool:
    """False when the worker's row is gone: another worker took it for dead and reaped it."""
    cur = tx.conn.execute(
        "UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (tx.now, worker_id)
    )
    return cur.rowcount == 1


def _release_leases(tx: Tx, rows: list[tuple[Any, ...]], result: ReapResult, *, lost: bool) -> None:
    """Hand leased tasks back: workflow tasks at once; activity attempts fail (worker lost,
    retried at once) or time out (lease expired, retried per policy)."""
    for row in rows:
        kind, rest = row[0], row[1:]
        run = load_run(tx, rest[1])
        if tx.dialect.for_update and not _still_leased(tx, rest[0], rest[9], expired=not lost):
            continue  # settled (or extended) by another transaction since the read
        if kind == "workflow":
            apply_transition(tx, run, wt_rules.release_workflow_task(run, tx.now))
            result.released_workflow_tasks += 1
            continue
        task = _activity_record(rest)
        rule = activity_rules.worker_lost if lost else activity_rules.expire_activity
        apply_transition(tx, run, rule(run, task, tx.now))
        tx.notes.add(("activity", run.namespace, run.task_queue))
        result.released_activities += 1


def _still_leased(tx: Tx, task_id: int, lease_id: str | None, *, expired: bool) -> bool:
    """The task still has this lease (and, if ``expired``, it has not been extended since)."""
    row = tx.conn.execute(
        f"SELECT lease_id, lease_expires FROM tasks WHERE task_id = ?{tx.dialect.for_update}",
        (task_id,),
    ).fetchone()
    if row is None or row[0] != lease_id:
        return False
    return not expired or (row[1] is not None and row[1] <= tx.now)


def _release_worker(tx: Tx, worker_id: str, result: ReapResult) -> None:
    """Hand every lease of ``worker_id`` to others at once and forget its sticky runs."""
    conn = tx.conn
    conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
    rows = conn.execute(
        f"SELECT t.kind, {_ACTIVITY_COLUMNS} FROM tasks t WHERE t.lease_owner = ? "
        "AND t.lease_id IS NOT NULL",
        (worker_id,),
    ).fetchall()
    _release_leases(tx, rows, result, lost=True)
    conn.execute("UPDATE executions SET sticky_worker = NULL WHERE sticky_worker = ?", (worker_id,))
    conn.execute(
        "UPDATE tasks SET sticky_worker = NULL, sticky_until = NULL WHERE sticky_worker = ?",
        (worker_id,),
    )
    conn.execute(
        "UPDATE queries SET lease_id = NULL, lease_owner = NULL WHERE lease_owner = ? AND done = 0",
        (worker_id,),
    )


def unregister_worker(tx: Tx, worker_id: str) -> None:
    _release_worker(tx, worker_id, ReapResult())
    tx.notes.add("timer")


def reap_workers(tx: Tx, liveness_timeout: float) -> ReapResult:
    conn, now = tx.conn, tx.now
    result = ReapResult()
    dead = [
        r[0]
        for r in conn.execute(
            "SELECT worker_id FROM workers WHERE heartbeat_at < ?", (now - liveness_timeout,)
        ).fetchall()
    ]
    for worker_id in dead:
        # Still silent now that its row is taken? (A heartbeat may have landed since the read.)
        if (
            tx.dialect.for_update
            and not conn.execute(
                "SELECT 1 FROM workers WHERE worker_id = ? AND heartbeat_at < ?"
                f"{tx.dialect.for_update}",
                (worker_id, now - liveness_timeout),
            ).fetchone()
        ):
            continue
        _release_worker(tx, worker_id, result)
        result.dead_workers.append(worker_id)
    # Leases held by workers that never registered or that outlived their timeout.
    expired = conn.execute(
        f"SELECT t.kind, {_ACTIVITY_COLUMNS} FROM tasks t WHERE t.lease_id IS NOT NULL "
        "AND t.lease_expires <= ?",
        (now,),
    ).fetchall()
    _release_leases(tx, expired, result, lost=False)
    # Attempts no worker picked up within their schedule_to_start timeout.
    waiting = conn.execute(
        f"SELECT {_ACTIVITY_COLUMNS} FROM tasks t WHERE t.kind = 'activity' "
        "AND t.lease_id IS NULL AND t.schedule_to_start_timeout IS NOT NULL "
        "AND t.visible_at + t.schedule_to_start_timeout <= ?",
        (now,),
    ).fetchall()
    for row in waiting:
        run = load_run(tx, row[1])
        if tx.dialect.for_update and not _still_waiting(tx, row[0], row[4]):
            continue
        apply_transition(
            tx, run, activity_rules.schedule_to_start_expired(run, _activity_record(row), now)
        )
        result.released_activities += 1
    if dead or expired or waiting:
        tx.notes.add("timer")
    return result


def _still_waiting(tx: Tx, task_id: int, attempt: int) -> bool:
    row = tx.conn.execute(
        "SELECT 1 FROM tasks WHERE task_id = ? AND attempt = ? AND lease_id IS NULL"
        + tx.dialect.for_update,
        (task_id, attempt),
    ).fetchone()
    return row is not None


def type_handlers(tx: Tx, namespace: str, workflow_type: str) -> dict[str, list[str]] | None:
    row = tx.conn.execute(
        "SELECT handlers FROM workflow_types WHERE namespace = ? AND workflow_type = ? "
        "ORDER BY updated_at DESC LIMIT 1",
        (namespace, workflow_type),
    ).fetchone()
    return loads(row[0]) if row else None


def known_types(tx: Tx, namespace: str, task_queue: str) -> list[str] | None:
    rows = tx.conn.execute(
        "SELECT workflow_type FROM workflow_types WHERE namespace = ? AND task_queue = ?",
        (namespace, task_queue),
    ).fetchall()
    return [r[0] for r in rows] if rows else None


_INFO_COLUMNS = (
    "namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time, close_time, "
    "next_event_id, args, result, failure, memo, wt_attempt, wt_failure, build_ids, "
    "pinned_build_id, parent_workflow_id, parent_run_id"
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
        build_ids=loads(row[15]) or [],
        pinned_build_id=row[16],
        parent_workflow_id=row[17],
        parent_run_id=row[18],
    )


def run_outcome(tx: Tx, namespace: str, workflow_id: str, run_id: str | None) -> RunOutcome:
    columns = "workflow_id, run_id, status, result, failure"
    if run_id:
        row = tx.conn.execute(
            f"SELECT {columns} FROM executions WHERE run_id = ? AND namespace = ? "
            "AND workflow_id = ?",
            (run_id, namespace, workflow_id),
        ).fetchone()
    else:
        row = tx.conn.execute(
            f"SELECT {columns} FROM executions WHERE namespace = ? AND workflow_id = ? "
            "AND is_current = 1",
            (namespace, workflow_id),
        ).fetchone()
    if row is None:
        raise WorkflowNotFoundError(workflow_id, run_id)
    return RunOutcome(row[0], row[1], RunStatus(row[2]), loads(row[3]), loads(row[4]))


def resolve_run(tx: Tx, namespace: str, workflow_id: str, run_id: str | None) -> str:
    return find_run(tx, namespace, workflow_id, run_id).run_id


def describe_run(tx: Tx, namespace: str, workflow_id: str, run_id: str | None) -> ExecutionInfo:
    conn, now = tx.conn, tx.now
    run = find_run(tx, namespace, workflow_id, run_id)
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
    info.children = [
        (r[0], r[1], RunStatus(r[2]))
        for r in conn.execute(
            "SELECT workflow_id, run_id, status FROM executions WHERE parent_run_id = ? "
            "ORDER BY start_time, parent_seq",
            (run.run_id,),
        ).fetchall()
    ]
    info.search_attributes = {
        r[0]: search_attributes.decode(r[1], r[2])
        for r in conn.execute(
            "SELECT name, str_value, num_value FROM search_attributes WHERE run_id = ? "
            "ORDER BY name",
            (run.run_id,),
        ).fetchall()
    }
    info.pending_timers = [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT seq, fire_at FROM timers WHERE run_id = ? ORDER BY fire_at", (run.run_id,)
        ).fetchall()
    ]
    return info


_QUERY_COLUMNS = {
    "WorkflowType": "workflow_type",
    "WorkflowId": "workflow_id",
    "RunId": "run_id",
    "TaskQueue": "task_queue",
    "Status": "status",
    "StartTime": "start_time",
    "CloseTime": "close_time",
}
_QUERY_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _where(cond: Condition, params: list[Any]) -> str:
    """SQL for a parsed visibility condition; values are always bound parameters."""
    if isinstance(cond, Compare) and cond.custom:
        column = "num_value" if isinstance(cond.value, float) else "str_value"
        params += [cond.field, cond.value]
        return (
            "run_id IN (SELECT sa.run_id FROM search_attributes sa WHERE sa.namespace = "
            f"executions.namespace AND sa.name = ? AND sa.{column} {_QUERY_OPS[cond.op]} ?)"
        )
    if isinstance(cond, Compare):
        params.append(cond.value)
        return f"{_QUERY_COLUMNS[cond.field]} {_QUERY_OPS[cond.op]} ?"
    if isinstance(cond, And):
        return "(" + " AND ".join(_where(c, params) for c in cond.parts) + ")"
    if isinstance(cond, Or):
        return "(" + " OR ".join(_where(c, params) for c in cond.parts) + ")"
    return f"NOT {_where(cond.part, params)}"


SYSTEM_SEARCH_ATTRIBUTES = frozenset({"ScheduleId"})
"""Attributes duro sets itself: always queryable, even before any run has one."""


def _custom_names(cond: Condition) -> set[str]:
    if isinstance(cond, Compare):
        return {cond.field} if cond.custom else set()
    if isinstance(cond, Not):
        return _custom_names(cond.part)
    return set().union(*(_custom_names(c) for c in cond.parts))


def _check_attribute_names(tx: Tx, namespace: str, cond: Condition) -> None:
    """A name that is neither a field nor a search attribute in use is most likely a typo."""
    names = _custom_names(cond)
    if not names:
        return
    known = SYSTEM_SEARCH_ATTRIBUTES | set(search_attribute_names(tx, namespace))
    unknown = sorted(names - known)
    if unknown:
        raise QuerySyntaxError(
            f"unknown field {unknown[0]!r}: not a built-in field ({', '.join(FIELDS)}) nor a "
            f"search attribute of this namespace ({', '.join(sorted(known)) or 'none'}); "
            "register a name before any run sets it with client.register_search_attributes"
        )


def search_attribute_names(tx: Tx, namespace: str) -> list[str]:
    """Names set by any run of the namespace (ever) or registered ahead of use."""
    rows = tx.conn.execute(
        "SELECT name FROM search_attribute_names WHERE namespace = ? ORDER BY name", (namespace,)
    ).fetchall()
    return [r[0] for r in rows]


def register_search_attributes(tx: Tx, namespace: str, names: list[str]) -> None:
    tx.conn.executemany(
        "INSERT INTO search_attribute_names (namespace, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(namespace, name) for name in names],
    )


def count_workflows(tx: Tx, namespace: str, query: Query | None) -> int:
    where, params = "namespace = ?", [namespace]
    if query is not None and query.where is not None:
        _check_attribute_names(tx, namespace, query.where)
        where += " AND " + _where(query.where, params)
    row = tx.conn.execute(f"SELECT COUNT(*) FROM executions WHERE {where}", params).fetchone()
    return int(row[0])


def list_workflows(
    tx: Tx,
    namespace: str,
    workflow_type: str | None,
    status: RunStatus | None,
    workflow_id: str | None,
    limit: int,
    query: Query | None = None,
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
    order = "start_time DESC"
    if query is not None:
        if query.where is not None:
            _check_attribute_names(tx, namespace, query.where)
            where.append(_where(query.where, params))
        order = f"{_QUERY_COLUMNS[query.order_by]} {'DESC' if query.descending else 'ASC'}"
    rows = tx.conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM executions WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_info_from_row(r) for r in rows]


DEFAULT_RETENTION = 30 * 24 * 3600.0


def namespace_settings(tx: Tx, namespace: str) -> NamespaceSettings:
    row = tx.conn.execute(
        "SELECT retention_seconds, archive_dir FROM namespaces WHERE namespace = ?", (namespace,)
    ).fetchone()
    if row is None:
        return NamespaceSettings(namespace, DEFAULT_RETENTION, None)
    return NamespaceSettings(namespace, row[0], row[1])


def set_namespace_settings(tx: Tx, settings: NamespaceSettings) -> None:
    tx.conn.execute(
        "INSERT INTO namespaces (namespace, retention_seconds, archive_dir, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET "
        "retention_seconds = excluded.retention_seconds, archive_dir = excluded.archive_dir, "
        "updated_at = excluded.updated_at",
        (settings.namespace, settings.retention_seconds, settings.archive_dir, tx.now),
    )


def expired_runs(tx: Tx, namespace: str, retention: float, limit: int) -> list[str]:
    """Closed runs whose close is older than the retention period, oldest first."""
    rows = tx.conn.execute(
        "SELECT run_id FROM executions WHERE namespace = ? AND close_time IS NOT NULL "
        "AND close_time < ? ORDER BY close_time LIMIT ?",
        (namespace, tx.now - retention, limit),
    ).fetchall()
    return [r[0] for r in rows]


def delete_runs(tx: Tx, run_ids: list[str]) -> int:
    """Delete closed runs and everything stored for them (open runs are never touched)."""
    deleted = 0
    for run_id in run_ids:
        cur = tx.conn.execute(
            "DELETE FROM executions WHERE run_id = ? AND close_time IS NOT NULL", (run_id,)
        )
        if cur.rowcount:
            deleted += 1
            for table in (
                "history",
                "buffered_events",
                "tasks",
                "timers",
                "queries",
                "search_attributes",
            ):
                tx.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
    return deleted


# -- schedules ------------------------------------------------------------------------------------

_SCHEDULE_COLUMNS = (
    "namespace, schedule_id, spec, action, overlap, catchup_window, paused, note, next_nominal, "
    "next_fire_at, buffered_nominal, last_workflow_id, last_nominal, fired, skipped, created"
)


def _schedule_from_row(row: tuple[Any, ...]) -> ScheduleInfo:
    return ScheduleInfo(
        namespace=row[0],
        schedule_id=row[1],
        spec=sched.ScheduleSpec.from_dict(loads(row[2])),
        action=sched.ScheduleAction.from_dict(loads(row[3])),
        overlap=sched.OverlapPolicy(row[4]),
        catchup_window=row[5],
        paused=bool(row[6]),
        note=row[7],
        next_nominal=row[8],
        next_fire_at=row[9],
        buffered_nominal=row[10],
        last_workflow_id=row[11],
        last_nominal=row[12],
        fired=row[13],
        skipped=row[14],
        created=row[15],
    )


def _load_schedule(tx: Tx, namespace: str, schedule_id: str) -> ScheduleInfo:
    row = tx.conn.execute(
        f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE namespace = ? AND schedule_id = ?"
        f"{tx.dialect.for_update}",
        (namespace, schedule_id),
    ).fetchone()
    if row is None:
        raise ScheduleError(f"schedule {schedule_id!r} not found in namespace {namespace!r}")
    return _schedule_from_row(row)


def _next_times(info: ScheduleInfo, after: float) -> tuple[float | None, float | None]:
    nominal = sched.next_after(info.spec, after)
    if nominal is None:
        return None, None
    return nominal, nominal + sched.jitter_delay(info.schedule_id, nominal, info.spec.jitter)


def create_schedule(tx: Tx, info: ScheduleInfo) -> None:
    exists = tx.conn.execute(
        "SELECT 1 FROM schedules WHERE namespace = ? AND schedule_id = ?",
        (info.namespace, info.schedule_id),
    ).fetchone()
    if exists:
        raise ScheduleError(f"schedule {info.schedule_id!r} already exists")
    nominal, fire_at = _next_times(info, tx.now)
    tx.conn.execute(
        f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0, 0, ?)",
        (
            info.namespace,
            info.schedule_id,
            dumps(info.spec.to_dict()),
            dumps(info.action.to_dict()),
            info.overlap.value,
            info.catchup_window,
            int(info.paused),
            info.note,
            nominal,
            fire_at,
            tx.now,
        ),
    )
    tx.notes.add("timer")


def describe_schedule(tx: Tx, namespace: str, schedule_id: str) -> ScheduleInfo:
    return _load_schedule(tx, namespace, schedule_id)


def list_schedules(tx: Tx, namespace: str) -> list[ScheduleInfo]:
    rows = tx.conn.execute(
        f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE namespace = ? ORDER BY schedule_id",
        (namespace,),
    ).fetchall()
    return [_schedule_from_row(r) for r in rows]


def pause_schedule(tx: Tx, namespace: str, schedule_id: str, paused: bool, note: str) -> None:
    info = _load_schedule(tx, namespace, schedule_id)
    nominal, fire_at = info.next_nominal, info.next_fire_at
    if not paused and info.paused:
        nominal, fire_at = _next_times(info, tx.now)  # times missed while paused are skipped
    tx.conn.execute(
        "UPDATE schedules SET paused = ?, note = ?, next_nominal = ?, next_fire_at = ? "
        "WHERE namespace = ? AND schedule_id = ?",
        (int(paused), note, nominal, fire_at, namespace, schedule_id),
    )
    tx.notes.add("timer")


def delete_schedule(tx: Tx, namespace: str, schedule_id: str) -> None:
    _load_schedule(tx, namespace, schedule_id)
    tx.conn.execute(
        "DELETE FROM schedules WHERE namespace = ? AND schedule_id = ?", (namespace, schedule_id)
    )


def trigger_schedule(tx: Tx, namespace: str, schedule_id: str) -> str:
    """Start the schedule's workflow now, outside its times; returns the workflow id."""
    info = _load_schedule(tx, namespace, schedule_id)
    return _start_scheduled(tx, info, tx.now) or ""


def backfill_schedule(
    tx: Tx, namespace: str, schedule_id: str, start: float, end: float
) -> list[str]:
    """Start the runs of every nominal time in ``[start, end]`` not started already."""
    info = _load_schedule(tx, namespace, schedule_id)
    started = []
    for nominal in sched.occurrences(info.spec, start, end):
        workflow_id = _start_scheduled(tx, info, nominal)
        if workflow_id:
            started.append(workflow_id)
    return started


def _start_scheduled(tx: Tx, info: ScheduleInfo, nominal: float) -> str | None:
    """Start the run of one nominal time; None if that time's run exists (never twice)."""
    action = info.action
    req = StartRequest(
        namespace=info.namespace,
        workflow_id=sched.workflow_id_for(info.schedule_id, nominal),
        workflow_type=action.workflow_type,
        task_queue=action.task_queue,
        args=action.args,
        request_id=f"schedule:{info.schedule_id}:{nominal!r}",
        search_attributes={"ScheduleId": info.schedule_id},
        id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,  # a time's id never runs twice
    )
    tx.conn.execute("SAVEPOINT scheduled")
    try:
        result = _start(tx, req)
    except WorkflowAlreadyStartedError:
        tx.conn.execute("ROLLBACK TO scheduled")
        tx.conn.execute("RELEASE scheduled")
        return None
    tx.conn.execute("RELEASE scheduled")
    if not result.started:
        return None
    tx.conn.execute(
        "UPDATE schedules SET last_workflow_id = ?, last_nominal = ?, fired = fired + 1 "
        "WHERE namespace = ? AND schedule_id = ?",
        (req.workflow_id, nominal, info.namespace, info.schedule_id),
    )
    info.last_workflow_id, info.last_nominal = req.workflow_id, nominal
    return req.workflow_id


def _previous_open(tx: Tx, info: ScheduleInfo) -> RunRecord | None:
    if info.last_workflow_id is None:
        return None
    row = tx.conn.execute(
        f"SELECT {RUN_COLUMNS} FROM executions WHERE namespace = ? AND workflow_id = ? "
        f"AND is_current = 1 AND status = 'Running'{tx.dialect.for_update}",
        (info.namespace, info.last_workflow_id),
    ).fetchone()
    if row is None and tx.dialect.for_update:
        raise_if_current_moved(tx, info.namespace, info.last_workflow_id, running_only=True)
    return run_from_row(row) if row else None


def fire_due_schedules(tx: Tx, limit: int = 100) -> int:
    """Fire every due nominal time (and buffered ones whose open run closed)."""
    now = tx.now
    rows = tx.conn.execute(
        f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 AND "
        f"(next_fire_at <= ? OR buffered_nominal IS NOT NULL) LIMIT ?{tx.dialect.skip_locked}",
        (now, limit),
    ).fetchall()
    fired = 0
    for row in rows:
        info = _schedule_from_row(row)
        if info.buffered_nominal is not None and _previous_open(tx, info) is None:
            if _start_scheduled(tx, info, info.buffered_nominal):
                fired += 1
            info.buffered_nominal = None
        steps = 0
        while (
            info.next_nominal is not None
            and info.next_fire_at is not None
            and info.next_fire_at <= now
            and steps < limit
        ):
            steps += 1
            nominal = info.next_nominal
            if nominal < now - info.catchup_window:
                info.skipped += 1  # missed too long ago (the system was down)
            else:
                previous = _previous_open(tx, info)
                decision = sched.decide_fire(info.overlap, previous is not None)
                if decision == sched.FireAction.CANCEL_AND_START and previous is not None:
                    reason = f"schedule {info.schedule_id} started a newer run"
                    apply_transition(
                        tx, previous, request_rules.request_cancel(previous, reason, now)
                    )
                if decision in (sched.FireAction.START, sched.FireAction.CANCEL_AND_START):
                    if _start_scheduled(tx, info, nominal):
                        fired += 1
                elif decision == sched.FireAction.BUFFER and info.buffered_nominal is None:
                    info.buffered_nominal = nominal
                else:
                    info.skipped += 1
            info.next_nominal, info.next_fire_at = _next_times(info, nominal)
        tx.conn.execute(
            "UPDATE schedules SET next_nominal = ?, next_fire_at = ?, buffered_nominal = ?, "
            "skipped = ? WHERE namespace = ? AND schedule_id = ?",
            (
                info.next_nominal,
                info.next_fire_at,
                info.buffered_nominal,
                info.skipped,
                info.namespace,
                info.schedule_id,
            ),
        )
    return fired


# -- reset and fork --------------------------------------------------------------------------------


def reset_workflow(
    tx: Tx,
    namespace: str,
    workflow_id: str,
    run_id: str | None,
    point: int | str,
    reason: str,
    reapply_signals: bool,
    fork_id: str | None,
) -> str:
    """A new run from ``point`` of an old one (same workflow id, or ``fork_id`` for a fork).

    A reset terminates the old run if it is still running; a fork leaves it alone. Returns the
    new run id.
    """
    conn, now = tx.conn, tx.now
    old = find_run(tx, namespace, workflow_id, run_id)
    events = get_history(tx, old.run_id, 0)
    try:
        at = reset_rules.resolve_point(events, point)
        plan = reset_rules.plan_reset(events, at, reapply_signals=reapply_signals)
    except reset_rules.ResetError as e:
        raise ResetFailedError(str(e)) from None
    next_run_id = new_run_id()
    target_id = fork_id or workflow_id
    if fork_id is not None:
        current = conn.execute(
            f"SELECT {RUN_COLUMNS} FROM executions WHERE namespace = ? AND workflow_id = ? "
            f"AND is_current = 1{tx.dialect.for_update}",
            (namespace, fork_id),
        ).fetchone()
        if current is not None:
            existing = run_from_row(current)
            start_rules.decide_start(
                StartRequest(namespace, fork_id, old.workflow_type, old.task_queue, []), existing
            )
            conn.execute(
                "UPDATE executions SET is_current = 0 WHERE run_id = ?", (existing.run_id,)
            )
    else:
        # The run reset goes away if it still runs, and so does the id's current run when the
        # reset names an older one: one run of a workflow id runs at a time.
        why = f"reset to run {next_run_id} at event {at}" + (f": {reason}" if reason else "")
        running = [old] if old.status == RunStatus.RUNNING else []
        try:
            current = find_run(tx, namespace, workflow_id, None, nowait=True)
        except WorkflowNotFoundError:
            current = None
        if (
            current is not None
            and current.run_id != old.run_id
            and current.status == RunStatus.RUNNING
        ):
            running.append(current)
        for run in running:
            apply_transition(tx, run, request_rules.terminate(run, why, now))
        conn.execute(
            "UPDATE executions SET is_current = 0 WHERE namespace = ? AND workflow_id = ? "
            "AND is_current = 1",
            (namespace, workflow_id),
        )
    started = events[0]
    # Memo and search attributes as they stood at the reset point (not the old run's last).
    memo: dict[str, Any] = dict(started.attrs.get("memo") or {})
    attributes: dict[str, Any] = dict(started.attrs.get("search_attributes") or {})
    for event in plan.prefix[1:]:
        if event.type == EventType.WORKFLOW_PROPERTIES_MODIFIED:
            memo.update(event.attrs.get("memo") or {})
        elif event.type == EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            attributes.update(event.attrs.get("search_attributes") or {})
    memo = {k: v for k, v in memo.items() if v is not None}
    run = insert_execution(
        tx,
        namespace=namespace,
        workflow_id=target_id,
        run_id=next_run_id,
        workflow_type=old.workflow_type,
        task_queue=old.task_queue,
        args=started.attrs.get("args", []),
        memo_json=dumps(memo) if memo else None,
    )
    copied = [
        NewEvent(
            started.type,
            {**started.attrs, "run_id": next_run_id, "workflow_id": target_id},
        ),
        *(NewEvent(e.type, e.attrs) for e in plan.prefix[1:]),
        NewEvent(
            EventType.WORKFLOW_EXECUTION_RESET,
            {
                "from_workflow_id": workflow_id,
                "from_run_id": old.run_id,
                "event_id": at,
                "reason": reason,
                "fork": fork_id is not None,
            },
        ),
        *(NewEvent(e.type, e.attrs) for e in plan.reapplied),
    ]
    apply_transition(
        tx,
        run,
        Transition(
            append=copied,
            wt_state=WorkflowTaskState.SCHEDULED,
            wt_visible_at=now,
            wt_attempt=1,
            schedule_activities=plan.activities,
            start_timers=plan.timers,
            search_attributes=attributes,  # a None (removed) deletes nothing here
        ),
    )
    return next_run_id


# -- flow limits ---------------------------------------------------------------------------------


def set_flow_limit(tx: Tx, limit: FlowLimit) -> None:
    tx.shared.pop((NO_ACTIVITY_LIMITS, limit.namespace), None)
    tx.conn.execute(
        "INSERT INTO flow_limits (namespace, scope, name, max_concurrent, rate, burst, tokens, "
        "refilled_at) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) ON CONFLICT (namespace, scope, name) "
        "DO UPDATE SET max_concurrent = excluded.max_concurrent, rate = excluded.rate, "
        "burst = excluded.burst, tokens = NULL, refilled_at = NULL",
        (limit.namespace, limit.scope, limit.name, limit.max_concurrent, limit.rate, limit.burst),
    )
    tx.notes.add(("activity", limit.namespace, limit.name))


def delete_flow_limit(tx: Tx, namespace: str, scope: str, name: str) -> None:
    tx.conn.execute(
        "DELETE FROM flow_limits WHERE namespace = ? AND scope = ? AND name = ?",
        (namespace, scope, name),
    )


def list_flow_limits(tx: Tx, namespace: str) -> list[FlowLimit]:
    return [
        FlowLimit(namespace, r[0], r[1], r[2], r[3], r[4])
        for r in tx.conn.execute(
            "SELECT scope, name, max_concurrent, rate, burst FROM flow_limits "
            "WHERE namespace = ? ORDER BY scope, name",
            (namespace,),
        ).fetchall()
    ]
