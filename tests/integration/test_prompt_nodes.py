"""LLM nodes using library prompts: pinned at the first attempt, kept on retry, resolved anew by a
new run, variables from the node's inputs, a missing prompt refused at save time."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from api.localstack.fake_llm import FakeLLM
from tests.integration.test_llm_node import refresh

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),  # as test_llm_node.py
]


def prompt_workflow(model: str, ref: dict[str, Any], node_type: str = "llm", **node: Any) -> dict[str, Any]:
    """One llm node using the library prompt `ref`, its input `topic` taken from the run's."""
    config = {"model": model, "prompt": ref, "stream": False, **node.pop("config", {})}
    return {"inputs": {"topic": {"type": "string", "default": "otters"}},
            "nodes": [{"id": "ask", "type": node_type, "config": config,
                       "inputs": {"topic": "{{ inputs.topic }}"}, **node}],
            "outputs": {"answer": "{{ ask }}"}}


def versions(client: Any, key: str, *texts: str, production: int | None = None) -> None:
    """Create prompt `key` with one version per text (variable `topic`), `production` on the one given."""
    variables = [{"name": "topic", "type": "string"}]
    assert client.post("/v1/prompts", json={"key": key, "version": {"text": texts[0], "variables": variables}}
                       ).status_code == 201
    for base, text in enumerate(texts[1:], start=1):
        response = client.post(f"/v1/prompts/{key}/versions",
                               json={"base_version": base, "text": text, "variables": variables})
        assert response.status_code == 201, response.get_json()
    if production is not None:
        assert client.put(f"/v1/prompts/{key}/labels/production", json={"version": production}).status_code == 200


def test_a_retry_keeps_the_pinned_version_and_a_new_run_takes_the_moved_label(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, inline_worker: Any) -> None:
    # Given production on version 2, and a model whose first three calls fail (one node attempt)
    write_model("flaky", "fail_first=3:500")
    write_model("steady", "echo")
    refresh(client)
    versions(client, "answer", "v1 about {{ topic }}", "v2 about {{ topic }}", "v3 about {{ topic }}", production=2)
    workflow_id = api.create_workflow(prompt_workflow("flaky", {"key": "answer", "label": "production"},
                                                      retry={"max_attempts": 3, "backoff_s": 0.1}))
    run_id = api.submit(workflow_id)
    # When the first attempt fails, and production moves to version 3 before the retry
    assert inline_worker.run_next()
    first = api.node(api.run(run_id), "ask")
    assert first["status"] == "retrying" and first["prompt"] == {"key": "answer", "version": 2}, first
    assert client.put("/v1/prompts/answer/labels/production", json={"version": 3}).status_code == 200
    run = api.wait(run_id)
    # Then the retry rendered version 2's text, and the run shows version 2
    assert run["status"] == "succeeded", run
    node = api.node(run, "ask")
    assert node["attempts"] >= 2 and node["prompt"] == {"key": "answer", "version": 2}
    assert run["outputs"]["answer"]["text"] == "Echo: v2 about otters"
    # and a new run uses version 3
    second = api.wait(api.submit(api.create_workflow(prompt_workflow("steady", {"key": "answer", "label": "production"}))))
    assert second["outputs"]["answer"]["text"] == "Echo: v3 about otters"
    assert api.node(second, "ask")["prompt"] == {"key": "answer", "version": 3}


def test_versions_are_cached_and_a_change_is_seen_by_the_next_node(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, inline_worker: Any) -> None:
    write_model("steady", "echo")
    refresh(client)
    versions(client, "hello", "hi {{ topic }}", "hello {{ topic }}", production=1)
    workflow_id = api.create_workflow(prompt_workflow("steady", {"key": "hello", "label": "production"}))
    assert api.wait(api.submit(workflow_id, {"topic": "a"}))["outputs"]["answer"]["text"] == "Echo: hi a"
    # the second node: one statement about prompts (resolve + pin + counter), no version read
    statements: list[str] = []
    engine = inline_worker.executor.store.prompts.engine

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert api.wait(api.submit(workflow_id, {"topic": "b"}))["outputs"]["answer"]["text"] == "Echo: hi b"
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len([s for s in statements if "prompt" in s]) == 1, statements
    assert inline_worker.executor.prompts.loads == 1
    client.put("/v1/prompts/hello/labels/production", json={"version": 2})
    assert api.wait(api.submit(workflow_id, {"topic": "c"}))["outputs"]["answer"]["text"] == "Echo: hello c"


