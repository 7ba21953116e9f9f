"""An llm node's `model` and `fallback_models` are checked against the registry when the
workflow is saved (POST and PUT): a 422 naming the node, the field and the model."""
from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_llm_node import llm_workflow, refresh

pytestmark = pytest.mark.integration


def save(client: Any, definition: dict[str, Any], workflow_id: str | None = None) -> Any:
    """POST a new workflow, or PUT a new version of `workflow_id`; the response."""
    if workflow_id is None:
        return client.post("/v1/workflows", json={"name": "wf", "definition": definition})
    return client.put(f"/v1/workflows/{workflow_id}", json={"definition": definition})


def test_a_workflow_naming_a_model_missing_from_the_registry_is_refused_at_create(
        client: Any, write_model: Any) -> None:
    # Given a registry with two models
    write_model("alpha")
    write_model("beta")
    refresh(client)
    # When a workflow names a model that is not one of them
    response = save(client, llm_workflow("alpah"))
    # Then it is a 422 naming the node, the field and the model, with the models there are
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    [error] = body["errors"]
    assert (error["node_id"], error["field"]) == ("ask", "config.model")
    assert "model 'alpah' is not in the model registry (did you mean 'alpha'?)" in error["message"]
    assert "available: alpha, beta" in error["message"]
    assert "ask.config.model" in body["msg"]
    # And nothing was stored
    assert client.get("/v1/workflows").get_json()["workflows"] == []


def test_a_new_version_naming_a_missing_fallback_model_is_refused_and_the_old_version_stays(
        api: Any, client: Any, write_model: Any) -> None:
    # Given a saved workflow on a known model
    write_model("alpha")
    write_model("beta")
    refresh(client)
    workflow_id = api.create_workflow(llm_workflow("alpha", ["beta"]))
    # When a new version adds a fallback the registry lacks, after a known one
    response = save(client, llm_workflow("alpha", ["beta", "gamma"]), workflow_id)
    # Then it is a 422 naming the fallback's position and the model
    assert response.status_code == 422, response.get_json()
    [error] = response.get_json()["errors"]
    assert (error["node_id"], error["field"]) == ("ask", "config.fallback_models[1]")
    assert "model 'gamma' is not in the model registry" in error["message"]
    # And the workflow still has only its first version
    assert [v["version"] for v in client.get(f"/v1/workflows/{workflow_id}").get_json()["versions"]] == [1]


def test_known_models_are_accepted_and_a_model_added_later_is_accepted_once_refreshed(
        api: Any, client: Any, write_model: Any) -> None:
    # Given a registry with one model
    write_model("alpha")
    refresh(client)
    # When workflows name it, as primary and as fallback
    workflow_id = api.create_workflow(llm_workflow("alpha", ["alpha"]))
    # Then they are saved, on create and on update
    assert save(client, llm_workflow("alpha"), workflow_id).status_code == 200
    # And a model whose file is written is refused until the registry is refreshed, then accepted
    write_model("beta")
    assert save(client, llm_workflow("beta"), workflow_id).status_code == 422
    assert refresh(client)["new_models"] == ["beta"]
    assert save(client, llm_workflow("alpha", ["beta"]), workflow_id).get_json()["version"] == 3


def test_an_empty_registry_refuses_every_llm_node_saying_it_has_no_models(client: Any, model_dir: Any) -> None:
    # Given a model folder with no model in it
    # When a workflow with two llm nodes (one templated) is saved
    definition = llm_workflow("alpha")
    definition["inputs"]["m"] = {"type": "string", "default": "alpha"}
    definition["nodes"].append({"id": "other", "type": "llm", "config": {"model": "{{ inputs.m }}", "prompt": "hi"}})
    response = save(client, definition)
    # Then each node is refused, saying the registry has no models
    assert response.status_code == 422, response.get_json()
    errors = response.get_json()["errors"]
    assert [(e["node_id"], e["field"]) for e in errors] == [("ask", "config.model"), ("other", "config.model")]
    assert errors[0]["message"].startswith("model 'alpha' is not available: the model registry has no models")
    assert "the model registry has no models" in errors[1]["message"]


def test_a_templated_model_is_saved_and_an_unknown_rendered_model_fails_the_node_at_run_time(
        api: Any, client: Any, write_model: Any, start_worker: Any) -> None:
    # Given a registry with one model, and a workflow whose model comes from the run's inputs
    write_model("alpha")
    refresh(client)
    definition = llm_workflow("{{ inputs.m }}", ["{{ inputs.m }}", "alpha"])
    definition["inputs"]["m"] = {"type": "string"}
    # When it is saved, then run with a model id the registry lacks
    workflow_id = api.create_workflow(definition)
    start_worker()
    run = api.wait(api.submit(workflow_id, {"m": "nope"}), timeout_s=60)
    # Then the node fails, naming it and the model
    assert run["status"] == "failed", run
    assert "Node ask: model nope is not in the registry" in run["error"]["message"]
    # And a known id runs
    assert api.wait(api.submit(workflow_id, {"m": "alpha"}), timeout_s=60)["status"] == "succeeded"
