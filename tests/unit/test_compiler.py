"""Compiling definitions: every error at once, references, edges, signals, inputs (no I/O)."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.compiler import CompiledWorkflow, RetryPolicy, compile_workflow
from engine.errors import DefinitionError, InvalidInputs, PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType


class TextConfig(NodeConfig):
    template: str


class TextNode(NodeType[TextConfig]):
    type_name = "text"
    Config = TextConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"template"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: dict[str, str] | None) -> frozenset[str] | None:
        return frozenset({"text"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"text": ctx.render_text(self.config.template, inputs)}


class PickConfig(NodeConfig):
    branches: list[str]
    threshold: int = 0


class PickNode(NodeType[PickConfig]):
    type_name = "pick"
    Config = PickConfig
    port_output: ClassVar[str | None] = "branch"

    @classmethod
    def ports(cls, config: NodeConfig) -> frozenset[str]:
        assert isinstance(config, PickConfig)
        return frozenset(config.branches)

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: dict[str, str] | None) -> frozenset[str] | None:
        return frozenset({"branch"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"branch": self.config.branches[0]}


class StepNode(NodeType[NodeConfig]):
    type_name = "step"
    Config = NodeConfig

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        return dict(inputs)


class MergeNode(StepNode):
    type_name = "merge"
    join: ClassVar[Literal["all", "any"]] = "any"


class ScriptConfig(NodeConfig):
    source: str


class ScriptNode(StepNode):
    type_name = "script"
    Config = ScriptConfig
    opaque_fields: ClassVar[frozenset[str]] = frozenset({"source"})


TYPES: dict[str, type[NodeType]] = {
    cls.type_name: cls for cls in (TextNode, PickNode, StepNode, MergeNode, ScriptNode)}


def compile_(doc: Any) -> CompiledWorkflow:
    return compile_workflow(doc, TYPES)


def errors_of(doc: Any) -> list[dict[str, Any]]:
    with pytest.raises(DefinitionError) as caught:
        compile_(doc)
    return caught.value.errors


TRIAGE = """
name: triage
inputs:
  ticket: {type: string, required: true}
  priority: {type: integer, default: 1}
nodes:
  - id: clean
    type: text
    config: {template: "{{ body | trim }}"}
    inputs: {body: "{{ inputs.ticket }}"}
  - id: route
    type: pick
    config: {branches: [urgent, normal], threshold: "{{ inputs.priority }}"}
  - id: urgent
    type: step
    after: [route.urgent]
    inputs: {text: "{{ clean.text }}"}
  - id: normal
    type: step
    after: [route.normal]
  - id: join
    type: merge
    after: [urgent, normal]
    retry: {max_attempts: 3, backoff_s: 2}
    timeout_s: 5
outputs:
  result: "{{ clean.text }}"
  priority: "{{ inputs.priority }}"
