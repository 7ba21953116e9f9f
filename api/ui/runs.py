"""The runs page (filters, counts, cursor paging, live rows) and the run page (graph, inspector,
event log, answer form, cancel), with the small JSON and event routes their JavaScript uses."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import jsonify, redirect, render_template, request
from flask.typing import ResponseReturnValue

from api.runtime import runtime
from api.sse import KEEPALIVE, frame, stream
from api.ui import STATUS_ORDER, bp, error_page, forms, hooks, inspect, render, session
from api.ui.graph import NODE_H, NODE_W, layout
from api.ui.timeline import timeline
from engine.errors import InvalidInputs, RunNotFound
from engine.service import SEARCH_SCAN_RUNS
from engine.statuses import FINAL_STATUSES

PAGE_SIZE = 25
EVENT_LOG_LIMIT = 300  # events rendered with the page; the live log keeps appending after them


def _time(name: str) -> datetime | None:
    """A `datetime-local` field (read as UTC), or None."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputs(errors=[{"field": name, "message": "must be a date and time"}]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters() -> dict[str, Any]:
    status = request.args.get("status") or None
    return {"status": status if status in STATUS_ORDER else None, "workflow_id": request.args.get("workflow") or None,
            "since": _time("since"), "until": _time("until"), "parent": request.args.get("parent") or None,
            "q": request.args.get("q", "").strip()[:200] or None}


def _listing(cursor: str | None) -> dict[str, Any]:
    who = session.current()
    service = runtime().service
    f = _filters()
    search = None
    if f["q"] and not f["parent"]:  # bounded: each page reads at most SEARCH_SCAN_RUNS runs of the range
        page = service.search_runs(who.space_id, f["q"], f["workflow_id"], f["status"], cursor, PAGE_SIZE,
                                   since=f["since"], until=f["until"])
        search = {"scanned": page["scanned"], "back_to": page["searched_back_to"], "cap": SEARCH_SCAN_RUNS}
    else:
        page = service.list_runs(who.space_id, f["workflow_id"], f["status"], cursor, PAGE_SIZE,
                                 parent=f["parent"], since=f["since"], until=f["until"])
    # a composite node's children (`parent`): counted by the node's own progress, not here
    counts = None if f["parent"] else service.count_runs(who.space_id, f["workflow_id"], f["since"], f["until"])
    names = {w["workflow_id"]: w["name"] for w in service.list_workflows(who.space_id, 200)}
    return {"runs": page["runs"], "next_cursor": page["next_cursor"], "counts": counts, "names": names,
            "search": search}


@bp.get("/")
def runs_page() -> ResponseReturnValue:
    """Runs of the space, newest first: filters, counts by status, one page."""
    cursor = request.args.get("cursor") or None
    found = _listing(cursor)
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return render("runs.html", **found, args=args, cursor=cursor, statuses=STATUS_ORDER)


@bp.get("/runs/live")
def runs_live() -> ResponseReturnValue:
    """The first page's rows (HTML) and the counts, for the runs page's polling."""
    found = _listing(None)
    rows = render_template("_run_rows.html", runs=found["runs"], names=found["names"])
    return jsonify({"counts": found["counts"] or {}, "rows": rows})


