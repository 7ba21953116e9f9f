"""The run lifecycle's storage: submit, claim, commit, retry, fail, cancel, reconcile.

Every method is one atomic statement (one round trip) unless it says otherwise.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from engine import metrics
from engine.statuses import NodeStatus, RunStatus
from engine.store.raw import execute_one
from engine.store.sql import Statement, repairs
from engine.store.sql import runs as sql


def dumps(value: Any) -> str | None:
    """JSON for a jsonb parameter (None stays SQL NULL)."""
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Signal:
    """What the decided predecessors tell one successor: `count` of them decided, `active` of those active."""

    node_id: str
    in_degree: int
    count: int
    active: int
    join_any: bool


@dataclass(frozen=True)
class Claim:
    """A node attempt this worker now owns (until its lease expires or its epoch moves on)."""

    node_row_id: int
    epoch: int
    attempt: int
    version_id: int
    deadline_at: datetime | None
    run_inputs: dict[str, Any] | None
    dep_outputs: dict[str, Any]
    resume: dict[str, Any] | None = None
    space_id: str | None = None
    body: str = ""  # the inline body the run executes ('': the whole workflow)
    overrides: dict[str, Any] | None = None  # a rerun's overrides, when this node is the one it reran from
    run_started: bool = False  # this claim started the run (its first node): `run.started` is logged
    # when this worker took the attempt: its attempt_log entry's `started_at` (the dashboard's timeline)
    claimed_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Decision:
    """The effect of a commit: whether it landed, what became ready or was skipped, and whether
    a node of the space waits for the slot it freed (`wake`)."""

    committed: bool
    remaining: int | None
    queued: tuple[str, ...]
    skipped: tuple[str, ...]
    wake: bool = False


@dataclass(frozen=True)
class NewRun:
    """A run to insert with its root nodes."""

    run_id: uuid.UUID
    space_id: str
    workflow_id: str
    version_id: int
    version: int
    inputs: dict[str, Any]
    node_count: int
    roots: Sequence[tuple[str, int, bool]]  # (node_id, in_degree=0, join_any)
    idempotency_key: str | None
    deadline_s: float | None
    run_mode: str = "async"
    # A child run of a composite node: its parent run, node, the epoch of the attempt that
    # started it, and its depth (the parent's + 1).
    parent_run_id: uuid.UUID | None = None
    parent_node_id: str | None = None
    parent_epoch: int | None = None
    depth: int = 0
    item_index: int | None = None  # a child's roots wait until its parent node is parked (DELEGATE_NODE starts them)
    latest: bool = False  # `version` is what the caller cached as the latest: insert only if it still is


@dataclass(frozen=True)
class NewItems:
    """The child runs of a composite node's inline body, one per item (all `queued`, roots waiting)."""

    space_id: str
    workflow_id: str
    version_id: int
    version: int
    body: str
    items: Sequence[Any]
    shared: dict[str, Any]  # the composite node's inputs, given to every item beside `item`, `index`
    node_count: int
    roots: Sequence[tuple[str, bool]]  # (node_id, join_any)
    parent_run_id: uuid.UUID
    parent_node_id: str
    parent_epoch: int
    depth: int
    first_index: int = 0  # the first item's index (a loop inserts iteration k as item k)


class StartedNode(NamedTuple):
    """A root node of a child run that a statement queued: its message is the caller's to send
    (`version_id` and `body` say which compiled workflow holds it: is it of a pure type?)."""

    run_id: uuid.UUID
    node_id: str
    version_id: int
    body: str


@dataclass(frozen=True)
class Delegation:
    """What parking a composite node did: whether it parked, whether a node of its space waits for
    the slot it freed, and the child nodes it started (the caller sends them)."""

    parked: bool
    wake: bool
    started: tuple[StartedNode, ...] = ()


@dataclass(frozen=True)
class Ended:
    """What a statement that ends a run did: whether it changed the run, the parent node it queued
    again (a child run's end) and the next child nodes it started, whose messages the caller sends,
    and the parent run whose node counted the end (a `node.progress` or `node.woken` event)."""

    found: bool
    changed: bool
    parent: tuple[uuid.UUID, str] | None = None
    started: tuple[StartedNode, ...] = ()
    counted: uuid.UUID | None = None
    run_id: uuid.UUID | None = None  # which run, its new status and error (logs and traces, engine/telemetry.py)
    status: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    """What a submit found: the new run (`created`), or the run already holding the idempotency key."""

    run_id: uuid.UUID
    status: str
    created: bool
    workflow_id: str
    stale: bool = False  # nothing inserted: the workflow's latest version is no longer the one given


