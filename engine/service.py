"""The application service the API (and CLI) call: workflows, runs, health.

Thin glue between validation (compiler), storage and dispatch; no SQL, no HTTP.
"""
from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from engine import metrics, telemetry
from engine.children import check_no_recursion
from engine.compiler import CompiledWorkflow, compile_workflow
from engine.cost import usd
from engine.definition import DefinitionLimits, load_definition
from engine.diagnosis import Deployment, diagnose, shapes_of
from engine.dispatch import Dispatcher
from engine.errors import (
    DefinitionError,
    IdempotencyKeyInUse,
    InvalidInputs,
    InvalidTransition,
    NotPublished,
    RunNotFound,
)
from engine.models import ModelIds
from engine.nodes.code import memory_cap_errors
from engine.nodes.llm import ModelChoice, unknown_model_errors
from engine.nodes.prompt_ref import missing_prompt_errors, prompt_refs
from engine.notify import Notifier, NullNotifier
from engine.reruns import RERUNS_SHOWN, Reruns
from engine.settings import Settings
from engine.statuses import FINAL_STATUSES, LIVE_STATUSES, NodeStatus, RunStatus
from engine.store import NewRun, Store
from engine.template_limits import Limits, configure
from engine.versions import VersionCache

_LAST_UUID = uuid.UUID(int=(1 << 128) - 1)  # sorts after every run id created at the same instant
CANCEL_WAKE_LIMIT = 100  # waiting nodes a cancel may wake (never more than the space's free slots)
SEARCH_SCAN_RUNS = 5000  # runs a search page reads at most (their inputs matched one by one, no index)


