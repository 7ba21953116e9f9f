"""What runs cost: declared model prices x the fake provider's reported usage, summed exactly.

A real worker runs these (LiteLLM's fallback path warns inside the test process, see
test_llm_node.py). Prices are large so that Coze's five-decimal `cost` shows them.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from api.localstack.fake_llm import FakeLLM
from tests.conftest import ApiHelper

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

BACKUP = {"input_per_million": "1000", "output_per_million": "3000", "cached_input_per_million": "250"}
SLOPPY = {"input_per_million": "2000", "output_per_million": "4000"}  # no cached price: the input price
MILLION = Decimal(1_000_000)


def priced(usage: dict[str, int], prices: dict[str, str]) -> Decimal:
    """The cost the docs promise: (input - cached) x in + cached x cached_in + output x out, per million."""
    cached = usage.get("cached_input_tokens", 0)
    cached_price = Decimal(prices.get("cached_input_per_million", prices["input_per_million"]))
    return ((usage["input_tokens"] - cached) * Decimal(prices["input_per_million"]) + cached * cached_price
            + usage["output_tokens"] * Decimal(prices["output_per_million"])) / MILLION


def words(messages: list[dict[str, Any]]) -> int:
    """The fake provider's prompt_tokens: whitespace words of every message."""
    return sum(len(str(m.get("content") or "").split()) for m in messages)


def refresh(client: Any) -> None:
    response = client.post("/v1/models/refresh")
    assert response.status_code == 200 and not response.get_json()["data"]["problems"], response.get_json()


@pytest.fixture
def priced_models(client: Any, fake_llm: FakeLLM, write_model: Any) -> FakeLLM:
    """`flaky` (always 503, priced but never answering), `backup` (echo) and `sloppy` (bad JSON)."""
    write_model("flaky", "status=503", pricing={"input_per_million": "9", "output_per_million": "9"})
    write_model("backup", "echo", pricing=BACKUP)
    write_model("sloppy", "bad_json", pricing=SLOPPY)
    refresh(client)
    return fake_llm


ASK = {"id": "ask", "type": "llm",
       "config": {"model": "flaky", "fallback_models": ["backup"], "system_prompt": "Be brief.",
                  "prompt": "Tell me about {{ inputs.topic }} [[fault: cached=3]]", "stream": False}}


def judge(on_error: str) -> dict[str, Any]:
    """A JSON node whose model answers broken JSON twice: both attempts are paid for."""
    node: dict[str, Any] = {"id": "judge", "type": "llm", "outputs": {"verdict": "string"},
                            "config": {"model": "sloppy", "prompt": "Judge {{ inputs.topic }}", "output_format": "json"},
                            "retry": {"max_attempts": 2, "backoff_s": 0.1}, "on_error": on_error}
    if on_error == "default":
        node["default_output"] = {"verdict": "unknown"}
    return node


def test_run_and_node_costs_are_the_answering_models_prices_times_usage_failed_attempts_included(
        api: ApiHelper, priced_models: FakeLLM, start_worker: Any) -> None:
    # Given a node whose primary fails and whose fallback (priced) answers with 3 cached tokens,
    # and a node whose two attempts both answer JSON that fails validation
    start_worker()
    definition = {"inputs": {"topic": {"type": "string", "default": "otters"}},
                  "nodes": [ASK, judge("default")], "outputs": {"text": "{{ ask.text }}", "verdict": "{{ judge.verdict }}"}}
    # When the run ends
    run = api.wait(api.submit(api.create_workflow(definition), {}), timeout_s=60)
    assert run["status"] == "succeeded", run
    ask, verdict = api.node(run, "ask"), api.node(run, "judge")
    # Then the fallback answered, and its usage is what the fake provider reported
    assert ask["model"] == "backup"
    [echo_request] = [r for r in priced_models.requests if r["model"] == "echo"]
    assert ask["usage"]["input_tokens"] == words(echo_request["messages"])
    assert ask["usage"]["output_tokens"] == len(ask["output"]["text"].split())
    assert ask["usage"]["cached_input_tokens"] == 3
    ask_cost = priced(ask["usage"], BACKUP)  # the fallback's own price; the primary never answered
    assert ask_cost > 0 and Decimal(repr(ask["usage"]["cost"])) == ask_cost
    # And both failed attempts of the JSON node were costed, each in its attempt entry
    failed = [entry for entry in verdict["attempt_errors"] if entry.get("usage")]
    assert verdict["attempts"] == 2 and len(failed) == 2
    sloppy_requests = [r for r in priced_models.requests if r["model"] == "bad_json"]
    assert [e["usage"]["input_tokens"] for e in failed] == [words(r["messages"]) for r in sloppy_requests]
    for entry in failed:
        assert Decimal(repr(entry["cost"])) == priced(entry["usage"], SLOPPY)
    judge_cost = sum((priced(e["usage"], SLOPPY) for e in failed), Decimal(0))
    assert Decimal(repr(verdict["usage"]["cost"])) == judge_cost
    # And the run's cost is the sum, exactly (numeric in Postgres)
    assert Decimal(repr(run["usage"]["cost"])) == ask_cost + judge_cost
    assert run["usage"]["input_tokens"] == ask["usage"]["input_tokens"] + sum(e["usage"]["input_tokens"] for e in failed)


