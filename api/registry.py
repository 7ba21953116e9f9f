"""Model registry routes: list the models, re-read the model files (operator).

A space token sees what a workflow author needs (id, name, protocol, capability, status,
parameters); an operator also sees where each model is reached and read from (base URL,
upstream model, key variable name, source path, problems). No one sees a key or a header value.
"""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody, ModelList, RefreshOut
from api.runtime import principal, runtime
from engine.models import list_models, refresh

tag = Tag(name="models", description="The model registry (conf/model/*.yaml and MODEL_* environment models)")
bp = APIBlueprint("models", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@bp.get("/models", responses={200: ModelList, 401: ErrorBody})
def get_models() -> Any:
    """List the registry's models: connection details and sources for an operator token only; never keys."""
    who = principal()
    rt = runtime()
    return list_models(rt.store.models, rt.settings.model_path, operator=who.is_operator)


@bp.post("/models/refresh", responses={200: RefreshOut, 401: ErrorBody, 403: ErrorBody})
def refresh_models() -> Any:
    """Re-read the model files and environment models; every worker uses them for its next node."""
    principal("operator")
    rt = runtime()
    result = refresh(rt.store.models, rt.settings.model_path)
    problems = f"; {len(result.problems)} source(s) skipped, see data.problems" if result.problems else ""
    return {"code": 0, "msg": f"{result.model_count} models loaded{problems}", "data": result.to_dict()}