class Relayflow:
    """Workflows and runs of a space."""

    def __init__(self, store: Store, dispatcher: Dispatcher, settings: Settings,
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.notifier = notifier or NullNotifier()
        self.versions = VersionCache(store.catalog)
        self.model_ids = ModelIds(store.models)
        self.definition_limits = DefinitionLimits.from_settings(settings)
        configure(Limits.from_settings(settings))
        self.reruns = Reruns(self)  # rerun from a node, in bulk (engine/reruns.py)

    # -- workflows --------------------------------------------------------------------------
    def create_workflow(self, space_id: str, name: str, description: str | None,
                        definition: Any) -> dict[str, Any]:
        """Validate a definition and store it as version 1 of a new workflow."""
        doc = load_definition(definition, self.definition_limits)
        compiled = compile_workflow(doc)
        self._check_operator_caps(compiled)
        self._check_prompts(space_id, compiled)
        check_no_recursion(self.store, space_id, None, name, doc)
        record = self.store.catalog.insert_workflow("wf_" + uuid.uuid4().hex[:20], space_id, name,
                                                    description, doc, _node_facts(compiled))
        self.versions.put(record.id, compiled)
        return {"workflow_id": record.workflow_id, "version": record.version}

    def update_workflow(self, space_id: str, workflow_id: str, definition: Any,
                        name: str | None = None, description: str | None = None) -> dict[str, Any]:
        """Validate a definition and store it as the workflow's next immutable version."""
        doc = load_definition(definition, self.definition_limits)
        compiled = compile_workflow(doc)
        self._check_operator_caps(compiled)
        self._check_prompts(space_id, compiled)
        current = self.store.catalog.get_workflow(workflow_id, space_id)  # WorkflowNotFound first
        check_no_recursion(self.store, space_id, workflow_id, name or current["name"], doc)
        record = self.store.catalog.add_version(workflow_id, space_id, doc, _node_facts(compiled), name, description)
        self.versions.put(record.id, compiled)
        self.versions.forget_latest(space_id, workflow_id)  # other processes learn it at their next submit
        return {"workflow_id": record.workflow_id, "version": record.version}

    def _check_operator_caps(self, compiled: CompiledWorkflow) -> None:
        """Refuse (422) what this server cannot give the definition: code memory over the cap,
        a model the registry does not have."""
        configs = {(f"{body}/{node_id}" if body else node_id): node.config
                   for body, graph in [("", compiled), *compiled.bodies()] for node_id, node in graph.nodes.items()}
        errors = memory_cap_errors(configs, self.settings.code_memory_max_mb)
        if any(isinstance(config, ModelChoice) for config in configs.values()):  # spare the query otherwise
            errors += unknown_model_errors(configs, self.model_ids.current(self.settings.model_path))
        if errors:
            raise DefinitionError(errors=errors)

    def _check_prompts(self, space_id: str, compiled: CompiledWorkflow) -> None:
        """Refuse (422) a definition naming a prompt, version or label the space's library lacks."""
        configs = {(f"{body}/{node_id}" if body else node_id): node.config
                   for body, graph in [("", compiled), *compiled.bodies()] for node_id, node in graph.nodes.items()}
        refs = prompt_refs(configs)
        if not refs:
            return
        known = self.store.prompts.referenced(space_id, sorted({r.key for r in refs.values()}))
        errors = missing_prompt_errors(refs, known)
        if errors:
            raise DefinitionError(errors=errors)

    def publish_workflow(self, space_id: str, workflow_id: str, version: int | None) -> dict[str, Any]:
        """Mark a version published (default: the latest)."""
        return {"workflow_id": workflow_id,
                "published_version": self.store.catalog.publish(workflow_id, space_id, version)}

    def get_workflow(self, space_id: str, workflow_id: str, with_definition: bool = True) -> dict[str, Any]:
        """A workflow, its versions and (by default) its latest definition."""
        found = self.store.catalog.get_workflow(workflow_id, space_id)
        if with_definition:
            found["definition"] = self.store.catalog.get_version(workflow_id, space_id, None).definition
        return found

    def list_workflows(self, space_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Workflows of the space, newest first."""
        return self.store.catalog.list_workflows(space_id, limit, offset)

    # -- runs ---------------------------------------------------------------------------------
    def submit_run(self, space_id: str, workflow_id: str, inputs: dict[str, Any] | None,
                   version: int | None = None, idempotency_key: str | None = None,
                   run_mode: str = "async", published: bool = False) -> dict[str, Any]:
        """Validate inputs, insert the run pinned to one version, then send its first nodes.

        `published` runs the workflow's published version (Coze's routes); NotPublished if none.
        """
        if published:
            version = self.store.catalog.get_workflow(workflow_id, space_id)["published_version"]
            if version is None:
                raise NotPublished(f"Workflow {workflow_id} has no published version; publish it first "
                                   f"(POST /v1/workflows/{workflow_id}/publish).")
        for _ in range(3):  # a newer latest version stored meanwhile by another process: validate against it
            version_id, number, compiled = self.versions.resolve(space_id, workflow_id, version)
            if inputs is not None and not isinstance(inputs, dict):
                raise InvalidInputs(errors=[{"field": "inputs", "message": "must be an object"}])
            clean = compiled.validate_inputs(inputs or {})
            submitted = self.store.lifecycle.insert_run(NewRun(
                run_id=uuid.uuid4(), space_id=space_id, workflow_id=workflow_id, version_id=version_id,
                version=number, inputs=clean, node_count=len(compiled.nodes),
                roots=[(n, 0, compiled.nodes[n].join == "any") for n in compiled.roots],
                idempotency_key=idempotency_key, deadline_s=compiled.deadline_s, run_mode=run_mode,
                latest=version is None))
            if not submitted.stale:
                break
            self.versions.forget_latest(space_id, workflow_id)
        else:
            raise InvalidTransition(f"Workflow {workflow_id} kept getting new versions; submit again.")
        if submitted.workflow_id != workflow_id:
            # As Stripe does for a key reused with other parameters: answering with another
            # workflow's run would tell the client its run started when it never will.
            raise IdempotencyKeyInUse(
                f"This idempotency key already started run {submitted.run_id} of workflow "
                f"{submitted.workflow_id}; a key belongs to one workflow, so use a new key for {workflow_id}.",
                run_id=str(submitted.run_id), workflow_id=submitted.workflow_id)
        if submitted.created:
            metrics.run_started(run_mode)
            for node_id in compiled.roots:
                self.dispatcher.send(str(submitted.run_id), node_id, pure=compiled.nodes[node_id].node_type.pure)
        return {"run_id": str(submitted.run_id), "status": submitted.status, "created": submitted.created}

    def get_run(self, space_id: str | None, run_id: str) -> dict[str, Any]:
        """The run object of API.md."""
        found = self.store.views.run_with_nodes(_run_uuid(run_id), space_id, RERUNS_SHOWN)
        if found is None:
            raise RunNotFound(f"Run {run_id} not found.")
        run, rows = found
        compiled = self.versions.get(run["version_id"], run.get("body") or "")
        shown = _run_object(run, rows, compiled)
        shown.update(self.reruns.lineage(space_id, run, shown["nodes"]))  # rerun: source_run_id, rerun_from, reruns
        return shown

    def list_runs(self, space_id: str, workflow_id: str | None = None, status: str | None = None,
                  cursor: str | None = None, limit: int = 20, parent: str | None = None,
                  source: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, parent_node: str | None = None) -> dict[str, Any]:
        """Runs of the space (the child runs of `parent`, or the reruns of `source`, if given), newest
        first, cursor-paged; `since`/`until` keep those created in [since, until) (the dashboard's
        time range)."""
        if status is not None and status not in frozenset(RunStatus):
            raise InvalidInputs(errors=[{"field": "status", "message": f"must be one of {', '.join(RunStatus)}"}])
        limit = max(1, min(limit, 200))
        parent_id = _run_uuid(parent) if parent is not None else None
        # newest first: `until` is a cursor before the first page, `since` where paging stops
        before = _decode_cursor(cursor) or ((until, _LAST_UUID) if until is not None else None)
        if source is not None:
            rows = self.store.reruns.list_reruns(space_id, _run_uuid(source), status, before, limit + 1)
        else:
            rows = self.store.views.list_runs(space_id, workflow_id, status, before, limit + 1, parent=parent_id,
                                              parent_node=parent_node if parent_id is not None else None)
        page, more = rows[:limit], len(rows) > limit
        if since is not None:
            kept = [r for r in page if r["created_at"] >= since]
            page, more = kept, more and len(kept) == len(page)
        next_cursor = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
        return {"runs": [_run_summary(r) for r in page], "next_cursor": next_cursor}

    def search_runs(self, space_id: str, text: str, workflow_id: str | None = None, status: str | None = None,
                    cursor: str | None = None, limit: int = 20, since: datetime | None = None,
                    until: datetime | None = None, scan: int = SEARCH_SCAN_RUNS) -> dict[str, Any]:
        """Top-level runs whose inputs contain `text` (any case), newest first: each page scans at most
        `scan` runs of the range, and `next_cursor` continues the scan where it stopped."""
        limit = max(1, min(limit, 200))
        before = _decode_cursor(cursor) or ((until, _LAST_UUID) if until is not None else None)
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.store.views.search_runs(space_id, pattern, workflow_id, status, since, before, scan, limit + 1)
        hits = [r for r in rows if r["hit"]]
        ends = [r for r in rows if not r["hit"]]
        scanned = int(rows[0]["scanned"]) if rows else 0
        last: dict[str, Any] | None
        if len(hits) > limit:  # the page is full before the scan's end: go on after its last run
            hits, last = hits[:limit], hits[limit - 1]
        else:  # the whole window was searched: go on after it, if it was cut at `scan`
            last = ends[0] if ends and scanned >= scan else None
        return {"runs": [_run_summary(r) for r in hits], "scanned": scanned,
                "searched_back_to": _iso(last["created_at"]) if last else None,
                "next_cursor": _encode_cursor(last["created_at"], last["id"]) if last else None}

    def count_runs(self, space_id: str, workflow_id: str | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> dict[str, int]:
        """The space's top-level runs by status (every run status, 0 if none), as `list_runs` filters them."""
        found = self.store.views.status_counts(space_id, workflow_id, since, until)
        return {status.value: found.get(status.value, 0) for status in RunStatus}

    def cancel_run(self, space_id: str, run_id: str) -> dict[str, Any]:
        """Cancel a live run (queued, running or interrupted)."""
        ended = self.store.lifecycle.end_run(_run_uuid(run_id), RunStatus.CANCELLED, None, space_id=space_id)
        found, changed = ended.found, ended.changed
        telemetry.run_ended(self.store, ended, space_id)
        if ended.parent is not None:  # a child run cancelled by itself: its parent node fails (or retries)
            self.dispatcher.send(str(ended.parent[0]), ended.parent[1])
            self.notifier.run_changed(str(ended.parent[0]))
        if not found:
            raise RunNotFound(f"Run {run_id} not found.")
        if changed:
            self.notifier.run_changed(run_id)
            # Its running nodes gave their slots back: send nodes of the space waiting for one
            # (best effort; the reconciler's sweep wakes them otherwise).
            for woken_run, node_id in self.store.lifecycle.wake_waiters(
                    space_id, self.settings.space_max_running_nodes, CANCEL_WAKE_LIMIT):
                self.dispatcher.send(str(woken_run), node_id)
        if not changed:
            status = self.store.views.run_status(_run_uuid(run_id))
            *others, last = [s for s in RunStatus if s in LIVE_STATUSES]
            raise InvalidTransition(f"Run {run_id} is already {status}; only {', '.join(others)} or {last} runs "
                                    "can be cancelled.")
        return {"run_id": run_id, "status": RunStatus.CANCELLED}


    def resume_run(self, space_id: str, run_id: str, event_id: str, data: Any) -> dict[str, Any]:
        """Answer the run's oldest pending interrupt, exactly once; the node then finishes with the answer."""
        found = self.store.views.run_with_nodes(_run_uuid(run_id), space_id, RERUNS_SHOWN)
        if found is None:
            raise RunNotFound(f"Run {run_id} not found.")
        run, _rows = found
        pending = run["interrupt"]
        if run["status"] != RunStatus.INTERRUPTED or pending is None:
            raise InvalidTransition(f"Run {run_id} is {run['status']}; it is not waiting for input.",
                                    field="event_id")
        if pending["event_id"] != event_id:
            answered = self.store.views.interrupt(_run_uuid(run_id), event_id)
            why = "was already answered" if answered else "is not an interrupt of this run"
            raise InvalidTransition(f"Event {event_id} {why}; the run is waiting for event "
                                    f"{pending['event_id']} (node {pending['node_id']}).", field="event_id")
        node = self.versions.get(run["version_id"], run.get("body") or "").nodes[pending["node_id"]]
        outputs = node.node_type.resume_outputs(pending["data"], data)
        done = self.store.lifecycle.resume_node(_run_uuid(run_id), space_id, event_id, data, outputs)
        if done is None:  # another resume of the same event won the race
            raise InvalidTransition(f"Event {event_id} was already answered.", field="event_id")
        node_id, status = done
        self.dispatcher.send(run_id, node_id)
        self.notifier.run_changed(run_id)
        return {"run_id": run_id, "status": status, "event_id": event_id, "node_id": node_id}


    def diagnose_run(self, space_id: str | None, run_id: str) -> dict[str, Any]:
        """Why the run is not moving: what each node that is not final waits for (engine/diagnosis.py)."""
        deployment = Deployment(self.settings.queue_name, self.settings.worker_heartbeat_s,
                                self.settings.max_crashes, self.settings.space_max_running_nodes)
        facts = self.store.diagnosis.facts(_run_uuid(run_id), space_id, deployment.queue, deployment.stale_s)
        if facts is None:
            raise RunNotFound(f"Run {run_id} not found.")
        compiled = self.versions.get(facts.run["version_id"], facts.run.get("body") or "")
        return diagnose(facts, shapes_of(compiled), deployment)

    def node_messages(self, run_id: str, after_id: int = 0) -> list[dict[str, Any]]:
        """The run's recorded message-node events after `after_id`, in order (a stream opened late replays them)."""
        rid, found = _run_uuid(run_id), []
        while batch := self.store.views.events_after(rid, after_id):
            found += [e for e in batch if e["type"] == "node.succeeded" and "message" in (e["data"] or {})]
            after_id = batch[-1]["id"]
        return found

    def event_cursor(self, run_id: str) -> int:
        """The id of the run's newest event: a stream that starts after it sees only what follows."""
        return self.store.views.last_event_id(_run_uuid(run_id))


def _node_facts(compiled: CompiledWorkflow) -> list[tuple[str, str, list[str], bool]]:
    """(body, node id, deps, needs run inputs) of every node, the nodes of inline bodies included."""
    return [(body, n.id, list(n.deps), n.needs_run_inputs)
            for body, graph in [("", compiled), *compiled.bodies()] for n in graph.nodes.values()]


def _run_uuid(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(run_id))
    except ValueError:
        raise RunNotFound(f"Run {run_id} not found.") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _run_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": str(r["id"]), "workflow_id": r["workflow_id"], "version": r["version"],
            "status": r["status"], "error": r["error"], "usage": _run_usage(r),
            "created_at": _iso(r["created_at"]), "started_at": _iso(r["started_at"]),
            "finished_at": _iso(r["finished_at"]),
            "parent_run_id": str(r["parent_run_id"]) if r["parent_run_id"] else None,
            "parent_node_id": r["parent_node_id"], "item_index": r["item_index"],
            "source_run_id": str(r["source_run_id"]) if r.get("source_run_id") else None,
            "rerun_from": r.get("rerun_from")}


