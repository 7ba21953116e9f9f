"""Coze's simple nodes: intent, text, variable_aggregator and message, run in-process on the real database.

The intent node asks the fake OpenAI provider (real HTTP on loopback), which answers a
classification with the first listed intent sharing a word with the query.
"""
from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from api.localstack.fake_llm import FakeLLM
from tests.conftest import ApiHelper
from tests.integration.test_llm_node import refresh

pytestmark = [
    pytest.mark.integration,
    # as in test_llm_node.py: LiteLLM leaves an AF_UNIX socket for the collector in the test process
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

TRIAGE = {
    "inputs": {"question": {"type": "string", "required": True}},
    "nodes": [
        {"id": "kind", "type": "intent", "title": "What is it about?",
         "config": {"model": "clf", "intents": ["Refund request", "Shipping status"],
                    "query": "{{ inputs.question }}", "system_prompt": "Questions come from a web shop."}},
        {"id": "refund", "type": "template", "after": ["kind.branch_0"], "config": {"template": "Refunds desk"}},
        {"id": "shipping", "type": "template", "after": ["kind.branch_1"], "config": {"template": "Carrier desk"}},
        {"id": "other", "type": "template", "after": ["kind.default"], "config": {"template": "Front desk"}},
        {"id": "desk", "type": "variable_aggregator", "config": {"groups": [
            {"name": "desk", "variables": ["{{ refund.text }}", "{{ shipping.text }}", "{{ other.text }}"]}]}},
    ],
    "outputs": {"desk": "{{ desk.desk }}", "id": "{{ kind.classification_id }}", "reason": "{{ kind.reason }}"},
}


def run_to_end(api: ApiHelper, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create, submit and wait for a run."""
    return api.wait(api.submit(api.create_workflow(definition), inputs or {}), timeout_s=60)


@pytest.fixture
def classifier(client: Any, write_model: Any) -> None:
    """The model `clf`, served by the fake provider, in the registry."""
    write_model("clf")
    refresh(client)


def test_intent_takes_the_port_of_the_intent_the_model_names(api: ApiHelper, classifier: None,
                                                             fake_llm: FakeLLM, inline_worker: Any) -> None:
    # When a shipping question is classified
    run = run_to_end(api, TRIAGE, {"question": "Where is my parcel? The shipping page says nothing."})
    # Then the second intent (Coze numbers them from 1) wins, its branch runs and the others are skipped
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"desk": "Carrier desk", "id": 2, "reason": "the text mentions 'shipping'"}
    assert api.node(run, "shipping")["status"] == "succeeded"
    assert {api.node(run, n)["status"] for n in ("refund", "other")} == {"skipped"}
    kind = api.node(run, "kind")
    assert kind["model"] == "clf" and kind["output"]["branch"] == "branch_1" and kind["output"]["intent"] == "Shipping status"
    # and the model was asked for JSON, with the author's instructions in the system prompt
    [body] = fake_llm.requests
    assert body["response_format"] == {"type": "json_object"} and not body.get("stream")
    assert "Questions come from a web shop." in body["messages"][0]["content"]
    assert '"content": "Shipping status"' in body["messages"][0]["content"]


def test_a_query_matching_no_intent_takes_default(api: ApiHelper, classifier: None, inline_worker: Any) -> None:
    # When a question about nothing listed is classified
    run = run_to_end(api, TRIAGE, {"question": "Hello, who are you?"})
    # Then classification 0 leaves on `default`
    assert run["status"] == "succeeded", run
    assert run["outputs"]["desk"] == "Front desk" and run["outputs"]["id"] == 0
    assert api.node(run, "kind")["output"]["intent"] is None and api.node(run, "kind")["output"]["branch"] == "default"


def test_top_speed_mode_reads_a_bare_number(api: ApiHelper, classifier: None, inline_worker: Any) -> None:
    # Given the fast mode, where the model answers the classification number only
    definition = json.loads(json.dumps(TRIAGE))
    definition["nodes"][0]["config"].update(mode="top_speed", system_prompt=None)
    # When a refund question is classified
    run = run_to_end(api, definition, {"question": "I want a refund please"})
    # Then the first intent's branch runs, with no reason
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"desk": "Refunds desk", "id": 1, "reason": ""}


def test_a_node_after_a_port_the_intent_lacks_is_refused_at_save(client: Any, classifier: None) -> None:
    # Given a node after `branch_2` of an intent node with two intents
    definition = json.loads(json.dumps(TRIAGE))
    definition["nodes"][1]["after"] = ["kind.branch_2"]
    # When it is saved
    response = client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    # Then the 422 names each node and field
    assert response.status_code == 422, response.get_json()
    found = {(e["node_id"], e["field"]): e["message"] for e in response.get_json()["errors"]}
    assert "branch_2" in found[("refund", "after[0]")] and "branch_0, branch_1, default" in found[("refund", "after[0]")]


def test_an_unknown_intent_model_is_refused_at_save(client: Any, classifier: None) -> None:
    # Given an intent node naming a misspelt model; when saved, then a 422 names node, field and the close match
    definition = json.loads(json.dumps(TRIAGE))
    definition["nodes"][0]["config"]["model"] = "clff"
    response = client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422, response.get_json()
    [error] = response.get_json()["errors"]
    assert (error["node_id"], error["field"]) == ("kind", "config.model") and "did you mean 'clf'" in error["message"]


def test_text_concatenates_with_a_template_and_splits_by_several_delimiters(api: ApiHelper,
                                                                             inline_worker: Any) -> None:
    # Given a concat whose input is a list, and a split by two delimiters
    definition = {
        "inputs": {"tags": {"type": "array", "default": ["red", "green"]}, "csv": {"type": "string"}},
        "nodes": [
            {"id": "joined", "type": "text", "inputs": {"tags": "{{ inputs.tags }}"},
             "config": {"mode": "concat", "template": "Tags: {{ tags }}.", "array_item_concat_char": " | "}},
            {"id": "parts", "type": "text",
             "config": {"mode": "split", "text": "{{ inputs.csv }}", "delimiters": [",", "; "]}},
        ],
        "outputs": {"joined": "{{ joined.output }}", "parts": "{{ parts.output }}"}}
    # When it runs
    run = run_to_end(api, definition, {"csv": "a,b; c,,d"})
    # Then the list is joined with the author's character, and the split keeps empty pieces (as Coze does)
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"joined": "Tags: red | green.", "parts": ["a", "b", "c", "", "d"]}


def test_a_text_node_missing_its_mode_fields_is_refused_at_save(client: Any) -> None:
    # Given a split with no delimiters; when saved, then a 422 names the node and what is missing
    definition = {"nodes": [{"id": "cut", "type": "text", "config": {"mode": "split", "text": "a,b"}}]}
    response = client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422, response.get_json()
    [error] = response.get_json()["errors"]
    assert error["node_id"] == "cut" and error["field"].startswith("config") and "delimiters" in error["message"]


def test_a_split_over_the_template_limit_fails_the_node_naming_the_setting(api: ApiHelper, settings: Any,
                                                                           inline_worker: Any) -> None:
    # Given a text longer than what a template may build
    limit = settings.template_max_chars
    definition = {"inputs": {"s": {"type": "string"}},
                  "nodes": [{"id": "cut", "type": "text",
                             "config": {"mode": "split", "text": "{{ inputs.s }}", "delimiters": [","]}}],
                  "outputs": {"parts": "{{ cut.output }}"}}
    # When it is split
    run = run_to_end(api, definition, {"s": "x," * (limit // 2 + 1)})
    # Then the run fails at the node, naming the limit's setting
    assert run["status"] == "failed", run
    assert "RELAYFLOW_TEMPLATE_MAX_CHARS" in run["error"]["message"]


def test_variable_aggregator_takes_the_branch_that_ran_although_the_other_was_skipped(
        api: ApiHelper, inline_worker: Any) -> None:
    # Given two branches of a selector, joined by a variable aggregator with two groups
    definition = {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [
            {"id": "big", "type": "selector",
             "config": {"branches": [{"name": "yes", "conditions": [{"left": "{{ inputs.n }}", "op": ">", "right": 9}]}]}},
            {"id": "a", "type": "template", "after": ["big.yes"], "config": {"template": "big"}},
            {"id": "b", "type": "template", "after": ["big.else"], "config": {"template": "small"}},
            {"id": "merge", "type": "variable_aggregator", "config": {"groups": [
                {"name": "size", "variables": ["{{ a.text }}", "{{ b.text }}"]},
                {"name": "big_only", "variables": ["{{ a.text }}"]}]}},
        ],
        "outputs": {"size": "{{ merge.size }}", "big_only": "{{ merge.big_only }}"}}
    workflow_id = api.create_workflow(definition)
    # When it runs down each branch
    small = api.wait(api.submit(workflow_id, {"n": 3}))
    large = api.wait(api.submit(workflow_id, {"n": 30}))
    # Then the aggregator ran each time and took the value of the branch that ran; an all-null group is null
    assert small["outputs"] == {"size": "small", "big_only": None}, small
    assert large["outputs"] == {"size": "big", "big_only": "big"}, large
    assert api.node(small, "a")["status"] == "skipped" and api.node(small, "merge")["status"] == "succeeded"


MESSAGES = {
    "inputs": {"name": {"type": "string", "default": "Ada"}},
    "nodes": [
        {"id": "hello", "type": "message", "title": "Greeting", "inputs": {"who": "{{ inputs.name }}"},
         "config": {"content": "Hello {{ who }}, working on it…"}},
        {"id": "work", "type": "template", "after": ["hello"], "config": {"template": "done for {{ inputs.name }}"}},
    ],
    "outputs": {"result": "{{ work.text }}"},
}


def test_a_message_node_puts_its_message_in_the_run_events_once(api: ApiHelper, inline_worker: Any) -> None:
    # When a run with a message node ends
    run = api.wait(api.submit(api.create_workflow(MESSAGES)))
    assert run["status"] == "succeeded", run
    # Then the node outputs the message, and the run's event stream carries it once, with the node's success
    assert api.node(run, "hello")["output"] == {"output": "Hello Ada, working on it…"}
    frames = _sse(api.client.get(f"/v1/runs/{run['run_id']}/events").get_data(as_text=True))
    carried = [(f["event"], f["data"]["node_id"], f["data"]["data"]["message"])
               for f in frames if "message" in (f["data"]["data"] or {})]
    assert carried == [("node.succeeded", "hello", {"content": "Hello Ada, working on it…"})]


def test_coze_stream_run_sends_the_message_node_as_a_message_event(api: ApiHelper, token: str,
                                                                   inline_worker: Any) -> None:
    # Given the workflow published
    workflow_id = api.create_workflow(MESSAGES)
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    # When it is run through Coze's stream route, its nodes run while the stream is read
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            inline_worker.drain()
            stop.wait(0.05)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        response = api.client.post("/v1/workflow/stream_run", json={"workflow_id": workflow_id, "parameters": "{}"})
    finally:
        stop.set()
        driver.join()
    assert response.status_code == 200
    frames = _sse(response.get_data(as_text=True))
    # Then the stream is: the message node's Message, the End's Message, Done (ids from 0)
    assert [(f["id"], f["event"]) for f in frames] == [(0, "Message"), (1, "Message"), (2, "Done")]
    first, end = frames[0]["data"], frames[1]["data"]
    assert first == {"content": "Hello Ada, working on it…", "content_type": "text", "node_seq_id": "0",
                     "node_is_finish": True, "node_id": "hello", "node_title": "Greeting", "node_type": "Message"}
    assert end["node_type"] == "End" and json.loads(end["content"]) == {"result": "done for Ada"}


def _sse(text: str) -> list[dict[str, Any]]:
    """SSE frames → [{id, event, data}] (comments dropped)."""
    frames = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            frames.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return frames
