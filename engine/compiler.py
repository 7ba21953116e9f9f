"""Compiles a definition document into an immutable, validated workflow graph.

This module does no I/O. `compile_workflow` collects every problem it finds into one
DefinitionError; the CompiledWorkflow it returns answers the executor's questions (which
nodes start, what a node's context holds, which successors a finished node signals).
"""
from __future__ import annotations

import difflib
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from engine.definition import (
    InputSpec,
    NodeSpec,
    WorkflowHeader,
    apply_inputs,
    load_definition,
    pydantic_errors,
    validate_config,
)
from engine.errors import DefinitionError, PermanentNodeError
from engine.node_batch import expand_node_batch
from engine.nodes.base import OUTER_KEY, NodeConfig, NodeType
from engine.templates import CompiledValue, TemplateError, compile_value, find_references, template_strings

__all__ = ["CompiledNode", "CompiledWorkflow", "RetryPolicy", "SuccessorSignal", "compile_workflow"]

Edge = tuple[str, str | None]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how patiently a failed attempt is retried."""

    max_attempts: int = 1
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    jitter: bool = True
    retry_on: frozenset[str] = frozenset({"error", "timeout"})

    def delay_s(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based); `rand` in [0, 1)."""
        exponent = min(max(attempt - 1, 0), 64)  # past 2**64 the cap has long applied
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** exponent)
        return float(delay * (0.5 + rand / 2) if self.jitter else delay)


