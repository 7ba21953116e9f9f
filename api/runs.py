"""Run routes: submit (async or sync), poll, list, cancel, resume, and the event stream."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import request
from flask_openapi3 import APIBlueprint, Tag

from api.diagnosis_models import DiagnosisOut
from api.models import (
    ErrorBody,
    EventsQuery,
    ResumeAccepted,
    ResumeBody,
    RunAccepted,
    RunCreate,
    RunList,
    RunListQuery,
    RunOut,
    RunPath,
    WorkflowPath,
)
from api.runtime import principal, runtime
from api.sse import KEEPALIVE, STREAM_RESPONSE, frame, stream
from engine.errors import InvalidInputs
from engine.statuses import SETTLED_STATUSES

tag = Tag(name="runs", description="Submitting and following workflow runs")
bp = APIBlueprint("runs", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@bp.post("/workflows/<workflow_id>/runs",
         responses={200: RunOut, 202: RunAccepted, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody,
                    422: ErrorBody})
def submit_run(path: WorkflowPath, body: RunCreate) -> Any:
    """Start a run. async (default): 202 at once, then poll GET /v1/runs/{run_id}. sync: 200 with the
    run once it has ended (or waits for input) within `wait_s`, else 202. A repeated `idempotency_key`
    returns the run it started; 409 (naming that run) if the key started a run of another workflow."""
    who = principal("run")
    rt = runtime()
    started = rt.service.submit_run(who.space_id, path.workflow_id, body.inputs, body.version,
                                    body.idempotency_key, run_mode=body.mode)
    if body.mode == "sync":
        wait_s = min(body.wait_s or rt.settings.sync_wait_default_s, rt.settings.sync_wait_max_s)
        status = rt.follower.wait_settled(who.space_id, started["run_id"], wait_s)
        if status in SETTLED_STATUSES:
            return rt.service.get_run(who.space_id, started["run_id"]), 200
        return {"run_id": started["run_id"], "status": status}, 202
    return {"run_id": started["run_id"], "status": started["status"]}, 202


@bp.get("/runs/<run_id>", responses={200: RunOut, 401: ErrorBody, 404: ErrorBody})
def get_run(path: RunPath) -> Any:
    """Poll a run: status, outputs, error, every node's status and attempts, and what it waits for."""
    who = principal()
    return runtime().service.get_run(who.space_id, path.run_id)


@bp.get("/runs/<run_id>/diagnosis", responses={200: DiagnosisOut, 401: ErrorBody, 404: ErrorBody})
def diagnose_run(path: RunPath) -> Any:
    """Why the run is not moving: for each node that is not final, what it waits for (predecessors, a
    worker, a retry, a lease, an answer, child runs, the space's cap, the deadline) since when, in words."""
    who = principal()
    return runtime().service.diagnose_run(who.space_id, path.run_id)


@bp.get("/runs", responses={200: RunList, 401: ErrorBody, 404: ErrorBody, 422: ErrorBody})  # 404: `parent` is no run of the space
def list_runs(query: RunListQuery) -> Any:
    """List runs, newest first, cursor-paged: the runs clients submitted, or with `parent=RUN_ID` that
    run's child runs (a sub-workflow's run, a batch's items), never both; `source=RUN_ID`: that run's reruns."""
    who = principal()
    return runtime().service.list_runs(who.space_id, query.workflow_id, query.status, query.cursor, query.limit,
                                       parent=query.parent, source=query.source)


@bp.post("/runs/<run_id>/cancel", responses={202: RunAccepted, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody,
                                              409: ErrorBody})
def cancel_run(path: RunPath) -> Any:
    """Cancel a queued, running or interrupted run."""
    who = principal("run")
    return runtime().service.cancel_run(who.space_id, path.run_id), 202


@bp.post("/runs/<run_id>/resume", responses={202: ResumeAccepted, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody,
                                              409: ErrorBody, 422: ErrorBody})
def resume_run(path: RunPath, body: ResumeBody) -> Any:
    """Answer the run's interrupt (`interrupt.event_id`), exactly once. 409 if the run is not waiting for
    that event (or it was answered already); 422 if the answer does not fit, and the run keeps waiting."""
    who = principal("run")
    return runtime().service.resume_run(who.space_id, path.run_id, body.event_id, body.data), 202


@bp.get("/runs/<run_id>/events", responses={200: STREAM_RESPONSE, 401: ErrorBody, 404: ErrorBody, 422: ErrorBody})
def run_events(path: RunPath, query: EventsQuery) -> Any:
    """Server-Sent Events of the run's lifecycle: replays after `Last-Event-ID`, then follows live, sends a
    keep-alive comment at least every 15 s, and ends after the run's final event."""
    who = principal()
    rt = runtime()
    after = _last_event_id(query.last_event_id)
    lease = rt.streams.open(who.token_id)  # 429 past the token's cap
    try:
        # a revoked or expired token's stream just ends: the client's reconnect gets the 401
        feed = rt.follower.events(who.space_id, path.run_id, after, keepalive_s=rt.settings.sse_keepalive_s,
                                  max_s=rt.settings.sse_max_s, check=lease.check,
                                  check_every_s=rt.settings.stream_recheck_s)
    except BaseException:
        lease.release()
        raise
    return stream(_frames(feed), on_close=lease.release)


def _last_event_id(from_query: int | None) -> int:
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return from_query or 0
    try:
        value = int(header.strip())
    except ValueError:
        raise InvalidInputs(errors=[{"field": "Last-Event-ID", "message": "must be an event id (an integer)"}]) from None
    if value < 0:
        raise InvalidInputs(errors=[{"field": "Last-Event-ID", "message": "must not be negative"}])
    return value


def _frames(feed: Iterator[dict[str, Any] | None]) -> Iterator[str]:
    for event in feed:
        if event is None:
            yield KEEPALIVE
            continue
        yield frame(event["type"], {
            "id": event["id"], "type": event["type"], "node_id": event["node_id"], "data": event["data"],
            "created_at": event["created_at"].isoformat() if isinstance(event["created_at"], datetime) else None,
        }, event["id"])

