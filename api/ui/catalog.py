"""Workflows (list, versions, definition, run form), models (keys never shown), prompts (list, search,
versions) and the API docs page."""
from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml
from flask import abort, redirect, request, send_from_directory
from flask.typing import ResponseReturnValue

from api.runtime import runtime
from api.ui import bp, forms, render, session
from engine import prompt_library as library
from engine.errors import InvalidInputs
from engine.models import list_models, refresh


def _version_arg() -> int | None:
    raw = request.values.get("version", "")
    return int(raw) if raw.isdigit() else None


@bp.get("/workflows")
def workflows_page() -> ResponseReturnValue:
    """The space's workflows."""
    who = session.current()
    return render("workflows.html", workflows=runtime().service.list_workflows(who.space_id, 200))


def _workflow_context(workflow_id: str, version: int | None) -> dict[str, Any]:
    who = session.current()
    rt = runtime()
    workflow = rt.service.get_workflow(who.space_id, workflow_id, with_definition=False)
    record = rt.store.catalog.get_version(workflow_id, who.space_id, version)
    compiled = rt.service.versions.get(record.id)
    text = _yaml(record.definition)
    diff = None
    compare = request.args.get("compare", "")
    if compare.isdigit() and int(compare) != record.version:
        older = rt.store.catalog.get_version(workflow_id, who.space_id, int(compare))
        diff = list(difflib.unified_diff(_yaml(older.definition).splitlines(), text.splitlines(),
                                         f"v{older.version}", f"v{record.version}", lineterm=""))
    return {"workflow": workflow, "version": record.version, "definition": text, "diff": diff,
            "compare": int(compare) if compare.isdigit() else None,
            "fields": forms.input_fields(compiled.inputs), "values": {}, "errors": []}


def _yaml(definition: Any) -> str:
    return str(yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=100))


@bp.get("/workflows/<workflow_id>")
def workflow_page(workflow_id: str) -> ResponseReturnValue:
    """A workflow: its versions, one version's definition and a run form from its declared inputs."""
    return render("workflow.html", **_workflow_context(workflow_id, _version_arg()))


@bp.post("/workflows/<workflow_id>/runs")
def start_run(workflow_id: str) -> ResponseReturnValue:
    """Start a run from the form; a wrong input shows the form again with each field's error."""
    who = session.current()
    who.require("run")
    context = _workflow_context(workflow_id, _version_arg())
    try:
        inputs = forms.parse_inputs(context["fields"], request.form)
        started = runtime().service.submit_run(who.space_id, workflow_id, inputs, context["version"])
    except InvalidInputs as exc:
        values = {k.removeprefix(forms.FORM_PREFIX): v for k, v in request.form.items()}
        return render("workflow.html", **{**context, "values": values, "errors": exc.errors}), 422
    return redirect(f"/ui/runs/{started['run_id']}", 303)


@bp.post("/workflows/<workflow_id>/publish")
def publish(workflow_id: str) -> ResponseReturnValue:
    """Publish the shown version (manage scope): Coze-compatible runs use it."""
    who = session.current()
    who.require("manage")
    version = _version_arg()
    runtime().service.publish_workflow(who.space_id, workflow_id, version)
    return redirect(f"/ui/workflows/{workflow_id}?version={version or ''}", 303)


@bp.get("/models")
def models_page(notice: str = "") -> ResponseReturnValue:
    """The model registry as the API lists it for this token: never a key."""
    who = session.current()
    rt = runtime()
    return render("models.html", notice=notice,
                  registry=list_models(rt.store.models, rt.settings.model_path, operator=who.is_operator))


@bp.post("/models/refresh")
def refresh_models() -> ResponseReturnValue:
    """Re-read the model files (operator scope), as POST /v1/models/refresh does."""
    who = session.current()
    who.require("operator")
    result = refresh(runtime().store.models, runtime().settings.model_path)
    changed = f"{len(result.new_models)} new, {len(result.updated_models)} updated, {len(result.removed_models)} removed"
    return models_page(f"Re-read: {result.model_count} models ({changed}).")


@bp.get("/prompts")
def prompts_page() -> ResponseReturnValue:
    """The space's prompts, newest first; `q` searches key, name, description and latest text."""
    who = session.current()
    q = request.args.get("q", "").strip() or None
    page = library.list_page(runtime().store, who, cursor=request.args.get("cursor") or None, limit=50, q=q,
                             tag=None, creator=None, label=None)
    return render("prompts.html", page=page, q=q or "")


@bp.get("/prompts/<key>")
def prompt_page(key: str) -> ResponseReturnValue:
    """One prompt at a version (default: production, else latest), with links to every version."""
    who = session.current()
    found = library.get(runtime().store, who, key, _version_arg(), None)
    shown = json.dumps(found["version"].get("messages"), ensure_ascii=False, indent=2) if found["version"].get(
        "messages") else None
    compare = request.args.get("compare", "")
    diff = None
    if compare.isdigit() and int(compare) != found["version"]["number"]:
        diff = library.diff(runtime().store, who, key, int(compare), found["version"]["number"])
    return render("prompt.html", prompt=found, messages=shown, diff=diff, moved=request.args.get("moved"))


@bp.post("/prompts/<key>/labels")
def move_prompt_label(key: str) -> ResponseReturnValue:
    """Point a label at a version (the library's rules: `manage` scope, the prompt's creator or an admin)."""
    who = session.current()
    who.require("manage")
    label = request.form.get("label", "").strip()
    version = _version_arg()
    if version is None:
        raise InvalidInputs(errors=[{"field": "version", "message": "choose a version"}])
    library.move_label(runtime().store, who, key, label, version)
    return redirect(f"/ui/prompts/{key}?version={version}&moved={label}", 303)


def _swagger_folder() -> Path | None:
    spec = importlib.util.find_spec("flask_openapi3_swagger")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "templates" / "swagger"
    return folder if folder.is_dir() else None


@bp.get("/api-docs")
def api_docs() -> ResponseReturnValue:
    """Swagger UI for /openapi.json, from the flask-openapi3-swagger package (nothing from a CDN)."""
    session.current()
    return render("api_docs.html", swagger=_swagger_folder() is not None)


@bp.get("/swagger/<path:name>")
def swagger_static(name: str) -> ResponseReturnValue:
    """Swagger UI's files, served from the installed package."""
    folder = _swagger_folder()
    if folder is None:
        abort(404)
    return send_from_directory(folder, name, max_age=86400)
