"""What the run page shows besides the graph: the node inspector's re-rendered inputs and prompt
and its attempts, the composite nodes with their child runs, and whether the run is moving (the
diagnosis opens only when it is not)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from api.runtime import runtime
from api.ui import bp
from api.ui.timeline import parse_time
from engine.prompt_cache import ResolvedPrompt
from engine.rerender import Rendered, rerender

CHILDREN_PAGE = 20  # child runs per page of an expanded composite node
STILL_S = 5.0  # nothing changed for this long: the run is not moving
SETTLE_S = 2.0  # a node waiting on something else than its predecessors for this long: not moving either
MOVING_CAUSES = frozenset({"predecessors", "lease", "children"})  # waits a moving run has all the time
AT_ONCE_CAUSES = frozenset({"answer", "deadline"})  # nothing happens until someone acts (or the run fails)
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


def not_moving(run: dict[str, Any], rows: list[dict[str, Any]], diagnosis: dict[str, Any], now: datetime) -> bool:
    """True when nothing changed for STILL_S, or a node waits (for SETTLE_S) on something else than its predecessors."""
    moments = [parse_time(run.get("updated_at")), parse_time(run.get("started_at")), parse_time(run.get("created_at"))]
    for row in rows:
        moments += [row.get("started_at"), row.get("finished_at"), row.get("queued_at")]
    latest = max((m for m in moments if m is not None and m <= now), default=None)
    if latest is None or (now - latest).total_seconds() >= STILL_S:
        return True
    for node in diagnosis.get("nodes") or ():
        since = parse_time(node.get("since"))
        cause = node.get("waiting_for")
        if cause in AT_ONCE_CAUSES or (cause not in MOVING_CAUSES
                                       and (since is None or now - since >= timedelta(seconds=SETTLE_S))):
            return True
    return False


@bp.app_template_filter("human_times")
def human_times(text: Any, now: datetime | None = None) -> str:
    """A sentence with its ISO times written `08:25:01 UTC (12 s ago)`."""
    source = str(text if text is not None else "")

    def one(match: re.Match[str]) -> str:
        moment = parse_time(match.group(0).replace("Z", "+00:00"))
        if moment is None or moment.tzinfo is None:
            return match.group(0)
        shown = moment.strftime("%H:%M:%S UTC") if now is None or moment.date() == now.date() \
            else moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        if now is None or source[match.end():match.end() + 2] == " (":  # the sentence says how long already
            return shown
        ago = (now - moment).total_seconds()
        return f"{shown} ({_ago(ago)})"
    return _ISO.sub(one, source)


def _ago(seconds: float) -> str:
    later = seconds < 0
    seconds = abs(seconds)
    amount = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
    return f"in {amount}" if later else f"{amount} ago"


def composites(space_id: str, run: dict[str, Any], expand: str | None, cursor: str | None) -> list[dict[str, Any]]:
    """The run's composite nodes (batch, loop, sub-workflow) with their progress; `expand`'s first page of children."""
    found = []
    for node in run["nodes"]:
        if node.get("progress") is None:
            continue
        entry: dict[str, Any] = {"node": node, "open": node["node_id"] == expand, "page": None}
        if entry["open"]:
            entry["page"] = runtime().service.list_runs(space_id, cursor=cursor,
                                                        limit=CHILDREN_PAGE, parent=run["run_id"],
                                                        parent_node=node["node_id"])
        found.append(entry)
    return found


def attempts(rows: list[dict[str, Any]], node_id: str | None) -> list[dict[str, Any]]:
    """The node's logged attempts: number, start, time taken, model, latency, tokens, cost, error."""
    row = next((r for r in rows if r["node_id"] == node_id), None)
    shown = []
    for entry in (row or {}).get("attempt_log") or ():
        began, ended = parse_time(entry.get("started_at")), parse_time(entry.get("at"))
        usage = entry.get("usage") or {}
        # a failed attempt names no answering model: the models it tried are in its failed calls
        tried = list(dict.fromkeys(str(c.get("model")) for c in entry.get("failed_calls") or () if c.get("model")))
        shown.append({"attempt": entry.get("attempt"), "started_at": began, "ended_at": ended,
                      "took_s": (ended - began).total_seconds() if began and ended else None,
                      "model": entry.get("model") or ", ".join(tried) or None, "latency_ms": entry.get("latency_ms"),
                      "input_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
                      "output_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
                      "cost": entry.get("cost"), "backoff_s": entry.get("backoff_s"),
                      "error": (entry.get("error") or {}).get("message") if entry.get("error") else None})
    return shown


def rendered(space_id: str, compiled: Any, run: dict[str, Any], rows: list[dict[str, Any]],
             node_id: str | None) -> Rendered | None:
    """The node's inputs (and an llm node's messages) rendered again from what the run recorded;
    None for a node that never started (nothing was rendered for it)."""
    node = compiled.nodes.get(node_id) if node_id else None
    by_id = {r["node_id"]: r for r in rows}
    row = by_id.get(node_id or "")
    if node is None or row is None or row.get("started_at") is None:
        return None
    deps = {dep: (by_id[dep]["output"] if dep in by_id else None) for dep in node.deps}
    return rerender(node, run["inputs"], deps, runtime().settings, _pinned(space_id, row.get("prompt")))


def _pinned(space_id: str, pin: dict[str, Any] | None) -> ResolvedPrompt | None:
    """The prompt version the node pinned, read from the library (versions never change; a prompt
    deleted since still has them)."""
    if not pin:
        return None
    store = runtime().store
    prompt = store.prompts.get(space_id, str(pin["key"]))
    found = store.prompts.version(prompt.id, int(pin["version"])) if prompt is not None else None
    if found is None:
        return None
    return ResolvedPrompt(str(pin["key"]), found.version, found.text, found.messages, found.variables)
