"""Features the dashboard shows only when the server has them: rerun from a node and the
diagnosis ("why is this run not moving"), built by other parts of issue 13.

Each is found by its service method; absent, the run page says nothing of it. To wire a new
feature: name its service method here (the run page and the POST route already call these).
"""
from __future__ import annotations

import logging
from typing import Any

from api.runtime import runtime

log = logging.getLogger("relayflow.api")
# Service method names, tried in order (issue 13's `rerun` and `diagnosis` parts).
RERUN_METHODS = ("rerun_run", "rerun")
DIAGNOSIS_METHODS = ("diagnose_run", "diagnosis", "get_diagnosis")


def _method(names: tuple[str, ...]) -> Any:
    service = runtime().service
    for name in names:
        found = getattr(service, name, None)
        if callable(found):
            return found
    return None


def can_rerun() -> bool:
    """Whether this server can rerun a run from a node."""
    return _method(RERUN_METHODS) is not None


def rerun(space_id: str, run_id: str, from_node: str) -> str | None:
    """Start a rerun from `from_node`; its run id (None: the server has no rerun)."""
    method = _method(RERUN_METHODS)
    if method is None:
        return None
    started = method(space_id, run_id, from_node)
    return str(started["run_id"]) if isinstance(started, dict) else str(started)


def diagnosis(space_id: str, run_id: str) -> list[dict[str, Any]] | None:
    """Why each non-final node is not moving, as `{node_id, status, waiting_for, since, detail}`
    (None: the server has no diagnosis)."""
    method = _method(DIAGNOSIS_METHODS)
    if method is None:
        return None
    try:
        found = method(space_id, run_id)
    except TypeError:  # a signature this page does not know: show nothing rather than fail the page
        log.warning("event=ui.hook_mismatch hook=diagnosis method=%s", getattr(method, "__name__", "?"))
        return None
    return list(found.get("nodes", [])) if isinstance(found, dict) else list(found or [])