def _encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        at, _, rid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(rid)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputs(errors=[{"field": "cursor", "message": "is not a cursor this API returned"}]) from None


def _run_object(run: dict[str, Any], rows: list[dict[str, Any]], compiled: CompiledWorkflow) -> dict[str, Any]:
    by_id = {r["node_id"]: r for r in rows}
    # A node without a row was never reached. A run that ends stores a `cancelled` row for each
    # such node; runs ended before it did have none, and read the same.
    unreached = NodeStatus.CANCELLED if run["status"] in FINAL_STATUSES else NodeStatus.WAITING
    nodes = []
    for node_id in compiled.order:
        node, row = compiled.nodes[node_id], by_id.get(node_id)
        nodes.append({
            "node_id": node_id, "type": node.type_name, "title": node.title,
            "status": row["status"] if row else unreached,
            "attempts": row["attempts"] if row else 0,
            "started_at": _iso(row["started_at"]) if row else None,
            "finished_at": _iso(row["finished_at"]) if row else None,
            "error": row["error"] if row else None,
            "output": row["output"] if row else None,
            "attempt_errors": row["attempt_log"] if row else [],
            "model": row["model"] if row else None,
            "usage": _node_usage(row),
            "prompt": ({"key": row["prompt"]["key"], "version": row["prompt"]["version"]}
                       if row and row.get("prompt") else None),
            # diagnosis: the worker process holding a running node (`workers.id`)
            "worker": row.get("worker") if row and row["status"] == NodeStatus.RUNNING else None,
        })
        if node.body is not None or node.type_name == "workflow":
            # a composite node: its children's progress (counters, O(1)); the children themselves
            # are listed, paged, by GET /v1/runs?parent=<run_id>
            nodes[-1]["progress"] = {"done": row["children_done"] if row else 0,
                                     "total": row["children_total"] if row else 0,
                                     "started": row["children_started"] if row else 0}
    return {
        "run_id": str(run["id"]), "workflow_id": run["workflow_id"], "version": run["version"],
        "status": run["status"], "inputs": run["inputs"], "outputs": run["outputs"], "error": run["error"],
        "usage": _run_usage(run),
        "created_at": _iso(run["created_at"]), "started_at": _iso(run["started_at"]),
        "finished_at": _iso(run["finished_at"]), "updated_at": _iso(run.get("updated_at")),
        "run_mode": run.get("run_mode"), "nodes": nodes,
        "parent_run_id": str(run["parent_run_id"]) if run.get("parent_run_id") else None,
        "parent_node_id": run.get("parent_node_id"),
        "item_index": run.get("item_index"),
        "interrupt": interrupt_object(run.get("interrupt")),
    }


# -- cost (costmetrics): USD as JSON numbers; a run's includes its child runs' -------------------
def _run_usage(run: dict[str, Any]) -> dict[str, Any]:
    return {"input_tokens": run["input_tokens"], "output_tokens": run["output_tokens"], "cost": usd(run.get("cost"))}


def _node_usage(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deciding attempt's tokens, and `cost`: every attempt's (and child run's) spend."""
    if row is None or (row["usage"] is None and not row.get("cost")):
        return None
    return {**(row["usage"] or {}), "cost": usd(row.get("cost"))}


def interrupt_object(pending: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run object's `interrupt`: what the run waits for, and the event id to answer it with."""
    if pending is None:
        return None
    return {"event_id": pending["event_id"], "node_id": pending["node_id"], "type": pending["type"],
            "data": pending["data"]}