def test_a_missing_required_variable_fails_the_node_naming_it(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, inline_worker: Any) -> None:
    write_model("steady", "echo")
    refresh(client)
    assert client.post("/v1/prompts", json={"key": "needs", "version": {
        "text": "{{ topic }} for {{ audience }}",
        "variables": [{"name": "topic"}, {"name": "audience"}]}}).status_code == 201
    run = api.wait(api.submit(api.create_workflow(prompt_workflow("steady", {"key": "needs", "version": 1}))))
    assert run["status"] == "failed"
    assert "'audience'" in run["error"]["message"] and "ask" in run["error"]["message"]


def test_chat_messages_and_optional_defaults(api: Any, client: Any, fake_llm: FakeLLM, write_model: Any,
                                             inline_worker: Any) -> None:
    write_model("steady", "echo")
    refresh(client)
    assert client.post("/v1/prompts", json={"key": "chat", "version": {
        "messages": [{"role": "system", "text": "Speak {{ tone }}."}, {"role": "user", "text": "Tell {{ topic }} 🦦"}],
        "variables": [{"name": "topic"}, {"name": "tone", "required": False, "default": "softly"}]}}).status_code == 201
    run = api.wait(api.submit(api.create_workflow(prompt_workflow("steady", {"key": "chat", "label": "latest"}))))
    assert run["outputs"]["answer"]["text"] == "Echo: Tell otters 🦦", run
    assert fake_llm.requests[-1]["messages"][0] == {"role": "system", "content": "Speak softly."}


def test_a_workflow_naming_a_missing_prompt_is_refused_at_save(api: Any, client: Any, fake_llm: FakeLLM,
                                                               write_model: Any) -> None:
    write_model("steady", "echo")
    refresh(client)
    versions(client, "known", "text {{ topic }}")
    for ref, field in (({"key": "nope", "label": "production"}, "config.prompt.key"),
                       ({"key": "known", "version": 7}, "config.prompt.version"),
                       ({"key": "known", "label": "staging"}, "config.prompt.label")):
        response = client.post("/v1/workflows", json={"name": "w", "definition": prompt_workflow("steady", ref)})
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["errors"][0]["field"] == field
    both = client.post("/v1/workflows", json={"name": "w", "definition": prompt_workflow(
        "steady", {"key": "known", "label": "latest", "version": 1})})
    assert both.status_code == 422
    # an intent node takes a library prompt too
    intent = prompt_workflow("steady", {"key": "nope", "label": "latest"}, node_type="intent",
                             config={"intents": ["a", "b"], "query": "{{ topic }}"})
    intent["nodes"][0]["config"].pop("stream")
    assert client.post("/v1/workflows", json={"name": "w", "definition": intent}).status_code == 422


def test_a_label_move_is_seen_by_every_worker_process_without_restart(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, start_worker: Any) -> None:
    # Given two worker processes that rendered version 1 (their caches filled)
    write_model("steady", "echo")
    refresh(client)
    versions(client, "greeting", "one {{ topic }}", "two {{ topic }}", production=1)
    start_worker(processes=2, threads=2)
    workflow_id = api.create_workflow(prompt_workflow("steady", {"key": "greeting", "label": "production"}))
    before = [api.submit(workflow_id, {"topic": str(i)}) for i in range(4)]
    assert {api.wait(r, timeout_s=60)["outputs"]["answer"]["text"][:9] for r in before} == {"Echo: one"}
    # When production moves to version 2
    client.put("/v1/prompts/greeting/labels/production", json={"version": 2})
    # Then every next node renders version 2, whichever process runs it
    after = [api.submit(workflow_id, {"topic": str(i)}) for i in range(6)]
    runs = [api.wait(r, timeout_s=60) for r in after]
    assert {r["outputs"]["answer"]["text"][:9] for r in runs} == {"Echo: two"}
    assert {api.node(r, "ask")["prompt"]["version"] for r in runs} == {2}
