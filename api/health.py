"""`GET /healthz`: PostgreSQL and Redis reachability and queue depth; 503 when either is down."""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import Health
from api.runtime import runtime

bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


@bp.get("/healthz", responses={200: Health, 503: Health})
def healthz() -> Any:
    """Check PostgreSQL and Redis; report queue depth."""
    rt = runtime()
    body: dict[str, Any] = {"status": "ok", "postgres": "ok", "redis": "ok"}
    try:
        rt.store.views.ping()
        body["nodes"] = rt.store.views.pending_counts()
    except Exception as exc:
        body.update(status="unavailable", postgres=f"unavailable: {type(exc).__name__}")
    try:
        queue = rt.settings.queue_name
        body["queue_depth"] = int(rt.redis.llen(f"dramatiq:{queue}"))
        body["delayed"] = int(rt.redis.llen(f"dramatiq:{queue}.DQ"))  # retries waiting for their time
    except Exception as exc:
        body.update(status="unavailable", redis=f"unavailable: {type(exc).__name__}")
    return body, 200 if body["status"] == "ok" else 503
