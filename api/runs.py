"""Run routes: submit, poll, list, cancel."""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody, RunAccepted, RunCreate, RunList, RunListQuery, RunOut, RunPath, WorkflowPath
from api.runtime import principal, runtime

tag = Tag(name="runs", description="Submitting and following workflow runs")
bp = APIBlueprint("runs", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@bp.post("/workflows/<workflow_id>/runs",
         responses={202: RunAccepted, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 422: ErrorBody})
def submit_run(path: WorkflowPath, body: RunCreate) -> Any:
    """Start a run (async): answers at once with its id; poll GET /v1/runs/{run_id}."""
    who = principal("run")
    started = runtime().service.submit_run(who.space_id, path.workflow_id, body.inputs, body.version,
                                           body.idempotency_key)
    return {"run_id": started["run_id"], "status": started["status"]}, 202


@bp.get("/runs/<run_id>", responses={200: RunOut, 401: ErrorBody, 404: ErrorBody})
def get_run(path: RunPath) -> Any:
    """Poll a run: status, outputs, error, and every node's status and attempts."""
    who = principal()
    return runtime().service.get_run(who.space_id, path.run_id)


@bp.get("/runs", responses={200: RunList, 401: ErrorBody, 422: ErrorBody})
def list_runs(query: RunListQuery) -> Any:
    """List runs, newest first, cursor-paged."""
    who = principal()
    return runtime().service.list_runs(who.space_id, query.workflow_id, query.status, query.cursor, query.limit)


@bp.post("/runs/<run_id>/cancel", responses={202: RunAccepted, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody})
def cancel_run(path: RunPath) -> Any:
    """Cancel a queued, running or interrupted run."""
    who = principal("run")
    return runtime().service.cancel_run(who.space_id, path.run_id), 202
