"""`GET /healthz`: liveness for anyone; PostgreSQL and Redis details and queue depth for an operator.

Without a token it answers only `{"status": "ok"}` (200) or `{"status": "unavailable"}` (503): the
queue depth and the pending node counts are totals across every space, so only an operator
token (the `operator` scope, made with database access) sees them. A token that is sent is
checked like on any route (a bad one is a 401 and counts towards the failed-attempt limit).
"""
from __future__ import annotations

from typing import Any

from flask import request
from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody, Health
from api.runtime import principal, runtime
from engine.errors import EngineError

bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


@bp.get("/healthz", responses={200: Health, 503: Health, 401: ErrorBody, 429: ErrorBody})
def healthz() -> Any:
    """Liveness (PostgreSQL and Redis reachable); with an operator token, the details and queue depth."""
    rt = runtime()
    body: dict[str, Any] = {"status": "ok", "postgres": "ok", "redis": "ok"}
    try:
        rt.store.views.ping()
    except Exception as exc:
        body.update(status="unavailable", postgres=f"unavailable: {type(exc).__name__}")
    try:
        rt.redis.ping()
    except Exception as exc:
        body.update(status="unavailable", redis=f"unavailable: {type(exc).__name__}")
    status = 200 if body["status"] == "ok" else 503
    if not _operator():
        return {"status": body["status"]}, status
    try:
        body["nodes"] = rt.store.views.pending_counts()
        queue = rt.settings.queue_name
        body["queue_depth"] = int(rt.redis.llen(f"dramatiq:{queue}"))
        body["delayed"] = int(rt.redis.llen(f"dramatiq:{queue}.DQ"))  # retries waiting for their time
    except Exception:  # the ping above already says which one is down
        pass
    return body, status


def _operator() -> bool:
    """True when the request carries a valid operator token (a bad token raises its 401/429)."""
    if not request.headers.get("Authorization"):
        return False
    try:
        return principal().is_operator
    except EngineError:
        raise
    except Exception:  # the database is down: the token cannot be checked, liveness says so
        return False
