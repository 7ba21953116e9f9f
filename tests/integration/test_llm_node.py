"""LLM nodes through LiteLLM against the fake OpenAI provider (real HTTP).

Run by the in-process worker, except the two tests where a failed call falls back to another
model mid-way: there LiteLLM trips a pydantic deprecation warning, which the test process turns
into an error (and a failed call) where a worker process only prints it; they keep a real worker.
"""
from __future__ import annotations

from typing import Any

import psycopg
import pytest

from api.localstack.fake_llm import FakeLLM

pytestmark = [
    pytest.mark.integration,
    # In-process, an unclosed AF_UNIX socket is collected during these tests (LiteLLM's, it seems:
    # only its calls in the test process show it; a worker process never reports it).
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def llm_workflow(model: str, fallbacks: list[str] | None = None, **node: Any) -> dict[str, Any]:
    """A one-node workflow asking `model` to answer about `inputs.topic`."""
    config = {"model": model, "fallback_models": fallbacks or [], "system_prompt": "Be brief.",
              "prompt": "Tell me about {{ inputs.topic }}", **node.pop("config", {})}
    return {"inputs": {"topic": {"type": "string", "default": "otters"}},
            "nodes": [{"id": "ask", "type": "llm", "config": config, **node}],
            "outputs": {"answer": "{{ ask }}"}}


def run_to_end(api: Any, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create, submit and wait for a run."""
    return api.wait(api.submit(api.create_workflow(definition), inputs or {}), timeout_s=60)


def refresh(client: Any) -> dict[str, Any]:
    """POST /v1/models/refresh and return its data."""
    response = client.post("/v1/models/refresh")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["code"] == 0
    return body["data"]


def events(database_url: str, run_id: str) -> list[tuple[str, Any]]:
    """The run's events (type, data) in order, read from Postgres."""
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return [(t, d) for t, d in conn.execute(
            "SELECT type, data FROM run_events WHERE run_id = %s ORDER BY id", (run_id,))]


def test_a_primary_answering_500_falls_back_to_the_backup(api: Any, client: Any, settings: Any, fake_llm: FakeLLM,
                                                          write_model: Any, start_worker: Any) -> None:
    # Given a primary that answers 500 and a healthy backup (on a real worker, as the other
    # fallback tests: LiteLLM's fallback path was flaky in the shared test process)
    write_model("primary", "status=500")
    write_model("backup", "echo")
    refresh(client)
    start_worker()
    # When a node asks the primary with the backup as fallback
    run = run_to_end(api, llm_workflow("primary", ["backup"]))
    # Then the run succeeds with the backup's answer, and both models' calls are on record
    assert run["status"] == "succeeded", run
    node = api.node(run, "ask")
    assert node["model"] == "backup"
    assert run["outputs"]["answer"]["text"] == "Echo: Tell me about otters"
    attempt = node["attempt_errors"][-1]
    assert [c["model"] for c in attempt["failed_calls"]][:1] == ["primary"]
    assert attempt["failed_calls"][0]["status"] == 500 and attempt["model"] == "backup"
    assert fake_llm.calls["status=500"] >= 1 and fake_llm.calls["echo"] == 1
    assert node["usage"]["input_tokens"] > 0 and run["usage"]["output_tokens"] == node["usage"]["output_tokens"]
    # and the streamed chunks add up to the checkpointed text
    chunks = [d["text"] for t, d in events(settings.database_url, run["run_id"]) if t == "node.chunk"]
    assert "".join(chunks) == "Echo: Tell me about otters"


def test_a_rate_limited_model_answers_after_backoff(api: Any, client: Any, fake_llm: FakeLLM, write_model: Any,
                                                    inline_worker: Any) -> None:
    write_model("busy", "fail_first=2:429+retry_after=1")
    refresh(client)
    run = run_to_end(api, llm_workflow("busy", config={"stream": False}))
    assert run["status"] == "succeeded", run
    node = api.node(run, "ask")
    assert node["model"] == "busy" and node["attempts"] == 1
    attempt = node["attempt_errors"][-1]
    assert [c["status"] for c in attempt["failed_calls"]] == [429, 429]
    assert attempt["latency_ms"] >= 1500  # it waited for Retry-After twice
    assert fake_llm.calls["fail_first=2:429+retry_after=1"] == 3


def test_a_model_that_times_out_falls_back(api: Any, client: Any, fake_llm: FakeLLM, write_model: Any,
                                           start_worker: Any) -> None:
    write_model("slow", "delay=3", timeout="1s")
    write_model("backup", "echo")
    refresh(client)
    start_worker()
    run = run_to_end(api, llm_workflow("slow", ["backup"]))
    assert run["status"] == "succeeded", run
    node = api.node(run, "ask")
    assert node["model"] == "backup"
    assert {c["error"] for c in node["attempt_errors"][-1]["failed_calls"]} == {"Timeout"}


def test_an_unauthorised_model_fails_at_once_without_retries(api: Any, client: Any, fake_llm: FakeLLM,
                                                             write_model: Any, inline_worker: Any) -> None:
    write_model("locked", "status=401")
    refresh(client)
    run = run_to_end(api, llm_workflow("locked", retry={"max_attempts": 3, "backoff_s": 0.1}))
    assert run["status"] == "failed", run
    node = api.node(run, "ask")
    assert node["attempts"] == 1 and fake_llm.calls["status=401"] == 1
    assert node["error"]["kind"] == "permanent"
    assert "model locked failed (AuthenticationError 401)" in node["error"]["message"]


def test_json_answers_are_parsed_and_bad_json_is_retried_then_fails(api: Any, client: Any, fake_llm: FakeLLM,
                                                                   write_model: Any, inline_worker: Any) -> None:
    write_model("jsonish", "echo")
    write_model("sloppy", "bad_json")
    refresh(client)
    good = run_to_end(api, llm_workflow("jsonish", config={"output_format": "json"},
                                        outputs={"echo": "string", "words": "integer"}))
    assert good["status"] == "succeeded", good
    assert good["outputs"]["answer"]["echo"] == "Tell me about otters"
    assert good["outputs"]["answer"]["words"] == 4
    assert fake_llm.requests[-1]["response_format"] == {"type": "json_object"}
    bad = run_to_end(api, llm_workflow("sloppy", config={"output_format": "json"}, outputs={"echo": "string"},
                                       retry={"max_attempts": 2, "backoff_s": 0.1}))
    assert bad["status"] == "failed", bad
    node = api.node(bad, "ask")
    assert node["attempts"] == 2 and fake_llm.calls["bad_json"] == 2
    assert "model sloppy answered text that is not JSON" in node["error"]["message"]
    # the tokens of both failed attempts were spent, and count in the run's usage
    spent = [entry["usage"] for entry in node["attempt_errors"] if entry.get("usage")]
    assert len(spent) == 2
    assert bad["usage"] == {"input_tokens": sum(u["input_tokens"] for u in spent),
                            "output_tokens": sum(u["output_tokens"] for u in spent), "cost": 0.0}  # no price
    assert bad["usage"]["output_tokens"] > 0


def test_a_stream_cut_midway_moves_to_the_backup_without_duplicating_text(
        api: Any, client: Any, settings: Any, fake_llm: FakeLLM, write_model: Any, start_worker: Any) -> None:
    write_model("cutter", "cut_stream")
    write_model("backup", "echo")
    refresh(client)
    start_worker()
    run = run_to_end(api, llm_workflow("cutter", ["backup"], config={"prompt": "one two three four five six"}))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["answer"]["text"] == "Echo: one two three four five six"
    types = [(t, d) for t, d in events(settings.database_url, run["run_id"]) if t.startswith("node.chunk")]
    reset_at = next(i for i, (t, _) in enumerate(types) if t == "node.chunk_reset")
    assert types[reset_at][1]["model"] == "cutter"
    after = "".join(d["text"] for t, d in types[reset_at + 1:] if t == "node.chunk")
    assert after == "Echo: one two three four five six"


def test_a_node_whose_model_was_removed_fails_with_a_clear_error(api: Any, client: Any, fake_llm: FakeLLM,
                                                                 write_model: Any, inline_worker: Any) -> None:
    path = write_model("gone", "echo")
    refresh(client)
    workflow_id = api.create_workflow(llm_workflow("gone"))
    path.unlink()
    assert refresh(client)["removed_models"] == ["gone"]
    run = api.wait(api.submit(workflow_id), timeout_s=60)
    assert run["status"] == "failed", run
    assert "Node ask: model gone is not in the registry (removed?)" in run["error"]["message"]
