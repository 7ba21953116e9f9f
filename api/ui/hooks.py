"""Features the dashboard shows only when the server has them: rerun from a node and the
diagnosis ("why is this run not moving"), built by other parts of issue 13.

Each is found by its service attribute path; absent, the run page says nothing of it. To wire a
feature that lands under another name: add its path here (the run page and the POST route call these).
"""
from __future__ import annotations

import logging
from typing import Any

from api.runtime import runtime

log = logging.getLogger("relayflow.api")
# Attribute paths on the service, tried in order (issue 13's `rerun` and `diagnosis` parts).
RERUN_PATHS = ("reruns.rerun", "rerun_run")
DIAGNOSIS_PATHS = ("diagnose_run",)


def find(service: Any, paths: tuple[str, ...]) -> Any:
    """The first callable at one of `paths` (`a.b`: attribute b of attribute a), or None."""
    for path in paths:
        found = service
        for part in path.split("."):
            found = getattr(found, part, None)
        if callable(found):
            return found
    return None


def can_rerun() -> bool:
    """Whether this server can rerun a run from a node."""
    return find(runtime().service, RERUN_PATHS) is not None


def rerun(space_id: str, run_id: str, from_node: str) -> str | None:
    """Start a rerun from `from_node`; its run id (None: the server has no rerun)."""
    method = find(runtime().service, RERUN_PATHS)
    if method is None:
        return None
    started = method(space_id, run_id, from_node)
    return str(started["run_id"]) if isinstance(started, dict) else str(started)


def diagnosis(space_id: str, run_id: str) -> dict[str, Any] | None:
    """Why the run is not moving: `{summary, nodes: [{node_id, status, waiting_for, since, detail}]}`
    (None: the server has no diagnosis)."""
    method = find(runtime().service, DIAGNOSIS_PATHS)
    if method is None:
        return None
    try:
        found = method(space_id, run_id)
    except TypeError:  # a signature this page does not know: show nothing rather than fail the page
        log.warning("event=ui.hook_mismatch hook=diagnosis method=%s", getattr(method, "__name__", "?"))
        return None
    return found if isinstance(found, dict) else {"summary": "", "nodes": list(found or [])}
