"""The dashboard's pure parts: the graph's columns, the timeline's bars, form fields to values."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.ui import forms
from api.ui.graph import NODE_W, depths, layout
from api.ui.timeline import LABEL_W, timeline
from engine.definition import InputSpec
from engine.errors import InvalidInputs


def test_a_node_sits_one_column_right_of_its_deepest_predecessor() -> None:
    order = ["a", "b", "c", "d"]
    preds = {"b": ["a"], "c": ["a", "b"], "d": []}
    assert depths(order, preds) == {"a": 0, "b": 1, "c": 2, "d": 0}
    drawn = layout(order, preds, {"a": "A very long title for a node"}, {})
    boxes = {b.node_id: b for b in drawn.boxes}
    assert boxes["c"].x > boxes["b"].x > boxes["a"].x == boxes["d"].x
    assert boxes["d"].y > boxes["a"].y  # second row of column 0
    assert len(drawn.edges) == 3 and drawn.width >= 3 * NODE_W
    assert boxes["a"].label.endswith("…") and len(boxes["a"].label) <= 18


def test_a_thousand_node_graph_lays_out_with_one_edge_per_dependency() -> None:
    order = [f"n{i}" for i in range(1000)]
    preds = {f"n{i}": [f"n{i - 100}"] for i in range(100, 1000)}
    drawn = layout(order, preds, {}, {})
    assert len(drawn.boxes) == 1000 and len(drawn.edges) == 900
    assert max(depths(order, preds).values()) == 9


def test_timeline_bars_share_one_axis_and_say_how_long_and_how_many_attempts() -> None:
    nodes = [{"node_id": "a", "status": "succeeded", "attempts": 1,
              "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00"},
             {"node_id": "b", "status": "running", "attempts": 3, "started_at": "2026-01-01T00:00:01+00:00",
              "finished_at": None},
             {"node_id": "c", "status": "waiting", "attempts": 0, "started_at": None, "finished_at": None},
             {"node_id": "r", "status": "succeeded", "attempts": 0, "reused": True,  # a rerun's: ran in its source
              "started_at": "2025-12-31T00:00:00+00:00", "finished_at": "2025-12-31T00:00:01+00:00"}]
    drawn = timeline(nodes, [], datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC))
    a, b = drawn.rows
    assert drawn.span_s == 2 and a.segments[0].x == LABEL_W and b.segments[0].x > a.segments[0].x
    assert a.segments[0].width == b.segments[0].width
    assert b.label == "1.00 s · 3 attempts" and len(drawn.rows) == 2


def test_timeline_draws_time_queued_each_attempt_its_backoff_and_a_wait_for_an_answer() -> None:
    t = "2026-01-01T00:00:0{}+00:00"
    retried = {"node_id": "flaky", "status": "succeeded", "attempts": 2, "queued_at": t.format(4),
               "started_at": t.format(1), "finished_at": t.format(6),
               "attempt_log": [{"attempt": 1, "error": {"message": "HTTP 503"}, "started_at": t.format(1),
                                "at": t.format(2), "backoff_s": 2.0},
                               {"attempt": 2, "started_at": t.format(5), "at": t.format(6)}]}
    asking = {"node_id": "ask", "status": "succeeded", "attempts": 1, "queued_at": t.format(0),
              "started_at": t.format(1), "finished_at": t.format(9)}
    waits = [{"node_id": "ask", "created_at": datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC),
              "answered_at": datetime(2026, 1, 1, 0, 0, 8, tzinfo=UTC)}]
    drawn = timeline([retried, asking], waits, datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC))
    flaky, ask = sorted(drawn.rows, key=lambda r: r.node_id)[::-1]
    assert [(s.kind, s.status) for s in flaky.segments] == [
        ("attempt", "failed"), ("backoff", "retrying"), ("queued", "queued"), ("attempt", "succeeded")]
    assert "HTTP 503" in flaky.segments[0].title and flaky.segments[1].title.startswith("backoff 2.00 s")
    assert [s.kind for s in ask.segments] == ["queued", "attempt", "wait"]
    assert ask.segments[2].title.startswith("waiting for an answer: 6.00 s")


def test_run_form_fields_follow_the_declared_inputs_and_parse_back() -> None:
    specs = {"name": InputSpec(type="string", required=True), "n": InputSpec(type="integer", default=2),
             "on": InputSpec(type="boolean"), "tags": InputSpec(type="array", default=["x"])}
    fields = forms.input_fields(specs)
    assert [(f.name, f.kind, f.value) for f in fields] == [("name", "text", ""), ("n", "integer", "2"),
                                                           ("on", "boolean", ""), ("tags", "json", '["x"]')]
    form = {"in.name": "Ada", "in.n": "3", "in.on": "true", "in.tags": '["a", "b"]'}
    assert forms.parse_inputs(fields, form) == {"name": "Ada", "n": 3, "on": True, "tags": ["a", "b"]}
    with pytest.raises(InvalidInputs) as refused:
        forms.parse_inputs(fields, {**form, "in.n": "three", "in.tags": "[oops"})
    assert [e["field"] for e in refused.value.errors] == ["n", "tags"]


def test_answer_form_from_a_question_or_a_schema() -> None:
    question = {"type": "question", "data": {"answer_type": "option", "options": ["yes", "no"]}}
    assert forms.answer_fields(question)[0].options == ("yes", "no")
    assert forms.parse_answer(question, {"in.answer": "no"}) == "no"
    form = {"type": "input", "data": {"schema": {"type": "object", "required": ["reason"], "properties": {
        "reason": {"type": "string"}, "urgent": {"type": "boolean"}, "level": {"type": "integer"}}}}}
    assert [(f.name, f.kind, f.required) for f in forms.answer_fields(form)] == [
        ("reason", "text", True), ("urgent", "boolean", False), ("level", "integer", False)]
    assert forms.parse_answer(form, {"in.reason": "late", "in.urgent": "false", "in.level": ""}) == {
        "reason": "late", "urgent": False}
