"""Rerunning ended runs: from a node (reusing the outcomes before it), and in bulk over a time range.

Glue like engine/service.py (no SQL, no HTTP): checks the request, plans with engine/rerun_plan.py
(no I/O), inserts through the store in one statement, then sends the frontier's messages.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInputs, InvalidTransition, RunNotFound
from engine.nodes.llm import ModelChoice
from engine.nodes.prompt_ref import PromptRef
from engine.rerun_plan import Outcome, RerunPlan, input_names, plan_rerun, refused
from engine.statuses import FINAL_STATUSES, NodeStatus, RunStatus
from engine.store import NewRerun

if TYPE_CHECKING:
    from engine.compiler import CompiledWorkflow
    from engine.service import Relayflow

FAILED_NODE = "failed_node"  # bulk: each run reruns from the node that failed it
BULK_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED)
BULK_MAX = 1000
SHOWN = 10  # source ids a dry run lists; refusals a bulk answer lists
RERUNS_SHOWN = 20  # the run object's `reruns`


class Reruns:
    """Reruns of a space's runs (one per service; reads the service's dispatcher at each call, so a
    test's in-process dispatcher set on the service is used)."""

    def __init__(self, service: Relayflow) -> None:
        self.service = service

    # -- one run --------------------------------------------------------------------------
    def rerun(self, space_id: str, run_id: str, from_node: str, inputs: dict[str, Any] | None = None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a new run of the source's version from `from_node`; 202's body."""
        source = self._source(space_id, run_id)
        workflow = self.service.versions.get(source["version_id"])
        plan = self._plan(source, workflow, from_node)
        clean_inputs = None
        if inputs is not None:
            if not isinstance(inputs, dict):
                raise InvalidInputs(errors=[{"field": "inputs", "message": "must be an object"}])
            clean_inputs = workflow.validate_inputs(inputs)
        clean_overrides = self._check_overrides(space_id, workflow, from_node, overrides)
        new_id = self._insert(space_id, source, workflow, from_node, plan, clean_inputs, clean_overrides, None)
        if new_id is None:  # deleted (retention) between the read and the insert
            raise RunNotFound(f"Run {run_id} not found.")
        return {"run_id": str(new_id), "status": RunStatus.QUEUED, "source_run_id": str(source["id"]),
                "rerun_from": from_node, "reused": list(plan.reused), "rerun": list(plan.rerun)}

    def _source(self, space_id: str, run_id: str) -> dict[str, Any]:
        try:
            rid = uuid.UUID(str(run_id))
        except ValueError:
            raise RunNotFound(f"Run {run_id} not found.") from None
        source = self.service.store.reruns.source(rid, space_id)
        if source is None:
            raise RunNotFound(f"Run {run_id} not found.")
        if source["parent_run_id"] is not None:
            raise refused("run_id", f"run {run_id} is a child run of run {source['parent_run_id']}; "
                                    "rerun its top-level run instead (from the composite node)")
        if source["status"] not in FINAL_STATUSES:
            raise InvalidTransition(f"Run {run_id} is {source['status']}; only an ended run (succeeded, failed or "
                                    "cancelled) can be rerun: wait for it to end, or cancel it.", field="run_id")
        return source

    def _plan(self, source: dict[str, Any], workflow: CompiledWorkflow, from_node: str) -> RerunPlan:
        return plan_rerun(workflow, from_node, self._outcomes(source), str(source["id"]))

    def _outcomes(self, source: dict[str, Any]) -> dict[str, Outcome]:
        rows = self.service.store.reruns.outcomes(source["id"])
        return {r.node_id: Outcome(r.status, r.port, bool(r.settled)) for r in rows}

    def _insert(self, space_id: str, source: dict[str, Any], workflow: CompiledWorkflow, from_node: str,
                plan: RerunPlan, inputs: dict[str, Any] | None, overrides: dict[str, Any] | None,
                key: str | None) -> uuid.UUID | None:
        new_id = uuid.uuid4()
        inserted = self.service.store.reruns.insert(NewRerun(
            run_id=new_id, space_id=space_id, source_run_id=source["id"], from_node=from_node, inputs=inputs,
            overrides=overrides, reused=plan.reused, frontier=plan.frontier, remaining=plan.remaining,
            deadline_s=workflow.deadline_s, idempotency_key=key))
        if not inserted:
            return None
        for node_id in plan.queued:
            self.service.dispatcher.send(str(new_id), node_id)
        return new_id

    def _check_overrides(self, space_id: str, workflow: CompiledWorkflow, from_node: str,
                         overrides: dict[str, Any] | None) -> dict[str, Any] | None:
        """The overrides, checked against `from_node` (422 naming the field), or None if empty."""
        if not overrides:
            return None
        node = workflow.nodes[from_node]
        clean: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        given_inputs = overrides.get("inputs")
        if given_inputs:
            known = input_names(workflow, from_node)
            for name in given_inputs:
                if name not in known:
                    errors.append({"field": f"overrides.inputs.{name}",
                                   "message": f"node '{from_node}' has no input '{name}' "
                                              f"(its inputs: {', '.join(sorted(known)) or 'none'})"})
            clean["inputs"] = dict(given_inputs)
        if overrides.get("model") is not None:
            model = str(overrides["model"])
            if not isinstance(node.config, ModelChoice):
                errors.append({"field": "overrides.model",
                               "message": f"node '{from_node}' ({node.type_name}) calls no model"})
            else:
                ids = self.service.model_ids.current(self.service.settings.model_path)
                if model not in ids:
                    errors.append({"field": "overrides.model",
                                   "message": f"model '{model}' is not in the model registry "
                                              f"(available: {', '.join(sorted(ids)[:10]) or 'none'})"})
            clean["model"] = model
        if overrides.get("prompt_version") is not None:
            version = overrides["prompt_version"]
            ref = getattr(node.config, "prompt", None)
            if not isinstance(ref, PromptRef):
                errors.append({"field": "overrides.prompt_version",
                               "message": f"node '{from_node}' uses no library prompt (`prompt: {{key, label}}`)"})
            else:
                latest = self.service.store.prompts.referenced(space_id, [ref.key]).get(ref.key)
                if latest is None or not isinstance(version, int) or version < 1 or version > latest[0]:
                    errors.append({"field": "overrides.prompt_version",
                                   "message": f"prompt '{ref.key}' has no version {version} "
                                              f"(latest: {latest[0] if latest else 'none'})"})
            clean["prompt_version"] = version
        if errors:
            raise InvalidInputs(errors=errors)
        return clean or None

    # -- in bulk ---------------------------------------------------------------------------
    def bulk(self, space_id: str, workflow_id: str, *, status: str = RunStatus.FAILED, since: datetime,
             until: datetime, from_node: str = FAILED_NODE, limit: int = 100, dry_run: bool = False,
             again: bool = False) -> dict[str, Any]:
        """Rerun the workflow's ended runs of `status` created in [since, until), oldest first, at most
        `limit`; a dry run counts them. A source a bulk call of the same range already reran is left
        out unless `again`."""
        if status not in BULK_STATUSES:
            raise refused("status", f"must be one of {', '.join(BULK_STATUSES)}")
        since, until = _utc(since, "since"), _utc(until, "until")
        if since >= until:
            raise refused("until", "must be later than `since`")
        if not 1 <= limit <= BULK_MAX:
            raise refused("limit", f"must be between 1 and {BULK_MAX}")
        self.service.store.catalog.get_workflow(workflow_id, space_id)  # 404 for another space's
        key_prefix = f"rerun:{since.isoformat()}/{until.isoformat()}:"
        sources = self.service.store.reruns.bulk_sources(space_id, workflow_id, [status], since, until,
                                                         key_prefix, again, limit)
        started: list[dict[str, str]] = []
        planned: list[str] = []
        refusals: list[dict[str, str]] = []
        for source in sources:
            workflow = self.service.versions.get(source["version_id"])
            outcomes = self._outcomes(source)
            node = _bulk_from(source, workflow, outcomes, from_node)
            try:
                if node is None:
                    raise refused("from", "every node has a reusable outcome: nothing to rerun")
                plan = plan_rerun(workflow, node, outcomes, str(source["id"]))
            except InvalidInputs as exc:
                refusals.append({"source_run_id": str(source["id"]), "reason": exc.message})
                continue
            if dry_run:
                planned.append(str(source["id"]))
                continue
            new_id = self._insert(space_id, source, workflow, node, plan, None, None,
                                  None if again else key_prefix + str(source["id"]))
            if new_id is None:  # a concurrent bulk call of the same range took it
                refusals.append({"source_run_id": str(source["id"]), "reason": "already rerun by this range"})
                continue
            started.append({"source_run_id": str(source["id"]), "run_id": str(new_id), "from_node": node})
        skipped = {"skipped": len(refusals), "refusals": refusals[:SHOWN]}
        if dry_run:
            return {"count": len(planned), "runs": planned[:SHOWN], **skipped}
        return {"count": len(started), "runs": started, **skipped}

    # -- lineage ---------------------------------------------------------------------------
    def lineage(self, space_id: str | None, run: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
        """The run object's rerun fields; marks reused nodes (`reused: true`: no attempt in this run)."""
        if run.get("source_run_id") is not None:
            for node in nodes:
                node["reused"] = node["attempts"] == 0 and node["status"] in (NodeStatus.SUCCEEDED, NodeStatus.FAILED)
        reruns = run.get("reruns")  # read with the run by a poll (ViewStore.run_with_nodes)
        if reruns is None:
            reruns = self.service.store.reruns.reruns_of(run["id"], space_id or run["space_id"], RERUNS_SHOWN)
        return {"source_run_id": str(run["source_run_id"]) if run.get("source_run_id") else None,
                "rerun_from": run.get("rerun_from"), "reruns": reruns}


def _bulk_from(source: dict[str, Any], workflow: CompiledWorkflow, outcomes: dict[str, Outcome],
               from_node: str) -> str | None:
    """The node a bulk rerun of `source` starts from: the given one, or the node that failed it; a run
    with no failed node (cancelled) reruns from its first node, in order, with no reusable outcome."""
    if from_node != FAILED_NODE:
        return from_node
    failed = (source.get("error") or {}).get("node_id")
    if failed in workflow.nodes:
        return str(failed)
    return next((n for n in workflow.order if n not in outcomes or not outcomes[n].reusable), None)


def _utc(moment: datetime, field_: str) -> datetime:
    """The moment in UTC (a naive one is read as UTC); 422 naming the field if it has no UTC equivalent."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise refused(field_, "is out of range") from None