@dataclass(frozen=True)
class CompiledNode:
    """One validated node: its type, edges, policies and precompiled templates."""

    id: str
    type_name: str
    node_type: type[NodeType[Any]]
    title: str | None
    config: NodeConfig
    preds: tuple[str, ...]
    successors: tuple[str, ...]
    deps: tuple[str, ...]
    needs_run_inputs: bool
    join: str
    retry: RetryPolicy
    timeout_s: float | None
    on_error: str
    default_output: dict[str, Any] | None
    declared_outputs: dict[str, str] | None
    in_edges: tuple[Edge, ...] = ()
    inputs_template: CompiledValue = field(default_factory=lambda: compile_value({}), repr=False)
    config_template: CompiledValue | None = field(default=None, repr=False)
    config_source: dict[str, Any] = field(default_factory=dict, repr=False)
    # A composite node's inline body (batch, loop), run as child runs of this node.
    body: CompiledWorkflow | None = field(default=None, repr=False)
    # Names this node's templates see at top level from the run inputs (inside a body: `item`).
    locals: tuple[str, ...] = ()
    # Inside a body: the enclosing graph's nodes this node references, passed down by the
    # composite node in its child runs' inputs under OUTER_KEY.
    outer: tuple[str, ...] = ()

    def make_context(self, run_inputs: dict[str, Any] | None,
                     dep_outputs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        """The template context: run inputs plus the outputs (None if skipped) of this node's deps."""
        context: dict[str, Any] = {"inputs": run_inputs or {}}
        for name in self.locals:
            context[name] = (run_inputs or {}).get(name)
        for name in self.outer:
            context[name] = ((run_inputs or {}).get(OUTER_KEY) or {}).get(name)
        for dep in self.deps:
            context[dep] = dep_outputs.get(dep)
        return context

    def render(self, context: dict[str, Any],
               replace: dict[str, Any] | None = None) -> tuple[NodeConfig, dict[str, Any]]:
        """Render inputs (`replace`: a rerun's overrides of some), then templated config fields (seeing
        the inputs at top level); re-validate."""
        inputs = self.inputs_template.render(context)
        if replace:
            inputs = {**inputs, **replace}
        if self.config_template is None:
            return self.config, inputs
        rendered = self.config_template.render({**context, **inputs})
        try:
            config = self.node_type.Config.model_validate({**self.config_source, **rendered})
        except ValidationError as exc:
            problems = "; ".join(f"{e['field']}: {e['message']}" for e in
                                 pydantic_errors(exc, self.node_type.Config, prefix="config"))
            raise PermanentNodeError(f"node '{self.id}' config is invalid once rendered: {problems}") from exc
        return config, inputs


@dataclass(frozen=True)
class SuccessorSignal:
    """What a decided node tells one successor: whether its (collapsed) edges are active."""

    node_id: str
    in_degree: int
    active: bool
    join_any: bool


@dataclass(frozen=True)
class CompiledWorkflow:
    """An immutable, validated workflow graph."""

    name: str | None
    description: str | None
    inputs: Mapping[str, InputSpec]
    nodes: Mapping[str, CompiledNode]
    roots: tuple[str, ...]
    order: tuple[str, ...]
    output_deps: tuple[str, ...]
    outputs_need_run_inputs: bool
    deadline_s: float | None
    definition: dict[str, Any]
    outputs_template: CompiledValue = field(default_factory=lambda: compile_value({}), repr=False)
    locals: tuple[str, ...] = ()  # a body's top-level names from its run inputs (`item`, `index`)
    outer: tuple[str, ...] = ()  # enclosing nodes the body's outputs reference (see CompiledNode.outer)

    def body_at(self, path: str) -> CompiledWorkflow:
        """The inline body at `path` (`node` or `outer/inner`); '' is this workflow itself."""
        current = self
        for part in path.split("/") if path else ():
            node = current.nodes.get(part)
            if node is None or node.body is None:
                raise KeyError(f"no inline body at '{path}'")
            current = node.body
        return current

    def bodies(self, prefix: str = "") -> list[tuple[str, CompiledWorkflow]]:
        """(path, body) of every inline body, nested ones included, outermost first."""
        found: list[tuple[str, CompiledWorkflow]] = []
        for node in self.nodes.values():
            if node.body is not None:
                path = f"{prefix}/{node.id}" if prefix else node.id
                found.append((path, node.body))
                found.extend(node.body.bodies(path))
        return found

    def validate_inputs(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Apply defaults and check run inputs; raises InvalidInputs listing every problem."""
        return apply_inputs(self.inputs, given)

    def signals(self, node_id: str, port: str | None, skipped: bool = False) -> list[SuccessorSignal]:
        """Signals for each successor once `node_id` is decided (finished on `port`, or skipped)."""
        result = []
        for succ_id in self.nodes[node_id].successors:
            succ = self.nodes[succ_id]
            flags = [not skipped and (port != "error" if p is None else port == p)
                     for src, p in succ.in_edges if src == node_id]
            active = any(flags) if succ.join == "any" else all(flags)
            result.append(SuccessorSignal(succ_id, len(succ.preds), active, succ.join == "any"))
        return result

    def render_outputs(self, run_inputs: dict[str, Any] | None,
                       dep_outputs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        """Render the run's outputs from run inputs and the outputs of `output_deps`."""
        context: dict[str, Any] = {"inputs": run_inputs or {}}
        for name in self.locals:
            context[name] = (run_inputs or {}).get(name)
        for name in self.outer:
            context[name] = ((run_inputs or {}).get(OUTER_KEY) or {}).get(name)
        for dep in self.output_deps:
            context[dep] = dep_outputs.get(dep)
        rendered: dict[str, Any] = self.outputs_template.render(context)
        return rendered


def compile_workflow(source: str | bytes | dict[str, Any],
                     node_types: Mapping[str, type[NodeType[Any]]] | None = None, *,
                     name: str | None = None) -> CompiledWorkflow:
    """Validate a definition (YAML, JSON or dict) and compile it; raises DefinitionError with every problem."""
    if node_types is None:
        from engine.nodes import BUILTIN_NODE_TYPES  # lazily: the registry imports many node modules
        node_types = BUILTIN_NODE_TYPES
    return _Compiler(load_definition(source), node_types).compile(name)


def _hint(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class _Draft:
    """A node that passed the shape checks, while the graph is being checked."""

    spec: NodeSpec
    node_type: type[NodeType[Any]]
    config: NodeConfig | None
    templated: frozenset[str]  # config fields the engine renders
    body: CompiledWorkflow | None = None
    outer_refs: frozenset[str] = frozenset()  # enclosing nodes it references (inside a body)
    edges: set[Edge] = field(default_factory=set)
    deps: set[str] = field(default_factory=set)
    needs_run_inputs: bool = False


class _Compiler:
    """One compilation: walks the document once, appending every problem to `errors`."""

    def __init__(self, doc: dict[str, Any], node_types: Mapping[str, type[NodeType[Any]]],
                 locals_: frozenset[str] = frozenset(), outer: Mapping[str, _Draft | None] | None = None,
                 enclosing: str | None = None) -> None:
        self.doc = doc
        self.node_types = node_types
        self.locals = locals_  # inside a body: names its templates see at top level (`item`, `index`)
        # inside a body: the enclosing graphs' nodes it may reference, and those it does
        self.outer: Mapping[str, _Draft | None] = outer or {}
        self.outer_used: set[str] = set()
        self.enclosing = enclosing  # inside a body: the type of the composite node holding it
        self.errors: list[dict[str, Any]] = []
        self.drafts: dict[str, _Draft] = {}
        self.known_ids: set[str] = set()  # every id written, even on a node that failed its checks

    def error(self, node_id: str | None, field_: str | None, message: str) -> None:
        self.errors.append({"node_id": node_id, "field": field_, "message": message})

    def compile(self, name: str | None) -> CompiledWorkflow:
        header = self._header()
        raw_inputs = self.doc.get("inputs")
        self.input_names = set(header.inputs if header else raw_inputs if isinstance(raw_inputs, dict) else ())
        self._nodes()
        for draft in self.drafts.values():
            if draft.node_type.body_field is not None and draft.config is not None:
                draft.body = self._body(draft)  # first: what the body uses of this graph becomes the node's inputs
            self._references(draft)
        output_refs = self._scan(None, self.doc.get("outputs") if header else {}, "outputs", local=set(self.locals))
        order = self._order()
        if self.errors:
            raise DefinitionError(errors=self.errors)
        assert header is not None
        return self._build(header, name, order, output_refs)

    def _header(self) -> WorkflowHeader | None:
        try:
            return WorkflowHeader.model_validate({k: v for k, v in self.doc.items() if k != "nodes"})
        except ValidationError as exc:
            self.errors.extend(pydantic_errors(exc, WorkflowHeader))
            return None

    def _nodes(self) -> None:
        raw_nodes = self.doc.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            self.error(None, "nodes", "a workflow needs a non-empty list of nodes")
            return
        first_index: dict[str, int] = {}
        for index, raw in enumerate(raw_nodes):
            node_id = raw.get("id") if isinstance(raw, dict) else None
            node_id = node_id if isinstance(node_id, str) else None
            if node_id is not None:
                self.known_ids.add(node_id)
                if node_id in first_index:
                    self.error(node_id, "id", f"duplicate node id (nodes[{first_index[node_id]}] has it too)")
                    continue
                first_index[node_id] = index
            if isinstance(raw, dict) and "batch" in raw:
                expanded, problems = expand_node_batch(raw, node_id, self.node_types, self.input_names)
                self.errors.extend(problems)
                if expanded is None:
                    continue
                raw = expanded
            if node_id in self.locals:
                self.error(node_id, "id", f"'{node_id}' is reserved inside a body (it names the body's "
                                          f"{', '.join(sorted(self.locals))})")
                continue
            try:
                spec = NodeSpec.model_validate(raw)
            except ValidationError as exc:
                prefix = "" if node_id else f"nodes[{index}]"
                self.errors.extend(pydantic_errors(exc, NodeSpec, node_id=node_id, prefix=prefix))
                continue
            node_type = self.node_types.get(spec.type)
            if node_type is None:
                known = ", ".join(sorted(self.node_types))
                self.error(spec.id, "type", f"unknown node type '{spec.type}'{_hint(spec.type, self.node_types)};"
                                            f" known types: {known}")
                continue
            if node_type.only_inside is not None and node_type.only_inside != self.enclosing:
                self.error(spec.id, "type", f"a '{spec.type}' node is allowed only in the body of a "
                                            f"'{node_type.only_inside}' node (its config.nodes)")
                continue
            self.drafts[spec.id] = self._draft(spec, node_type)

    def _draft(self, spec: NodeSpec, node_type: type[NodeType[Any]]) -> _Draft:
        templated = {k for k, v in spec.config.items()
                     if k not in node_type.opaque_fields and any(template_strings(v))}
        config, errors = validate_config(node_type.Config, spec.config, templated, node_id=spec.id)
        self.errors.extend(errors)
        return _Draft(spec, node_type, config, frozenset(templated - node_type.raw_fields))

    def _scan(self, draft: _Draft | None, value: Any, path: str, local: set[str]) -> set[tuple[str, str | None]]:
        """Check the references of every template string in `value`; returns the valid ones."""
        node_id = draft.spec.id if draft else None
        found: set[tuple[str, str | None]] = set()
        for where, text in template_strings(value, path):
            try:
                refs = find_references(text)
            except TemplateError as exc:
                self.error(node_id, where, exc.message)
                continue
            for root, attr in sorted(refs, key=lambda r: (r[0], r[1] or "")):
                if root in local:
                    continue
                problem = self._reference_problem(node_id, root, attr)
                if problem:
                    self.error(node_id, where, problem)
                else:
                    found.add((root, attr))
        return found

    def _reference_problem(self, node_id: str | None, root: str, attr: str | None) -> str | None:
        if root in self.locals:
            return None
        if root == "inputs":
            if attr is None or attr in self.input_names:
                return None
            declared = ", ".join(sorted(self.input_names)) or "none"
            return f"run input '{attr}' is not declared{_hint(attr, self.input_names)}; declared inputs: {declared}"
        if root == node_id:
            return "a node cannot reference its own outputs"
        if root not in self.known_ids and root in self.outer:
            self.outer_used.add(root)
            return _output_problem(root, attr, self.outer[root])
        if root not in self.known_ids:
            where = (" (inside a body: its inputs, " + ", ".join(sorted(self.locals)) +
                     ", its own nodes and the enclosing graph's nodes)" if self.locals
                     else " (run inputs are 'inputs.<name>')")
            return f"unknown reference '{root}': no node has that id{_hint(root, self.known_ids)}{where}"
        return _output_problem(root, attr, self.drafts.get(root))

    def _references(self, draft: _Draft) -> None:
        spec, node_type = draft.spec, draft.node_type
        refs = self._scan(draft, spec.inputs, "inputs", local=set())
        config_scanned = {k: v for k, v in spec.config.items() if k not in node_type.opaque_fields}
        # a body's locals (`item`, `index`, `vars`) are checked like references, not skipped: a node
        # using one needs its run's inputs, where they live
        refs |= self._scan(draft, config_scanned, "config", local=set(spec.inputs) - set(self.locals))
        draft.outer_refs = frozenset(root for root, _ in refs if root in self.outer and root not in self.known_ids)
        draft.needs_run_inputs = bool(draft.outer_refs) or any(root == "inputs" or root in self.locals
                                                                for root, _ in refs)
        draft.deps = {root for root, _ in refs if root != "inputs" and root in self.drafts}
        explicit: set[Edge] = set()
        for index, entry in enumerate(spec.after):
            src, _, port = entry.partition(".")
            edge = self._after_edge(spec.id, f"after[{index}]", src, port or None)
            if edge is not None:
                explicit.add(edge)
        # An explicit `after: [src.port]` states how the node depends on src; a reference to
        # src's outputs (e.g. `src.error` on the error path) must not add a second, contrary edge.
        after_sources = {src for src, _ in explicit}
        draft.edges = explicit | {(dep, None) for dep in draft.deps if dep not in after_sources}

    def _body(self, draft: _Draft) -> CompiledWorkflow | None:
        """Compile a composite node's inline body as a nested graph; its problems name `outer/inner`."""
        spec, node_type = draft.spec, draft.node_type
        assert node_type.body_field is not None and draft.config is not None
        declared = node_type.body_inputs(draft.config, frozenset(spec.inputs))
        clashes = sorted(set(spec.inputs) & (node_type.body_locals | {"item", "index", OUTER_KEY}))
        for name in clashes:
            self.error(spec.id, f"inputs.{name}", f"'{name}' is reserved: the body sees its own '{name}'")
        doc = {"inputs": {name: {"type": type_} for name, type_ in declared.items()},
               "nodes": spec.config.get(node_type.body_field),
               "outputs": spec.config.get(node_type.body_outputs_field) or {}}
        visible = {**self.outer, **{n: self.drafts.get(n) for n in self.known_ids if n != spec.id}}
        nested = _Compiler(doc, self.node_types, node_type.body_locals, visible, node_type.type_name)
        try:
            body = nested.compile(None)
        except DefinitionError as exc:
            for problem in exc.details.get("errors") or []:
                inner = problem.get("node_id")
                if inner is None:
                    field_ = problem.get("field")
                    if field_ == "nodes":
                        field_ = f"config.{node_type.body_field}"
                    elif field_ and field_.startswith("outputs"):
                        field_ = f"config.{node_type.body_outputs_field}{field_[len('outputs'):]}"
                    self.error(spec.id, field_, problem["message"])
                else:
                    self.errors.append({**problem, "node_id": f"{spec.id}/{inner}"})
            return None
        for inner, field_, message in node_type.check_body(draft.config, body):
            self.error(f"{spec.id}/{inner}" if inner else spec.id, field_, message)
        if nested.outer_used:
            # The node passes what its body uses of the enclosing graph down to every child run; the
            # references make those nodes its predecessors, like any reference.
            passed = {name: "{{ " + name + " }}" for name in sorted(nested.outer_used)}
            draft.spec = spec.model_copy(update={"inputs": {**spec.inputs, OUTER_KEY: passed}})
        return body

    def _after_edge(self, node_id: str, where: str, src: str, port: str | None) -> Edge | None:
        if src == node_id:
            self.error(node_id, where, "a node cannot come after itself")
        elif src not in self.known_ids:
            self.error(node_id, where, f"unknown node '{src}'{_hint(src, self.known_ids)}")
        elif src in self.drafts:
            if port is None:
                return (src, None)
            ports = _ports(self.drafts[src])
            if ports is None or port in ports:
                return (src, port)
            listed = ", ".join(sorted(ports)) or "none"
            self.error(node_id, where, f"node '{src}' has no port '{port}'{_hint(port, ports)}; its ports: {listed}")
        return None

    def _order(self) -> list[str]:
        """Topological order (ties broken by definition order); reports cycles and what they block."""
        position = {node_id: i for i, node_id in enumerate(self.drafts)}
        succs: dict[str, set[str]] = {n: set() for n in self.drafts}
        pending = {n: len({src for src, _ in d.edges}) for n, d in self.drafts.items()}
        for node_id, draft in self.drafts.items():
            for src, _ in draft.edges:
                succs[src].add(node_id)
        heap = [(position[n], n) for n, count in pending.items() if count == 0]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            _, node_id = heapq.heappop(heap)
            order.append(node_id)
            for succ in succs[node_id]:
                pending[succ] -= 1
                if pending[succ] == 0:
                    heapq.heappush(heap, (position[succ], succ))
        if len(order) < len(self.drafts):
            self._report_cycles(set(self.drafts) - set(order))
        return order

    def _report_cycles(self, blocked: set[str]) -> None:
        preds = {n: {src for src, _ in self.drafts[n].edges if src in blocked} for n in blocked}
        on_cycle: set[str] = set()
        for start in sorted(blocked):
            if start in on_cycle:
                continue
            # Every blocked node has a blocked predecessor, so walking back must meet a node twice.
            path, seen, node = [], set(), start
            while node not in seen:
                seen.add(node)
                path.append(node)
                node = min(preds[node])
            cycle = path[path.index(node):][::-1]
            if on_cycle.isdisjoint(cycle):
                on_cycle.update(cycle)
                first = cycle.index(min(cycle))
                ring = cycle[first:] + cycle[:first]
                self.error(ring[0], None, f"cycle: {' → '.join(ring + [ring[0]])}")
        for node_id in sorted(blocked - on_cycle):
            self.error(node_id, None, "unreachable from the start: it waits on a node in a cycle")

    def _build(self, header: WorkflowHeader, name: str | None, order: list[str],
               output_refs: set[tuple[str, str | None]]) -> CompiledWorkflow:
        successors: dict[str, set[str]] = {n: set() for n in order}
        for node_id, draft in self.drafts.items():
            for src, _ in draft.edges:
                successors[src].add(node_id)
        nodes = {node_id: self._node(self.drafts[node_id], tuple(sorted(successors[node_id]))) for node_id in order}
        output_deps = tuple(sorted({root for root, _ in output_refs if root in self.drafts}))
        return CompiledWorkflow(
            name=name if name is not None else header.name, description=header.description,
            inputs=MappingProxyType(dict(header.inputs)), nodes=MappingProxyType(nodes),
            roots=tuple(n for n in order if not nodes[n].preds), order=tuple(order),
            output_deps=output_deps,
            outputs_need_run_inputs=bool(self.locals or self.outer) or any(r == "inputs" for r, _ in output_refs),
            deadline_s=header.deadline_s, definition=self.doc,
            outputs_template=compile_value(header.outputs, "outputs"), locals=tuple(sorted(self.locals)),
            outer=tuple(sorted(root for root, _ in output_refs if root in self.outer and root not in self.known_ids)))

    def _node(self, draft: _Draft, successors: tuple[str, ...]) -> CompiledNode:
        spec, node_type = draft.spec, draft.node_type
        retry = spec.retry
        templated = {k: spec.config[k] for k in sorted(draft.templated)}
        assert draft.config is not None
        return CompiledNode(
            id=spec.id, type_name=spec.type, node_type=node_type, title=spec.title, config=draft.config,
            preds=tuple(sorted({src for src, _ in draft.edges})), successors=successors,
            deps=tuple(sorted(draft.deps)), needs_run_inputs=draft.needs_run_inputs,
            join=spec.join or node_type.join,
            retry=RetryPolicy(retry.max_attempts, retry.backoff_s, retry.max_backoff_s, retry.jitter,
                              frozenset(retry.retry_on)) if retry else RetryPolicy(),
            timeout_s=spec.timeout_s, on_error=spec.on_error, default_output=spec.default_output,
            declared_outputs=dict(spec.outputs) if spec.outputs is not None else None,
            in_edges=tuple(sorted(draft.edges, key=lambda e: (e[0], e[1] or ""))),
            inputs_template=compile_value(spec.inputs, "inputs"),
            config_template=compile_value(templated, "config") if templated else None,
            config_source=spec.config, body=draft.body, locals=tuple(sorted(self.locals)),
            outer=tuple(sorted(draft.outer_refs)))


def _output_problem(root: str, attr: str | None, target: _Draft | None) -> str | None:
    """Why `root.attr` names no output of the node `target` (None: it does, or cannot be told)."""
    if attr is None or target is None:
        return None
    allowed = _output_fields(target)
    if allowed is None or attr in allowed:
        return None
    listed = ", ".join(sorted(allowed)) or "none"
    return f"node '{root}' has no output '{attr}'{_hint(attr, allowed)}; its outputs: {listed}"


def _output_fields(draft: _Draft) -> frozenset[str] | None:
    if draft.config is None:
        return None
    try:
        fields = draft.node_type.output_fields(draft.config, draft.spec.outputs)
    except Exception:  # a type that cannot tell from a templated config allows any field
        return None
    if fields is None or draft.spec.on_error == "fail":
        return fields
    return fields | {"is_success", "error"} | set(draft.spec.default_output or ())


def _ports(draft: _Draft) -> frozenset[str] | None:
    extra = {"error"} if draft.spec.on_error == "branch" else set()
    if draft.config is None:
        return None
    try:
        return draft.node_type.ports(draft.config) | extra
    except Exception:  # a type that cannot tell from a templated config allows any port
        return None