class LifecycleStore:
    """SQL of the run lifecycle, over an autocommit engine (each statement is its own transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _one(self, statement: Statement, params: dict[str, Any]) -> Any:
        """Run one statement in its own transaction on the pooled psycopg connection
        (engine/store/raw.py: each statement here is atomic and fenced, so a retry is safe)."""
        return execute_one(self.engine, statement.pyformat, params, namedtuple_row, "statement")

    # -- submit ---------------------------------------------------------------------------
    def insert_run(self, run: NewRun) -> Submitted:
        """Insert the run, its root nodes and its first event in one statement (one round trip).

        With an idempotency key already used in the space: the run holding it, not created
        (which may be a run of another workflow; the caller decides what that means). With
        `run.latest` and a newer latest version stored since: nothing, `stale`.
        """
        row = self._one(sql.INSERT_RUN, {
            "id": run.run_id, "space": run.space_id, "wf": run.workflow_id, "vid": run.version_id,
            "version": run.version, "inputs": dumps(run.inputs), "key": run.idempotency_key,
            "remaining": run.node_count, "deadline_s": run.deadline_s, "run_mode": run.run_mode,
            "roots": [n for n, _deg, _any in run.roots], "roots_any": [a for _n, _deg, a in run.roots],
            "parent_run": run.parent_run_id, "parent_node": run.parent_node_id, "parent_epoch": run.parent_epoch,
            "depth": run.depth, "item_index": run.item_index, "latest": run.latest})
        if row.id is not None:
            return Submitted(row.id, RunStatus.QUEUED, True, run.workflow_id)
        if row.held_id is not None:
            return Submitted(row.held_id, row.held_status, False, row.held_workflow_id)
        if row.stale:
            return Submitted(run.run_id, RunStatus.QUEUED, False, run.workflow_id, stale=True)
        # the key's holder committed after this statement began (a concurrent submit): read it
        existing = self._one(sql.RUN_BY_IDEMPOTENCY_KEY, {"space": run.space_id, "key": run.idempotency_key})
        return Submitted(existing.id, existing.status, False, existing.workflow_id)

    def insert_items(self, new: NewItems) -> int:
        """Insert one child run per item in one statement; how many."""
        row = self._one(sql.INSERT_ITEMS, {
            "space": new.space_id, "wf": new.workflow_id, "vid": new.version_id, "version": new.version,
            "body": new.body, "items": dumps(list(new.items)), "shared": dumps(new.shared),
            "remaining": new.node_count, "roots": [n for n, _ in new.roots], "roots_any": [a for _, a in new.roots],
            "parent_run": new.parent_run_id, "parent_node": new.parent_node_id, "parent_epoch": new.parent_epoch,
            "depth": new.depth, "first_index": new.first_index})
        return int(row.inserted)

    # -- execute ----------------------------------------------------------------------------
    def claim(self, run_id: uuid.UUID, node_id: str, lease_s: float, grace_s: float,
              space_cap: int = 0, worker: str | None = None) -> Claim | None:
        """Take the node if it is queued (or its retry is due) and its space has a free slot.

        None on a duplicate delivery, and when the space already runs `space_cap` nodes (or its
        own `max_running_nodes`): the node stays queued, on the space's waitlist, until
        `wake_waiters` sends it again. `worker`: the claiming worker process's id (`workers.id`).
        """
        row = self._one(sql.CLAIM, {"run": run_id, "node": node_id, "lease_s": lease_s, "grace_s": grace_s,
                                    "cap": space_cap, "worker": worker})
        if row is None:
            return None
        return Claim(node_row_id=row.id, epoch=row.epoch, attempt=row.attempts, version_id=row.version_id,
                     deadline_at=row.deadline_at, run_inputs=row.inputs, dep_outputs=row.deps or {},
                     resume=row.resume, space_id=row.space_id, body=row.body or "", overrides=row.overrides,
                     run_started=row.run_started)

    def wake_waiters(self, space_id: str | None, space_cap: int, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Take up to `limit` waiting nodes off the waitlist of a space with free slots (None: of
        every space), oldest first; the caller sends their messages."""
        with self.auto.connect() as conn:
            rows = conn.execute(sql.WAKE_WAITERS.clause, {"space": space_id, "cap": space_cap, "limit": limit})
            return [(r.run_id, r.node_id) for r in rows]

    def drop_dead_waiters(self) -> int:
        """Remove waitlist rows whose node no longer waits (its run ended or it was claimed)."""
        with self.auto.connect() as conn:
            return int(conn.execute(sql.DROP_DEAD_WAITERS.clause).rowcount or 0)

    def commit_node(self, run_id: uuid.UUID, node_id: str, claim: Claim, *, status: str,
                    output: dict[str, Any] | None, error: dict[str, Any] | None, port: str | None,
                    signals: Sequence[Signal], event_type: str, event_data: dict[str, Any] | None,
                    log: list[dict[str, Any]] | None = None, report: dict[str, Any] | None = None) -> Decision:
        """Store a decided node (fenced by epoch), signal successors, count it, record events.

        `report` (LLM nodes) gives the model that answered, the token usage (added to the run's) and
        the attempt's cost (added to the node's and the run's).
        """
        params = {"run": run_id, "node": node_id, "nid": claim.node_row_id, "epoch": claim.epoch,
                  "status": status, "output": dumps(output), "error": dumps(error), "port": port,
                  "event_type": event_type, "event_data": dumps(event_data), "log": dumps(log),
                  "model": (report or {}).get("model"), "usage": dumps((report or {}).get("usage") or None),
                  **_token_params(report), **signal_params(signals)}
        return decision_of(self._one(sql.COMMIT_NODE, params))

    def propagate_skip(self, run_id: uuid.UUID, source: str, signals: Sequence[Signal]) -> Decision:
        """Signal the successors of a skipped node (its edges are all inactive), at most once."""
        return decision_of(self._one(sql.PROPAGATE_SKIP, {"run": run_id, "source": source,
                                                        **signal_params(signals)}))

    def load_outputs(self, run_id: uuid.UUID, node_ids: Iterable[str], with_inputs: bool
                     ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The run's inputs (if asked) and the outputs of the given nodes."""
        row = self._one(sql.LOAD_OUTPUTS, {"run": run_id, "ids": list(node_ids), "with_inputs": with_inputs})
        return (row.inputs, row.outputs or {}) if row else (None, {})

    def finish_run(self, run_id: uuid.UUID, outputs: dict[str, Any]) -> Ended:
        """Mark the run succeeded with its outputs, once all its nodes are decided (a child: wake its parent)."""
        row = self._one(sql.FINISH_RUN, {"run": run_id, "outputs": dumps(outputs),
                                         **_child_outcome(run_id, "succeeded", outputs, None)})
        return _ended(row is not None, row is not None, row, run_id, RunStatus.SUCCEEDED, None)

    def schedule_retry(self, run_id: uuid.UUID, node_id: str, claim: Claim, *, error: dict[str, Any],
                       delay_s: float, log: list[dict[str, Any]], report: dict[str, Any] | None = None) -> bool:
        """Record a failed attempt (its token usage counts) and make the node due again after `delay_s`."""
        row = self._one(sql.SCHEDULE_RETRY, {
            "run": run_id, "node": node_id, "nid": claim.node_row_id, "epoch": claim.epoch,
            "error": dumps(error), "delay_s": delay_s, "log": dumps(log), **_token_params(report),
            "event_data": dumps({"error": error, "attempt": claim.attempt, "delay_s": round(delay_s, 3)})})
        return row is not None

    def fail_run_at_node(self, run_id: uuid.UUID, node_id: str, node_row_id: int, epoch: int, *,
                         error: dict[str, Any], log: list[dict[str, Any]],
                         from_status: Sequence[str] = (NodeStatus.RUNNING,),
                         report: dict[str, Any] | None = None) -> Ended:
        """Fail the node and its run; cancel everything else still pending in the run and its descendants."""
        run_error = {"code": error.get("code"), "message": error.get("message"), "node_id": node_id}
        row = self._one(sql.FAIL_RUN_AT_NODE, {
            "run": run_id, "node": node_id, "nid": node_row_id, "epoch": epoch, "error": dumps(error),
            "log": dumps(log), "run_error": dumps(run_error), "from_status": list(from_status),
            **_token_params(report), **_child_outcome(run_id, "failed", None, run_error)})
        return _ended(row is not None, row is not None, row, run_id, RunStatus.FAILED, run_error)

    def end_run(self, run_id: uuid.UUID, status: str, error: dict[str, Any] | None = None,
                space_id: str | None = None) -> Ended:
        """Cancel (or fail) an unfinished run, its pending nodes and its live descendants."""
        row = self._one(sql.END_RUN, {"run": run_id, "space": space_id, "status": status,
                                      "run_error": dumps(error), **_child_outcome(run_id, status, None, error)})
        return _ended(bool(row.found), bool(row.changed), row, run_id, status, error)

    # -- composite nodes ------------------------------------------------------------------
    def delegate_node(self, run_id: uuid.UUID, node_id: str, claim: Claim, *, total: int, first: int,
                      fail_fast: bool, event_data: dict[str, Any], first_index: int = 0,
                      state: dict[str, Any] | None = None) -> Delegation:
        """Park the node as `delegated` to its `total` child runs (fenced by epoch), keeping `state`
        for its wake, and start the first `first` (items from `first_index`)."""
        row = self._one(sql.DELEGATE_NODE, {
            "run": run_id, "node": node_id, "nid": claim.node_row_id, "epoch": claim.epoch,
            "children": total, "started": first, "fail_fast": fail_fast, "first_index": first_index,
            "state": dumps(state),
            "event_data": dumps({"attempt": claim.attempt, **event_data})})
        if row is None:
            return Delegation(False, False)
        return Delegation(True, bool(row.wake), _pairs(row.started))

    def cancel_unstarted_children(self, run_id: uuid.UUID, node_id: str, epoch: int) -> int:
        """Cancel, in bulk, the child runs of a node's attempt that never started; how many."""
        row = self._one(sql.CANCEL_UNSTARTED_CHILDREN, {"run": run_id, "node": node_id, "epoch": epoch})
        return int(row.cancelled)

    # -- human in the loop ----------------------------------------------------------------
    def interrupt_node(self, run_id: uuid.UUID, node_id: str, claim: Claim, *, event_id: str, kind: str,
                       data: dict[str, Any]) -> bool:
        """Park the node as `interrupted` with a pending interrupt (fenced by epoch); the run waits."""
        row = self._one(sql.INTERRUPT_NODE, {"run": run_id, "node": node_id, "nid": claim.node_row_id,
                                             "epoch": claim.epoch, "event_id": event_id, "kind": kind,
                                             "data": dumps(data)})
        return row is not None

    def resume_node(self, run_id: uuid.UUID, space_id: str, event_id: str, answer: Any,
                    outputs: dict[str, Any]) -> tuple[str, str] | None:
        """Answer the run's oldest pending interrupt once: (node_id, run status), or None if refused."""
        row = self._one(sql.RESUME_NODE, {"run": run_id, "space": space_id, "event_id": event_id,
                                          "answer": dumps({"data": answer}), "outputs": dumps(outputs)})
        return (row.node_id, row.run_status) if row is not None else None

    def append_event(self, run_id: uuid.UUID, node_id: str | None, event_type: str,
                     data: dict[str, Any] | None) -> bool:
        """Record an event of a live run (e.g. an LLM token chunk); False if the run has ended."""
        return self._one(sql.APPEND_EVENT, {"run": run_id, "node": node_id, "type": event_type,
                                            "data": dumps(data)}) is not None

    # -- reconcile --------------------------------------------------------------------------
    def renew_leases(self, node_row_ids: Sequence[int], lease_s: float) -> None:
        """Extend the leases of nodes this process is still running."""
        if node_row_ids:
            with self.auto.connect() as conn:
                conn.execute(repairs.RENEW_LEASES.clause, {"ids": list(node_row_ids), "lease_s": lease_s})

    def expired_leases(self, limit: int = 200) -> list[Any]:
        """Running nodes whose worker stopped renewing the lease."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.EXPIRED_LEASES.clause, {"limit": limit}))

    def requeue_crashed(self, row: Any, log: list[dict[str, Any]]) -> bool:
        """Put a crashed node back in the queue (its next claim is a new attempt)."""
        return self._one(repairs.REQUEUE_CRASHED, {"run": row.run_id, "node": row.node_id, "nid": row.id,
                                                   "epoch": row.epoch, "log": dumps(log)}) is not None

    def stale_queued(self, older_than_s: float, limit: int = 1000) -> list[tuple[uuid.UUID, str, str]]:
        """Queued nodes (and due retries) whose message looks lost, with their status; marks them as re-sent now."""
        with self.auto.connect() as conn:
            rows = conn.execute(repairs.STALE_QUEUED.clause, {"age": older_than_s, "limit": limit})
            return [(r.run_id, r.node_id, r.status) for r in rows]

    def unsettled_skips(self, older_than_s: float, limit: int = 500) -> list[Any]:
        """Skipped nodes whose successors were never signalled (the deciding worker died)."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.UNSETTLED_SKIPS.clause, {"age": older_than_s, "limit": limit}))

    def unfinished_runs(self, older_than_s: float, limit: int = 200) -> list[Any]:
        """Runs whose nodes are all decided but that were never marked finished (the worker died)."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.UNFINISHED_RUNS.clause, {"age": older_than_s, "limit": limit}))

    def overdue_runs(self, limit: int = 200) -> list[uuid.UUID]:
        """Unfinished runs past their deadline."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.OVERDUE_RUNS.clause, {"limit": limit}).scalars())

    def unwoken_parents(self, limit: int = 200) -> list[Any]:
        """Delegated nodes with no live child of their attempt left (a child ended before the park)."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.UNWOKEN_PARENTS.clause, {"limit": limit}))

    def wake_parent(self, run_id: uuid.UUID, node_id: str) -> bool:
        """Queue a delegated node whose children all ended, with the last one's outcome (once)."""
        return self._one(repairs.WAKE_PARENT, {"run": run_id, "node": node_id}) is not None

    def orphaned_children(self, older_than_s: float, limit: int = 200) -> list[Any]:
        """Live child runs whose parent node's attempt no longer waits for them (with that attempt)."""
        with self.auto.connect() as conn:
            return list(conn.execute(repairs.ORPHANED_CHILDREN.clause, {"age": older_than_s, "limit": limit}))

    def try_lead(self, conn: Connection, key: int) -> bool:
        """Take the reconciler's transaction-scoped advisory lock (one leader at a time)."""
        return bool(conn.execute(repairs.TRY_LEAD.clause, {"k": key}).scalar())



def _child_outcome(run_id: uuid.UUID, status: str, outputs: dict[str, Any] | None,
                   error: dict[str, Any] | None) -> dict[str, str | bool | None]:
    """What a run's end tells its parent node, if it is a child: `outcome` (the parent node's
    `resume`), whether it failed (a fail-fast parent wakes at once) and the parent's event."""
    event = {"child_run_id": str(run_id), "status": status}
    return {"outcome": dumps({**event, "outputs": outputs, "error": error}),
            "child_failed": status != RunStatus.SUCCEEDED,
            "child_event": dumps(event if error is None else {**event, "error": error})}


def _ended(found: bool, changed: bool, row: Any, run_id: uuid.UUID, status: str,
           error: dict[str, Any] | None) -> Ended:
    if changed and row is not None and row.top_level:
        metrics.run_ended(status)  # every run a client started ends through here, once
    parent = None
    if row is not None and row.parent_run_id is not None:
        parent = (row.parent_run_id, row.parent_node_id)
    return Ended(found, changed, parent, _pairs(row.started) if row is not None else (),
                 row.counted_run_id if row is not None else None, run_id, status, error)


def _pairs(started: list[list[Any]] | None) -> tuple[StartedNode, ...]:
    """The child nodes a statement started, from its jsonb array of [run, node, version, body]."""
    return tuple(StartedNode(uuid.UUID(str(run)), str(node), int(version), str(body or ""))
                 for run, node, version, body in started or ())


def _token_params(report: dict[str, Any] | None) -> dict[str, Any]:
    usage = (report or {}).get("usage") or {}
    # the attempt's cost (a float in the report) as exact decimal text: numeric sums stay exact
    return {"in_tokens": int(usage.get("input_tokens") or 0), "out_tokens": int(usage.get("output_tokens") or 0),
            "cost": repr(float((report or {}).get("cost") or 0))}


def signal_params(signals: Sequence[Signal]) -> dict[str, str]:
    """The successor signals as the array parameters of a committing statement (sql/runs.py `SIGNALS`).

    Sent as array literals, not lists: psycopg works out a list's element type in Python, five
    lists per commit, which cost ~70 us of a worker's CPU per node; a literal is a string."""
    return {"s_ids": text_array([s.node_id for s in signals]),
            "s_deg": "{" + ",".join(str(int(s.in_degree)) for s in signals) + "}",
            "s_cnt": "{" + ",".join(str(int(s.count)) for s in signals) + "}",
            "s_act": "{" + ",".join(str(int(s.active)) for s in signals) + "}",
            "s_any": "{" + ",".join("t" if s.join_any else "f" for s in signals) + "}"}


def text_array(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal: every element quoted, its backslashes and quotes escaped."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def decision_of(row: Any) -> Decision:
    """The `Decision` a committing statement's row (sql/runs.py `DECISION`) says; not committed if none."""
    if row is None or row.remaining is None:
        return Decision(committed=False, remaining=None, queued=(), skipped=())
    return Decision(committed=True, remaining=row.remaining, queued=tuple(row.queued), skipped=tuple(row.skipped),
                    wake=bool(getattr(row, "wake", False)))