"""


def test_a_valid_definition_compiles_into_an_ordered_graph() -> None:
    wf = compile_(TRIAGE)

    assert wf.name == "triage"
    assert wf.roots == ("clean", "route")
    assert wf.order == ("clean", "route", "urgent", "normal", "join")
    urgent = wf.nodes["urgent"]
    assert urgent.preds == ("clean", "route") and urgent.deps == ("clean",)
    assert urgent.in_edges == (("clean", None), ("route", "urgent"))
    assert wf.nodes["route"].successors == ("normal", "urgent")
    assert wf.nodes["route"].needs_run_inputs and not urgent.needs_run_inputs
    assert wf.nodes["join"].join == "any" and wf.nodes["urgent"].join == "all"
    assert wf.nodes["join"].retry == RetryPolicy(max_attempts=3, backoff_s=2.0)
    assert wf.output_deps == ("clean",) and wf.outputs_need_run_inputs


def test_yaml_json_and_dict_sources_compile_alike() -> None:
    import json

    import yaml
    doc = yaml.safe_load(TRIAGE)

    assert compile_(json.dumps(doc)).order == compile_(doc).order == compile_(TRIAGE.encode()).order


def test_the_compiled_workflow_is_immutable_and_keeps_the_document() -> None:
    wf = compile_(TRIAGE)

    with pytest.raises(TypeError):
        wf.nodes["x"] = wf.nodes["clean"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.name = "other"  # type: ignore[misc]
    assert wf.definition["nodes"][0]["id"] == "clean"


def test_every_error_is_listed_at_once() -> None:
    doc = {
        "inputs": {"ticket": {"type": "string"}},
        "nodes": [
            {"id": "a", "type": "txet"},
            {"id": "b", "type": "text", "config": {"templat": "x"}},
            {"id": "c", "type": "step", "inputs": {"x": "{{ ghost.x }}", "y": "{{ inputs.tiket }}"}},
            {"id": "d", "type": "pick", "config": {"branches": ["yes"]}},
            {"id": "e", "type": "step", "after": ["d.no"], "inputs": {"z": "{{ d.nope }}"}},
            {"id": "c", "type": "step"},
            {"id": "f", "type": "step", "after": ["g"]},
            {"id": "g", "type": "step", "after": ["f"]},
        ],
        "outputs": {"r": "{{ e.x"},
    }

    errors = errors_of(doc)

    where = {(e["node_id"], e["field"]) for e in errors}
    assert {("a", "type"), ("b", "config.templat"), ("b", "config.template"), ("c", "inputs.x"),
            ("c", "inputs.y"), ("e", "after[0]"), ("e", "inputs.z"), ("c", "id"), (None, "outputs.r"),
            ("f", None)} <= where
    assert all(e["message"] for e in errors)


def test_an_unknown_config_key_names_the_node_the_key_and_the_allowed_keys() -> None:
    errors = errors_of({"nodes": [{"id": "clean", "type": "text", "config": {"template": "x", "tempalte": "y"}}]})

    assert errors == [{"node_id": "clean", "field": "config.tempalte",
                       "message": "unknown config key 'tempalte'; allowed keys: template"}]


def test_an_unknown_node_type_lists_the_known_types() -> None:
    [error] = errors_of({"nodes": [{"id": "a", "type": "txet"}]})

    assert error["field"] == "type"
    assert "did you mean 'text'" in error["message"] and "merge, pick, script, step, text" in error["message"]


def test_an_unknown_key_on_a_node_lists_the_allowed_keys() -> None:
    [error] = errors_of({"nodes": [{"id": "a", "type": "step", "retyr": {}}]})

    assert error["node_id"] == "a" and error["field"] == "retyr" and "allowed keys: after," in error["message"]


def test_references_must_name_existing_nodes_fields_and_declared_inputs() -> None:
    doc = {"inputs": {"ticket": {}}, "nodes": [
        {"id": "clean", "type": "text", "config": {"template": "x"}},
        {"id": "use", "type": "step", "inputs": {"a": "{{ clean.txt }}", "b": "{{ inputs.tiket }}",
                                               "c": "{{ cleen.text }}"}},
    ]}

    messages = {e["field"]: e["message"] for e in errors_of(doc)}

    assert "node 'clean' has no output 'txt'" in messages["inputs.a"] and "text" in messages["inputs.a"]
    assert "run input 'tiket' is not declared" in messages["inputs.b"]
    assert "unknown reference 'cleen'" in messages["inputs.c"] and "did you mean 'clean'" in messages["inputs.c"]


def test_a_node_with_on_error_may_be_referenced_for_its_error() -> None:
    wf = compile_({"nodes": [
        {"id": "a", "type": "text", "config": {"template": "x"}, "on_error": "default",
         "default_output": {"text": ""}},
        {"id": "b", "type": "step", "inputs": {"ok": "{{ a.is_success }}", "why": "{{ a.error }}"}},
    ]})

    assert wf.nodes["b"].deps == ("a",)


def test_a_node_cannot_reference_or_follow_itself() -> None:
    errors = errors_of({"nodes": [{"id": "a", "type": "step", "inputs": {"x": "{{ a.x }}"}, "after": ["a"]}]})

    assert {(e["field"], e["message"]) for e in errors} == {
        ("inputs.x", "a node cannot reference its own outputs"), ("after[0]", "a node cannot come after itself")}


def test_after_names_an_existing_port_and_error_only_with_branching() -> None:
    base = {"id": "route", "type": "pick", "config": {"branches": ["yes", "no"]}}
    errors = errors_of({"nodes": [base, {"id": "x", "type": "step", "after": ["route.maybe", "route.error"]}]})

    assert [e["field"] for e in errors] == ["after[0]", "after[1]"]
    assert "its ports: no, yes" in errors[0]["message"]
    wf = compile_({"nodes": [{**base, "on_error": "branch"}, {"id": "x", "type": "step", "after": ["route.error"]}]})
    assert wf.nodes["x"].in_edges == (("route", "error"),)


def test_reserved_and_malformed_ids_are_refused() -> None:
    errors = errors_of({"nodes": [{"id": "inputs", "type": "step"}, {"id": "range", "type": "step"},
                                  {"id": "9lives", "type": "step"}]})

    assert [(e["node_id"], e["field"]) for e in errors] == [("inputs", "id"), ("range", "id"), ("9lives", "id")]


def test_on_error_default_needs_a_default_output() -> None:
    [error] = errors_of({"nodes": [{"id": "a", "type": "step", "on_error": "default"}]})

    assert error["node_id"] == "a" and "default_output" in error["message"]


def test_a_cycle_is_named_and_nodes_after_it_are_unreachable() -> None:
    errors = errors_of({"nodes": [
        {"id": "start", "type": "step"},
        {"id": "a", "type": "step", "after": ["start", "c"]},
        {"id": "b", "type": "step", "inputs": {"x": "{{ a }}"}},
        {"id": "c", "type": "step", "after": ["b"]},
        {"id": "tail", "type": "step", "after": ["c"]},
    ]})

    assert [e["message"] for e in errors] == [
        "cycle: a → b → c → a", "unreachable from the start: it waits on a node in a cycle"]
    assert errors[1]["node_id"] == "tail"


def test_a_template_in_a_typed_config_field_is_rendered_and_validated_per_run() -> None:
    route = compile_(TRIAGE).nodes["route"]

    config, inputs = route.render(route.make_context({"priority": 7}, {}))

    assert config == PickConfig(branches=["urgent", "normal"], threshold=7) and inputs == {}
    with pytest.raises(PermanentNodeError, match="config.threshold"):
        route.render(route.make_context({"priority": "high"}, {}))


def test_config_templates_see_the_nodes_own_inputs_and_raw_fields_stay_unrendered() -> None:
    clean = compile_(TRIAGE).nodes["clean"]

    config, inputs = clean.render(clean.make_context({"ticket": " hi "}, {}))

    assert inputs == {"body": " hi "} and config.template == "{{ body | trim }}"
    assert clean.deps == () and clean.needs_run_inputs


def test_opaque_fields_are_neither_scanned_nor_rendered() -> None:
    wf = compile_({"nodes": [{"id": "s", "type": "script", "config": {"source": "x = '{{ nope.x }}'"}}]})

    config, _ = wf.nodes["s"].render({"inputs": {}})
    assert config.source == "x = '{{ nope.x }}'" and wf.nodes["s"].deps == ()


def test_make_context_holds_only_the_nodes_dependencies() -> None:
    urgent = compile_(TRIAGE).nodes["urgent"]

    context = urgent.make_context(None, {"clean": {"text": "t"}, "route": {"branch": "urgent"}})

    assert context == {"inputs": {}, "clean": {"text": "t"}}
    assert urgent.render(context)[1] == {"text": "t"}


def test_signals_follow_ports_and_skips() -> None:
    wf = compile_(TRIAGE)

    chosen = {s.node_id: s for s in wf.signals("route", "urgent")}
    assert chosen["urgent"].active and not chosen["normal"].active
    assert chosen["urgent"].in_degree == 2 and not chosen["urgent"].join_any
    assert [s.active for s in wf.signals("clean", None)] == [True]
    assert [s.active for s in wf.signals("clean", None, skipped=True)] == [False]
    assert [s.active for s in wf.signals("clean", "error")] == [False]
    assert [(s.node_id, s.active, s.join_any) for s in wf.signals("urgent", None)] == [("join", True, True)]


def test_edges_to_one_successor_collapse_by_its_join() -> None:
    wf = compile_({"nodes": [
        {"id": "route", "type": "pick", "config": {"branches": ["yes", "no"]}},
        {"id": "all", "type": "step", "after": ["route.yes"], "inputs": {"b": "{{ route.branch }}"}},
        {"id": "any", "type": "merge", "after": ["route.yes", "route.no"]},
    ]})

    signals = {s.node_id: s.active for s in wf.signals("route", "no")}
    assert signals == {"all": False, "any": True}


def test_validate_inputs_applies_defaults_and_lists_every_problem() -> None:
    wf = compile_({"inputs": {"ticket": {"type": "string", "required": True}, "n": {"type": "integer", "default": 1},
                              "score": {"type": "number"}, "tags": {"type": "array", "default": []}},
                   "nodes": [{"id": "a", "type": "step"}]})

    assert wf.validate_inputs({"ticket": "t", "score": 2}) == {"ticket": "t", "n": 1, "score": 2, "tags": []}
    with pytest.raises(InvalidInputs) as caught:
        wf.validate_inputs({"n": True, "score": "x", "extra": 1})
    assert {e["field"] for e in caught.value.errors} == {"inputs.ticket", "inputs.n", "inputs.score", "inputs.extra"}


def test_an_input_default_must_have_the_declared_type() -> None:
    [error] = errors_of({"inputs": {"n": {"type": "integer", "default": "one"}}, "nodes": [{"id": "a", "type": "step"}]})

    assert error["field"] == "inputs.n" and "not of type integer" in error["message"]


def test_render_outputs_reads_inputs_and_dependencies() -> None:
    wf = compile_(TRIAGE)

    assert wf.render_outputs({"priority": 2}, {"clean": {"text": "t"}}) == {"result": "t", "priority": 2}
    assert wf.render_outputs({}, {"clean": None}) == {"result": None, "priority": None}


def test_malformed_text_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError):
        compile_("nodes: [unclosed")
    with pytest.raises(DefinitionError, match="mapping"):
        compile_("- just a list")


def test_retry_delay_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=5.0, jitter=False)

    assert [policy.delay_s(n, 0.3) for n in (1, 2, 3, 4, 10_000)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(backoff_s=4.0, jitter=True)
    assert jittered.delay_s(1, 0.0) == 2.0 and jittered.delay_s(1, 0.999) < 4.0


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    size = draw(st.integers(min_value=2, max_value=12))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    edges = draw(st.sets(st.sampled_from(pairs), min_size=1))
    return size, edges


def _dag_doc(size: int, edges: set[tuple[int, int]], extra: tuple[int, int] | None = None) -> dict[str, Any]:
    nodes = []
    for j in range(size):
        srcs = sorted(i for i, k in edges if k == j)
        # Half the edges are control edges, half are data references.
        after = [f"n{i}" for i in srcs if i % 2 == 0]
        inputs = {f"v{i}": f"{{{{ n{i}.v }}}}" for i in srcs if i % 2 == 1}
        if extra is not None and extra[1] == j:
            after.append(f"n{extra[0]}")
        nodes.append({"id": f"n{j}", "type": "step", "after": after, "inputs": inputs})
    return {"nodes": nodes}


@settings(max_examples=60, deadline=None, database=None)
@given(dags(), st.data())
def test_random_dags_compile_and_one_back_edge_makes_a_named_cycle(
        dag: tuple[int, set[tuple[int, int]]], data: st.DataObject) -> None:
    size, edges = dag

    wf = compile_(_dag_doc(size, edges))

    position = {node_id: index for index, node_id in enumerate(wf.order)}
    assert all(position[f"n{i}"] < position[f"n{j}"] for i, j in edges)
    assert set(wf.roots) == {f"n{j}" for j in range(size) if all(k != j for _, k in edges)}

    low, high = data.draw(st.sampled_from(sorted(edges)))
    errors = errors_of(_dag_doc(size, edges, extra=(high, low)))

    cycles = [e["message"] for e in errors if e["message"].startswith("cycle: ")]
    assert len(cycles) == 1
    named = set(cycles[0].removeprefix("cycle: ").split(" → "))
    assert {f"n{low}", f"n{high}"} <= named


def test_after_port_replaces_the_data_edge_from_the_same_node() -> None:
    # Given an error-path node that names parse.error in `after` and reads parse's error output
    workflow = compile_workflow({"nodes": [
        {"id": "parse", "type": "json_parse", "inputs": {"text": "{"}, "on_error": "branch"},
        {"id": "sad", "type": "template", "after": ["parse.error"],
         "config": {"template": "{{ parse.error.message }}"}},
    ]})
    # Then taking the error port activates it, and succeeding does not
    assert workflow.nodes["sad"].in_edges == (("parse", "error"),)
    assert [s.active for s in workflow.signals("parse", "error")] == [True]
    assert [s.active for s in workflow.signals("parse", None)] == [False]


def test_a_body_node_using_item_or_index_only_in_its_config_gets_its_run_inputs() -> None:
    # `item` and `index` live in the child run's inputs: a node reading them from its config alone
    # must have them loaded at its claim, as a node reading `inputs.x` does
    workflow = compile_workflow({"nodes": [{"id": "B", "type": "batch", "config": {
        "items": [1, 2], "nodes": [{"id": "t", "type": "template", "config": {"template": "{{ index }}-{{ item }}"}}],
        "outputs": {"t": "{{ t.text }}"}}}]})
    assert workflow.body_at("B").nodes["t"].needs_run_inputs


def test_a_body_node_whose_config_names_only_a_body_local_loads_the_run_inputs() -> None:
    # A body node's config that references `index` (and nothing under `inputs.`) still needs the
    # child run's inputs: `index` lives there. Without them it rendered as an empty string.
    wf = compile_workflow({"inputs": {"xs": {"type": "array"}}, "nodes": [{
        "id": "each", "type": "batch",
        "config": {"items": "{{ inputs.xs }}", "outputs": {"label": "{{ label.text }}"},
                   "nodes": [{"id": "label", "type": "template", "config": {"template": "{{ index }}"}}]}}]})
    label = wf.body_at("each").nodes["label"]

    assert label.needs_run_inputs
    config, _ = label.render(label.make_context({"item": "a", "index": 3}, {}))
    assert config.model_dump()["template"] == "{{ index }}"  # raw: rendered by the node itself


def test_a_body_node_that_mentions_only_item_or_index_loads_the_run_inputs() -> None:
    # Given a batch body whose template nodes see `item` / `index` only in a raw config field
    body = [{"id": "up", "type": "template", "config": {"template": "{{ item | upper }}"}},
            {"id": "at", "type": "template", "config": {"template": "#{{ index }}"}},
            {"id": "plain", "type": "template", "config": {"template": "{{ up.text }}"}}]
    doc = {"inputs": {"words": {"type": "array"}},
           "nodes": [{"id": "each", "type": "batch",
                      "config": {"items": "{{ inputs.words }}", "nodes": body, "outputs": {"w": "{{ up.text }}"}}}]}
    # When it compiles
    compiled = compile_workflow(doc).body_at("each")
    # Then those nodes read the child run's inputs (where `item` and `index` live); the other does not
    assert compiled.nodes["up"].needs_run_inputs and compiled.nodes["at"].needs_run_inputs
    assert not compiled.nodes["plain"].needs_run_inputs
