"""Workflow routes: create, new version, publish, list, show."""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import (
    ErrorBody,
    ListQuery,
    WorkflowCreate,
    WorkflowList,
    WorkflowOut,
    WorkflowPath,
    WorkflowPublish,
    WorkflowPublished,
    WorkflowUpdate,
    WorkflowVersionOut,
)
from api.runtime import principal, runtime

tag = Tag(name="workflows", description="Workflow definitions and their immutable versions")
bp = APIBlueprint("workflows", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])
_ERRORS: dict[str | int, Any] = {401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 422: ErrorBody}


@bp.post("/workflows", responses={201: WorkflowVersionOut, 401: ErrorBody, 403: ErrorBody, 422: ErrorBody})
def create_workflow(body: WorkflowCreate) -> Any:
    """Create a workflow; its definition is validated and stored as version 1."""
    who = principal("manage")
    return runtime().service.create_workflow(who.space_id, body.name, body.description, body.definition), 201


@bp.put("/workflows/<workflow_id>", responses={200: WorkflowVersionOut, **_ERRORS})
def update_workflow(path: WorkflowPath, body: WorkflowUpdate) -> Any:
    """Store a new immutable version of the workflow."""
    who = principal("manage")
    return runtime().service.update_workflow(who.space_id, path.workflow_id, body.definition,
                                             body.name, body.description)


@bp.post("/workflows/<workflow_id>/publish", responses={200: WorkflowPublished, **_ERRORS})
def publish_workflow(path: WorkflowPath, body: WorkflowPublish) -> Any:
    """Mark a version published (default: the latest)."""
    who = principal("manage")
    return runtime().service.publish_workflow(who.space_id, path.workflow_id, body.version)


@bp.get("/workflows", responses={200: WorkflowList, 401: ErrorBody, 422: ErrorBody})
def list_workflows(query: ListQuery) -> Any:
    """List the space's workflows, newest first."""
    who = principal()
    return {"workflows": runtime().service.list_workflows(who.space_id, query.limit, query.offset)}


@bp.get("/workflows/<workflow_id>", responses={200: WorkflowOut, 401: ErrorBody, 404: ErrorBody})
def get_workflow(path: WorkflowPath) -> Any:
    """Show a workflow: versions, published version and latest definition."""
    who = principal()
    return runtime().service.get_workflow(who.space_id, path.workflow_id)