def test_a_run_failed_by_its_node_counts_every_attempt_and_coze_history_shows_the_cost(
        api: ApiHelper, priced_models: FakeLLM, start_worker: Any, web_server: str, token: str) -> None:
    # Given a published workflow whose JSON node fails both attempts and fails the run
    start_worker()
    workflow_id = api.create_workflow({"inputs": {"topic": {"type": "string", "default": "otters"}},
                                       "nodes": [judge("fail")], "outputs": {"verdict": "{{ judge.verdict }}"}})
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    # When it runs
    run = api.wait(api.submit(workflow_id, {}), timeout_s=60)
    assert run["status"] == "failed", run
    # Then the run carries the cost of both failed attempts
    entries = [e for e in api.node(run, "judge")["attempt_errors"] if e.get("usage")]
    assert len(entries) == 2
    expected = sum((priced(e["usage"], SLOPPY) for e in entries), Decimal(0))
    assert Decimal(repr(run["usage"]["cost"])) == expected
    assert Decimal(repr(api.node(run, "judge")["usage"]["cost"])) == expected
    # And Coze's run history shows it with five decimals
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        body = http.get("/v1/workflow/get_run_history",
                        params={"workflow_id": workflow_id, "execute_id": run["run_id"]}).json()
    assert body["data"][0]["cost"] == f"{expected:.5f}" != "0.00000"


def test_the_coze_sync_run_answers_the_real_cost(api: ApiHelper, priced_models: FakeLLM, start_worker: Any) -> None:
    start_worker()
    workflow_id = api.create_workflow({"inputs": {"topic": {"type": "string", "default": "otters"}},
                                       "nodes": [{**ASK, "config": {**ASK["config"], "model": "backup",
                                                                    "fallback_models": []}}],
                                       "outputs": {"text": "{{ ask.text }}"}})
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    answer = api.client.post("/v1/workflow/run", json={"workflow_id": workflow_id, "parameters": {}}).get_json()
    assert answer["code"] == 0, answer
    run = api.run(answer["execute_id"])
    expected = priced(api.node(run, "ask")["usage"], BACKUP)
    assert answer["cost"] == f"{expected:.5f}" != "0.00000"
    assert answer["token"] == run["usage"]["input_tokens"] + run["usage"]["output_tokens"]


def test_a_parent_runs_cost_includes_its_child_runs(api: ApiHelper, priced_models: FakeLLM,
                                                    start_worker: Any) -> None:
    # Given a workflow whose sub-workflow node runs a child that asks the priced model
    start_worker()
    api.create_workflow({"inputs": {"topic": {"type": "string", "required": True}},
                         "nodes": [{**ASK, "config": {**ASK["config"], "model": "backup", "fallback_models": []}}],
                         "outputs": {"text": "{{ ask.text }}"}}, name="asker")
    parent_id = api.create_workflow({"nodes": [{"id": "sub", "type": "workflow", "config": {"workflow": "asker"},
                                                "inputs": {"topic": "badgers"}}],
                                     "outputs": {"text": "{{ sub.text }}"}}, name="parent")
    # When the parent run ends
    run = api.wait(api.submit(parent_id, {}), timeout_s=60)
    assert run["status"] == "succeeded", run
    # Then the child run carries its own cost, and the parent node and run include it
    [child] = api.client.get(f"/v1/runs?parent={run['run_id']}").get_json()["runs"]
    child_run = api.run(child["run_id"])
    child_cost = priced(api.node(child_run, "ask")["usage"], BACKUP)
    assert child_cost > 0 and Decimal(repr(child["usage"]["cost"])) == child_cost
    assert Decimal(repr(api.node(run, "sub")["usage"]["cost"])) == child_cost
    assert Decimal(repr(run["usage"]["cost"])) == child_cost
    assert run["usage"]["input_tokens"] == 0  # tokens stay with the run that spent them


def test_the_model_list_shows_prices(client: Any, priced_models: FakeLLM) -> None:
    models = {m["id"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert models["backup"]["pricing"] == {**BACKUP, "currency": "USD"}
    assert models["sloppy"]["pricing"]["cached_input_per_million"] == "2000"
