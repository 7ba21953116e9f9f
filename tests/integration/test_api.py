"""The submit-and-poll API slice: bad input is refused clearly and nothing is half-written."""
from __future__ import annotations

from typing import Any

import pytest

from engine.settings import Settings

pytestmark = pytest.mark.integration

GOOD = {"inputs": {"ticket": {"type": "string", "required": True}, "priority": {"type": "integer", "default": 1}},
        "nodes": [{"id": "clean", "type": "template", "config": {"template": "{{ inputs.ticket | trim }}"}}],
        "outputs": {"text": "{{ clean.text }}"}}


def _workflow_count(api: Any) -> int:
    return len(api.client.get("/v1/workflows").get_json()["workflows"])


def test_invalid_definition_lists_every_error_with_node_and_field(api: Any) -> None:
    bad = {"nodes": [
        {"id": "a", "type": "nope"},
        {"id": "b", "type": "template", "config": {"template": "x", "colour": "red"}},
        {"id": "b", "type": "template", "config": {"template": "dup"}},
        {"id": "c", "type": "template", "config": {"template": "{{ ghost.text }}"}},
        {"id": "d", "type": "template", "after": ["e"], "config": {"template": "{{ e.text }}"}},
        {"id": "e", "type": "template", "after": ["d"], "config": {"template": "{{ d.text }}"}},
    ]}
    response = api.client.post("/v1/workflows", json={"name": "bad", "definition": bad})
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] != 0 and body["msg"]
    where = {(e["node_id"], (e["field"] or "").split(".")[0]) for e in body["errors"]}
    assert ("a", "type") in where
    assert ("b", "config") in where
    assert any(e["node_id"] == "c" and "ghost" in e["message"] for e in body["errors"])
    assert any("cycle" in e["message"] for e in body["errors"])
    assert any("duplicate" in e["message"].lower() for e in body["errors"])
    assert _workflow_count(api) == 0


def test_definition_as_yaml_text_is_accepted(api: Any) -> None:
    yaml_text = "nodes:\n  - id: hi\n    type: template\n    config: {template: 'héllo 👋'}\noutputs: {text: '{{ hi.text }}'}\n"
    response = api.client.post("/v1/workflows", json={"name": "yaml", "definition": yaml_text})
    assert response.status_code == 201, response.get_json()
    shown = api.client.get(f"/v1/workflows/{response.get_json()['workflow_id']}").get_json()
    assert shown["definition"]["nodes"][0]["config"]["template"] == "héllo 👋"


def test_wrong_run_inputs_are_refused_naming_the_input_and_no_run_is_created(api: Any) -> None:
    workflow_id = api.create_workflow(GOOD)
    response = api.client.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": {"priority": "high"}})
    assert response.status_code == 422
    body = response.get_json()
    fields = {e["field"] for e in body["errors"]}
    assert {"inputs.ticket", "inputs.priority"} <= fields
    assert "ticket" in body["msg"]
    assert api.client.get("/v1/runs").get_json()["runs"] == []


def test_malformed_json_is_400_and_oversized_body_is_413(api: Any, settings: Settings) -> None:
    malformed = api.client.post("/v1/workflows", data="{not json", content_type="application/json")
    assert malformed.status_code == 400 and malformed.get_json()["code"] != 0
    too_big = {"description": "x" * (settings.max_body_bytes + 1)}
    huge = api.client.post("/v1/workflows", json={"name": "big", "definition": too_big})
    assert huge.status_code == 413 and "too large" in huge.get_json()["msg"] or "larger" in huge.get_json()["msg"]
    assert _workflow_count(api) == 0


def test_unknown_ids_are_404(api: Any) -> None:
    for path in ("/v1/runs/0b6a4c1e-8d0e-4c55-9a51-5f2d0c6f7d11", "/v1/runs/not-a-uuid", "/v1/workflows/wf_nope"):
        response = api.client.get(path)
        assert response.status_code == 404, path
        assert response.get_json()["code"] != 0 and response.get_json()["msg"]
    assert api.client.post("/v1/workflows/wf_nope/runs", json={"inputs": {}}).status_code == 404


def test_requests_without_a_valid_token_are_401(app: Any) -> None:
    plain = app.test_client()
    assert plain.get("/v1/runs").status_code == 401
    assert "Authorization" in plain.get("/v1/runs").get_json()["msg"]
    assert plain.get("/v1/runs", headers={"Authorization": "Bearer rf_wrong"}).status_code == 401
    assert plain.get("/v1/runs", headers={"Authorization": "Basic abc"}).status_code == 401


def test_versions_are_immutable_and_runs_pin_their_version(api: Any, inline_worker: Any) -> None:
    workflow_id = api.create_workflow(GOOD)
    v2 = dict(GOOD, outputs={"text": "v2: {{ clean.text }}"})
    assert api.client.put(f"/v1/workflows/{workflow_id}", json={"definition": v2}).get_json()["version"] == 2
    published = api.client.post(f"/v1/workflows/{workflow_id}/publish", json={"version": 1}).get_json()
    assert published == {"workflow_id": workflow_id, "published_version": 1}
    old = api.wait(api.submit(workflow_id, {"ticket": " a "}, version=1))
    new = api.wait(api.submit(workflow_id, {"ticket": " a "}))
    assert (old["version"], old["outputs"]) == (1, {"text": "a"})
    assert (new["version"], new["outputs"]) == (2, {"text": "v2: a"})


def test_run_list_is_newest_first_and_cursor_paged(api: Any) -> None:
    workflow_id = api.create_workflow(GOOD)
    ids = [api.submit(workflow_id, {"ticket": str(i)}) for i in range(5)]
    first = api.client.get(f"/v1/runs?workflow_id={workflow_id}&limit=3").get_json()
    second = api.client.get(f"/v1/runs?workflow_id={workflow_id}&limit=3&cursor={first['next_cursor']}").get_json()
    assert [r["run_id"] for r in first["runs"] + second["runs"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert api.client.get("/v1/runs?status=bogus").status_code == 422


def test_healthz_reports_queue_depth_to_an_operator_and_503_when_a_service_is_down(app: Any, settings: Settings,
                                                                                     token: str) -> None:
    operator = {"Authorization": f"Bearer {token}"}  # the local token holds the operator scope
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}
    healthy = app.test_client().get("/healthz", headers=operator)
    assert healthy.status_code == 200
    assert healthy.get_json()["postgres"] == "ok" and healthy.get_json()["queue_depth"] == 0
    from api import create_app

    no_redis = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    down = no_redis.test_client().get("/healthz", headers=operator)
    assert down.status_code == 503 and down.get_json()["redis"].startswith("unavailable")
    no_pg = create_app(settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x"}))
    down = no_pg.test_client().get("/healthz")
    assert down.status_code == 503 and down.get_json() == {"status": "unavailable"}


def test_openapi_document_describes_every_route(app: Any) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/workflows", "/v1/workflows/{workflow_id}", "/v1/workflows/{workflow_id}/publish",
            "/v1/workflows/{workflow_id}/runs", "/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/cancel",
            "/healthz"} <= set(doc["paths"])
    assert "422" in doc["paths"]["/v1/workflows/{workflow_id}/runs"]["post"]["responses"]
