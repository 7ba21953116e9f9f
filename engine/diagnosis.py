"""Why a run is not moving: a pure decision over facts the store loaded (no I/O).

`diagnose` names, for every node of a live run that is not final, what it waits for:

- `predecessors`: upstream nodes not decided yet (named, with their status);
- `worker`: queued (or a retry that is due) with no worker taking it: how many live workers
  consume its queue, and plainly when none does;
- `retry`: a retry due at T after error E (attempt k of N);
- `lease`: running on worker W, its lease held until T; when W's heartbeat is stale, what the
  reconciler will do when the lease expires (re-queue as crash k of `max_crashes`, or fail the
  node as `crashed`);
- `answer`: a person's answer to a question or form since T (its event id and type);
- `children`: a composite node's child runs (done/total/started, the first live ones);
- `space_cap`: waitlisted, its space at `max_running_nodes`;
- `deadline`: the run's deadline has passed, so the run fails at the reconciler's next sweep.

Every time is the database's clock (`db_now` and the rows), so a web server whose clock drifts
still tells the truth. Messages are plain sentences (docs/operations.md "Why is a run stuck").
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.statuses import FINAL_STATUSES, NODE_FINAL_STATUSES, NodeStatus

if TYPE_CHECKING:
    from engine.compiler import CompiledWorkflow

STALE_BEATS = 3  # a worker silent for this many heartbeat intervals looks dead
SUMMARY_NODES = 5  # nodes named in the summary line


@dataclass(frozen=True)
class RunFacts:
    """What a diagnosis of one run is decided from (rows as dicts; times are the database's)."""

    run: dict[str, Any]  # the run row, with db_now, the space's cap and live worker counts
    nodes: list[dict[str, Any]]  # its node rows, each with its worker's heartbeat and `waitlisted`
    asks: list[dict[str, Any]]  # its pending interrupts, oldest first
    children: dict[str, list[dict[str, Any]]]  # composite node id -> its first live child runs


@dataclass(frozen=True)
class NodeShape:
    """What the definition says of a node: its predecessors, retry budget and timeout."""

    node_id: str
    type_name: str
    preds: tuple[str, ...] = ()
    max_attempts: int = 1
    timeout_s: float | None = None


@dataclass(frozen=True)
class Deployment:
    """The deployment settings a diagnosis reasons with."""

    queue: str
    heartbeat_s: float
    max_crashes: int
    space_cap: int  # RELAYFLOW_SPACE_MAX_RUNNING_NODES (a space's own cap overrides it)

    @property
    def stale_s(self) -> float:
        """How long a worker may be silent before it looks dead."""
        return STALE_BEATS * self.heartbeat_s


def shapes_of(compiled: CompiledWorkflow) -> list[NodeShape]:
    """The nodes of a run's graph, in the definition's order, as a diagnosis needs them."""
    return [NodeShape(n.id, n.type_name, tuple(n.preds), n.retry.max_attempts, n.timeout_s)
            for n in (compiled.nodes[node_id] for node_id in compiled.order)]


def diagnose(facts: RunFacts, shapes: Sequence[NodeShape], deployment: Deployment) -> dict[str, Any]:
    """The diagnosis of a run: `{run_id, status, summary, nodes: [{node_id, status, waiting_for, since, detail, ...}]}`."""
    run = facts.run
    base = {"run_id": str(run["id"]), "status": run["status"], "checked_at": _iso(run["db_now"]),
            "deadline_at": _iso(run.get("deadline_at")), "live_workers": int(run["live_workers"]),
            "queue_workers": int(run["queue_workers"]), "queue": deployment.queue}
    if run["status"] in FINAL_STATUSES:
        return {**base, "nodes": [], "summary": f"The run ended {run['status']} at {_iso(run['finished_at'])}; "
                                               "nothing waits."}
    rows = {r["node_id"]: r for r in facts.nodes}
    asks = {a["node_id"]: a for a in facts.asks}
    nodes = []
    for shape in shapes:
        row = rows.get(shape.node_id)
        status = row["status"] if row else NodeStatus.WAITING
        if status in NODE_FINAL_STATUSES:
            continue
        nodes.append(_node(shape, row, rows, asks, facts, deployment))
    return {**base, "nodes": nodes, "summary": _summary(run, nodes, deployment)}


def _node(shape: NodeShape, row: Mapping[str, Any] | None, rows: Mapping[str, Mapping[str, Any]],
          asks: Mapping[str, Mapping[str, Any]], facts: RunFacts, deployment: Deployment) -> dict[str, Any]:
    run, now = facts.run, facts.run["db_now"]
    status = row["status"] if row else NodeStatus.WAITING
    found = {"node_id": shape.node_id, "status": status}
    deadline = run.get("deadline_at")
    if deadline is not None and deadline <= now:
        return {**found, "waiting_for": "deadline", "since": _iso(deadline),
                "detail": f"the run's deadline passed at {_iso(deadline)} ({_ago(now, deadline)}): the reconciler "
                          f"fails the run at its next sweep{_no_reconciler(run)}."}
    if row is None or status == NodeStatus.WAITING:
        return {**found, **_predecessors(shape, row, rows, run)}
    if status == NodeStatus.INTERRUPTED:
        return {**found, **_answer(asks.get(shape.node_id), row, run)}
    if status == NodeStatus.DELEGATED:
        return {**found, **_children(row, facts.children.get(shape.node_id, []), run)}
    if status == NodeStatus.RUNNING:
        return {**found, **_lease(shape, row, run, deployment)}
    if row.get("waitlisted"):
        return {**found, **_space_cap(row, run, deployment)}
    if status == NodeStatus.RETRYING and row.get("next_attempt_at") is not None and row["next_attempt_at"] > now:
        return {**found, **_retry(shape, row, now)}
    return {**found, **_worker(row, run, deployment)}


def _predecessors(shape: NodeShape, row: Mapping[str, Any] | None, rows: Mapping[str, Mapping[str, Any]],
                  run: Mapping[str, Any]) -> dict[str, Any]:
    pending = [{"node_id": p, "status": rows[p]["status"] if p in rows else NodeStatus.WAITING}
               for p in shape.preds if p not in rows or rows[p]["status"] not in NODE_FINAL_STATUSES]
    since = (row or {}).get("queued_at") or run.get("started_at") or run["created_at"]
    if pending:
        names = ", ".join(f"{p['node_id']} ({p['status']})" for p in pending)
        detail = f"waits for its predecessor{'s' if len(pending) > 1 else ''} {names}."
    elif run.get("parent_run_id") is not None and not shape.preds:
        detail = (f"a first node of a child run: it starts when its parent node {run.get('parent_node_id')} of run "
                  f"{run['parent_run_id']} gives this item its turn.")
    else:
        detail = ("its predecessors are all decided but it was not signalled yet; the reconciler's next sweep "
                  f"completes the decision{_no_reconciler(run)}.")
    return {"waiting_for": "predecessors", "since": _iso(since), "detail": detail, "predecessors": pending}


def _worker(row: Mapping[str, Any], run: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    now, since = run["db_now"], row.get("next_attempt_at") or row.get("queued_at") or run["created_at"]
    consumers, live = int(run["queue_workers"]), int(run["live_workers"])
    what = "its retry was due" if row["status"] == NodeStatus.RETRYING else "queued"
    head = f"{what} since {_iso(since)} ({_ago(now, since)})"
    if consumers == 0:
        others = f" ({live} live worker{_s(live)} consume other queues)" if live else ""
        detail = (f"{head}; NO live worker consumes queue {deployment.queue}{others}: start a worker "
                  f"(`relayflow worker`) for it to run.")
    else:
        detail = (f"{head}; {consumers} live worker{_s(consumers)} consume{'s' if consumers == 1 else ''} queue "
                  f"{deployment.queue}: they are busy, or its message is late (the reconciler re-sends a message "
                  "that looks lost).")
    return {"waiting_for": "worker", "since": _iso(since), "detail": detail, "queue": deployment.queue,
            "live_workers": consumers}


def _retry(shape: NodeShape, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    due, error = row["next_attempt_at"], row.get("error") or {}
    attempt = int(row["attempts"]) + 1
    message = error.get("message") or error.get("kind") or "an error"
    detail = (f"retry due at {_iso(due)} (in {_seconds(due - now)}) after error "
              f"{error.get('kind') or 'error'}: {message} — attempt {attempt} of {shape.max_attempts}.")
    return {"waiting_for": "retry", "since": _iso(_failed_at(row) or due), "detail": detail, "retry_at": _iso(due),
            "attempt": attempt, "max_attempts": shape.max_attempts, "error": error}


def _failed_at(row: Mapping[str, Any]) -> datetime | None:
    """When the last attempt failed (the retry was scheduled then), from its attempt log entry."""
    entry = row.get("last_failure")
    try:
        return datetime.fromisoformat(entry["at"]) if isinstance(entry, dict) and entry.get("at") else None
    except (TypeError, ValueError):
        return None


def _lease(shape: NodeShape, row: Mapping[str, Any], run: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    now, worker = run["db_now"], row.get("worker")
    lease, beat = row.get("lease_expires_at"), row.get("worker_heartbeat_at")
    since = row.get("started_at") or now
    crash = int(row.get("crashes") or 0) + 1
    action = (f"re-queue it as crash {crash} of {deployment.max_crashes}" if crash < deployment.max_crashes
              else f"fail it as `crashed` (crash {crash} of {deployment.max_crashes})")
    alive = beat is not None and (now - beat).total_seconds() <= deployment.stale_s
    who = f"worker {worker}" if worker else "an unregistered worker"
    found: dict[str, Any] = {"waiting_for": "lease", "since": _iso(since), "worker": worker,
                             "worker_alive": alive, "lease_expires_at": _iso(lease),
                             "worker_heartbeat_at": _iso(beat), "attempt": int(row["attempts"])}
    if lease is not None and lease <= now:
        found["reconciler_action"] = action
        found["detail"] = (f"the lease of {who} expired at {_iso(lease)} ({_ago(now, lease)}); the reconciler's "
                           f"next sweep will {action}{_no_reconciler(run)}.")
    elif alive and beat is not None:
        timeout = f"; its timeout is {shape.timeout_s:g} s" if shape.timeout_s else ""
        found["detail"] = (f"running on {who} (alive, last heartbeat {_ago(now, beat)}), attempt "
                           f"{row['attempts']}, first started {_ago(now, since)}; lease held until {_iso(lease)}{timeout}.")
    else:
        found["reconciler_action"] = action
        silent = f"last heartbeat at {_iso(beat)}, {_ago(now, beat)}" if beat is not None else "no heartbeat on record"
        dead = "looks dead" if worker else "cannot be checked"
        found["detail"] = (f"held by {who} until {_iso(lease)}; the worker {dead} ({silent}): when the lease "
                           f"expires at {_iso(lease)} the reconciler will {action}{_no_reconciler(run)}.")
    return found


def _answer(ask: Mapping[str, Any] | None, row: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    if ask is None:  # answered a moment ago: its node is about to be queued again
        return {"waiting_for": "answer", "since": _iso(row.get("started_at")),
                "detail": "its interrupt was just answered; the node is being queued again."}
    return {"waiting_for": "answer", "since": _iso(ask["created_at"]), "event_id": ask["event_id"],
            "interrupt_type": ask["type"],
            "detail": (f"waits for a person's answer to a {ask['type']} since {_iso(ask['created_at'])} "
                       f"({_ago(run['db_now'], ask['created_at'])}); answer it with "
                       f"`relayflow resume {run['id']} --event {ask['event_id']} ...`.")}


def _children(row: Mapping[str, Any], live: list[dict[str, Any]], run: Mapping[str, Any]) -> dict[str, Any]:
    done, total, started = int(row["children_done"]), int(row["children_total"]), int(row["children_started"])
    since = row.get("started_at") or run["db_now"]
    named = ", ".join(f"{c['run_id']} (item {c['item_index']}, {c['status']})" for c in live)
    more = " and more" if live and started - done > len(live) else ""
    detail = (f"waits for its child runs: {done} of {total} ended, {started} started"
              + (f"; live: {named}{more} (`relayflow why CHILD_RUN_ID` says why each waits)" if live else "") + ".")
    return {"waiting_for": "children", "since": _iso(since), "detail": detail,
            "children": {"done": done, "total": total, "started": started,
                         "live": [{**c, "started_at": _iso(c.get("started_at"))} for c in live]}}


def _space_cap(row: Mapping[str, Any], run: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    cap = run.get("max_running_nodes")
    cap = deployment.space_cap if cap is None else int(cap)
    running, since = int(run["running_nodes"]), row.get("queued_at") or run["created_at"]
    detail = (f"waitlisted since {_iso(since)} ({_ago(run['db_now'], since)}): space {run['space_id']} is at its cap "
              f"of {cap} running node{_s(cap)} ({running} running); it starts when a node of the space ends.")
    return {"waiting_for": "space_cap", "since": _iso(since), "detail": detail,
            "space": {"space_id": run["space_id"], "max_running_nodes": cap, "running_nodes": running}}


def _summary(run: Mapping[str, Any], nodes: list[dict[str, Any]], deployment: Deployment) -> str:
    if not nodes:
        return f"The run is {run['status']}; every node is decided and the run is being finished."
    named = "; ".join(f"{n['node_id']} waits for {n['waiting_for'].replace('_', ' ')}" for n in nodes[:SUMMARY_NODES])
    more = f"; and {len(nodes) - SUMMARY_NODES} more" if len(nodes) > SUMMARY_NODES else ""
    line = f"The run is {run['status']}, {len(nodes)} node{_s(len(nodes))} not final: {named}{more}."
    if int(run["queue_workers"]) == 0:
        line += f" No live worker consumes queue {deployment.queue}."
    return line


def _no_reconciler(run: Mapping[str, Any]) -> str:
    """The reconciler runs inside the worker processes: with none alive, nothing sweeps."""
    return " — but no live worker runs the reconciler now, so start one" if int(run["live_workers"]) == 0 else ""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _seconds(delta: Any) -> str:
    return f"{max(delta.total_seconds(), 0):.0f} s"


def _ago(now: datetime, then: datetime) -> str:
    return f"{_seconds(now - then)} ago"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
