"""Rerun routes: rerun one ended run from a node, or a workflow's failed runs of a time range in bulk."""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody, RunPath, WorkflowPath
from api.rerun_models import BulkRerunBody, BulkRerunOut, RerunAccepted, RerunBody
from api.runtime import principal, runtime

tag = Tag(name="reruns", description="Rerunning ended runs from a node, reusing the outcomes before it")
bp = APIBlueprint("reruns", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@bp.post("/runs/<run_id>/rerun", responses={202: RerunAccepted, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody,
                                             409: ErrorBody, 422: ErrorBody})
def rerun(path: RunPath, body: RerunBody) -> Any:
    """Start a new run of the same workflow version: `from_node` and everything downstream of it run again,
    every other node reuses the source run's recorded outcome (no side effect, no tokens charged). 409 if
    the source has not ended; 422 naming the field for an unknown node, a node whose upstream never
    succeeded, a child run as source, or an override that does not fit the node."""
    who = principal("run")
    overrides = body.overrides.model_dump(exclude_none=True) if body.overrides else None
    return runtime().service.reruns.rerun(who.space_id, path.run_id, body.from_node, body.inputs, overrides), 202


@bp.post("/workflows/<workflow_id>/reruns", responses={200: BulkRerunOut, 202: BulkRerunOut, 401: ErrorBody,
                                                        403: ErrorBody, 404: ErrorBody, 422: ErrorBody})
def bulk_rerun(path: WorkflowPath, body: BulkRerunBody) -> Any:
    """Rerun the workflow's failed (or cancelled) top-level runs created in [since, until), oldest first, at
    most `limit` (≤ 1000). `dry_run`: 200 with the count and the first source ids; else 202 with each
    rerun started. A source a bulk call of the same range already reran is skipped unless `again`."""
    who = principal("run")
    found = runtime().service.reruns.bulk(who.space_id, path.workflow_id, status=body.status, since=body.since,
                                          until=body.until, from_node=body.from_, limit=body.limit,
                                          dry_run=body.dry_run, again=body.again)
    return found, (200 if body.dry_run else 202)