def _compiled(space_id: str, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The compiled graph the run executes (a child run's: its body) and its node rows."""
    rt = runtime()
    try:
        found = rt.store.views.run_with_nodes(uuid.UUID(run_id), space_id)
    except ValueError:
        found = None
    if found is None:
        raise RunNotFound(f"Run {run_id} not found.")
    row = found[0]
    return rt.service.versions.get(row["version_id"], row.get("body") or ""), found[1]


def _node_definition(compiled: Any, node_id: str | None) -> dict[str, Any] | None:
    for node in compiled.definition.get("nodes") or ():
        if isinstance(node, dict) and node.get("id") == node_id:
            return node
    return None


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> ResponseReturnValue:
    """One run: the graph with live statuses, the selected node, the event log, answer and cancel."""
    who = session.current()
    rt = runtime()
    compiled, rows = _compiled(who.space_id, run_id)
    run = rt.service.get_run(who.space_id, run_id)
    return render("run.html", **_run_context(who.space_id, run, compiled, request.args.get("node"), rows=rows))


def _run_context(space_id: str, run: dict[str, Any], compiled: Any, selected: str | None,
                 answer_errors: list[dict[str, Any]] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    graph = layout(compiled.order, {n: compiled.nodes[n].preds for n in compiled.order},
                   {n: compiled.nodes[n].title for n in compiled.order},
                   {n: compiled.nodes[n].type_name for n in compiled.order})
    nodes = {n["node_id"]: n for n in run["nodes"]}
    if selected not in nodes:
        selected = _default_node(run)
    events = runtime().store.views.events_after(uuid.UUID(run["run_id"]), 0, EVENT_LOG_LIMIT)
    live = run["status"] not in FINAL_STATUSES
    workflow = runtime().service.get_workflow(space_id, run["workflow_id"], with_definition=False)
    rows = rows if rows is not None else _compiled(space_id, run["run_id"])[1]
    now = datetime.now(UTC)
    reused = {n["node_id"] for n in run["nodes"] if n.get("reused")}
    drawn = timeline([{**r, "reused": r["node_id"] in reused} for r in rows],
                     runtime().store.views.run_waits(uuid.UUID(run["run_id"])), now)
    diagnosis = hooks.diagnosis(space_id, run["run_id"]) if live else None
    return {"run": run, "graph": graph, "timeline": drawn, "now": now,
            "composites": inspect.composites(space_id, run, request.args.get("expand"), request.args.get("ccursor")),
            "rendered": inspect.rendered(space_id, compiled, run, rows, selected) if selected else None,
            "attempts": inspect.attempts(rows, selected) if selected else [],
            "stuck": inspect.not_moving(run, rows, diagnosis, now) if diagnosis else False,
            "workflow_name": workflow["name"], "node_w": NODE_W, "node_h": NODE_H,
            "nodes": nodes,
            "selected": nodes.get(selected) if selected else None,
            "definition": _node_definition(compiled, selected), "events": events,
            "last_event_id": events[-1]["id"] if events else 0, "live": live,
            "answer_fields": forms.answer_fields(run["interrupt"]) if run.get("interrupt") else [],
            "answer_errors": answer_errors or [], "can_rerun": hooks.can_rerun(), "diagnosis": diagnosis}


def _default_node(run: dict[str, Any]) -> str | None:
    """The node worth looking at first: the one waiting for an answer, else the first failed one."""
    if run.get("interrupt"):
        return str(run["interrupt"]["node_id"])
    failed = [n["node_id"] for n in run["nodes"] if n["status"] == "failed"]
    return failed[0] if failed else None


@bp.get("/runs/<run_id>/state")
def run_state(run_id: str) -> ResponseReturnValue:
    """The run's status and each node's status: what the run page's live view repaints."""
    who = session.current()
    run = runtime().service.get_run(who.space_id, run_id)
    return jsonify({"status": run["status"], "usage": run["usage"],
                    "interrupt": (run["interrupt"] or {}).get("event_id"),
                    "nodes": {n["node_id"]: [n["status"], n["attempts"], n.get("progress")] for n in run["nodes"]}})


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str) -> ResponseReturnValue:
    """The run's events as Server-Sent Events, for the signed-in session (EventSource sends cookies,
    not an Authorization header); the same follower and per-token stream cap as the API's route."""
    who = session.current()
    rt = runtime()
    try:
        after = max(0, int(request.headers.get("Last-Event-ID") or request.args.get("after") or 0))
    except ValueError:
        after = 0
    lease = rt.streams.open(who.token_id)
    try:
        feed = rt.follower.events(who.space_id, run_id, after, keepalive_s=rt.settings.sse_keepalive_s,
                                  max_s=rt.settings.sse_max_s, check=lease.check,
                                  check_every_s=rt.settings.stream_recheck_s)
    except BaseException:
        lease.release()
        raise
    return stream(_frames(feed), on_close=lease.release)


def _frames(feed: Iterator[dict[str, Any] | None]) -> Iterator[str]:
    for event in feed:
        if event is None:
            yield KEEPALIVE
            continue
        at = event["created_at"]
        yield frame(event["type"], {"id": event["id"], "type": event["type"], "node_id": event["node_id"],
                                    "at": at.isoformat() if isinstance(at, datetime) else None}, event["id"])


@bp.post("/runs/<run_id>/cancel")
def cancel(run_id: str) -> ResponseReturnValue:
    """Cancel the run, then show it."""
    who = session.current()
    who.require("run")
    runtime().service.cancel_run(who.space_id, run_id)
    return redirect(f"/ui/runs/{run_id}", 303)


@bp.post("/runs/<run_id>/resume")
def resume(run_id: str) -> ResponseReturnValue:
    """Answer the run's pending question or form; a wrong answer shows the form again with its errors."""
    who = session.current()
    who.require("run")
    rt = runtime()
    run = rt.service.get_run(who.space_id, run_id)
    pending = run.get("interrupt")
    event_id = request.form.get("event_id", "")
    try:
        if pending is None:
            raise InvalidInputs(errors=[{"field": "event_id", "message": "the run is not waiting for an answer"}])
        data = forms.parse_answer(pending, request.form)
        rt.service.resume_run(who.space_id, run_id, event_id, data)
    except InvalidInputs as exc:
        compiled, rows = _compiled(who.space_id, run_id)
        return render("run.html", **_run_context(who.space_id, run, compiled, None, exc.errors, rows)), 422
    return redirect(f"/ui/runs/{run_id}", 303)


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> ResponseReturnValue:
    """Start a new run from the chosen node (only where the server has rerun: api/ui/hooks.py)."""
    who = session.current()
    who.require("run")
    started = hooks.rerun(who.space_id, run_id, request.form.get("from_node", ""))
    if started is None:
        return error_page("Not available", "This server cannot rerun a run from a node.", 404)
    return redirect(f"/ui/runs/{started}", 303)



@bp.get("/runs/<run_id>/children")
def run_children(run_id: str) -> ResponseReturnValue:
    """One page of a composite node's child runs (HTML rows), for the run page's expanded node."""
    who = session.current()
    node_id = request.args.get("node", "")
    page = runtime().service.list_runs(who.space_id, cursor=request.args.get("cursor") or None,
                                       limit=inspect.CHILDREN_PAGE, parent=run_id, parent_node=node_id)
    return render_template("_children.html", run_id=run_id, node_id=node_id, page=page)
