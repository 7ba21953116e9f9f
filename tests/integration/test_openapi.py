"""The served OpenAPI document describes every route a client can call, errors included."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration

METHODS = ("get", "put", "post", "delete", "patch")
ERROR_REF = "#/components/schemas/ErrorBody"


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _json_schema(response: dict[str, Any]) -> dict[str, Any] | None:
    return response.get("content", {}).get("application/json", {}).get("schema")


@pytest.fixture
def doc(app: Any) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_is_openapi_3_1_and_lists_the_native_routes(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert {"/v1/workflows", "/v1/workflows/{workflow_id}", "/v1/workflows/{workflow_id}/runs",
            "/v1/runs", "/v1/runs/{run_id}", "/healthz"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_every_v1_operation_needs_a_bearer_token_and_documents_its_401(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        if not path.startswith("/v1/"):
            continue
        where = f"{method.upper()} {path}"
        assert {"bearer": []} in operation.get("security", []), where
        assert "401" in operation["responses"], where
        assert _json_schema(operation["responses"]["401"]) == {"$ref": ERROR_REF}, where


def test_every_operation_has_a_summary_and_a_documented_success(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        where = f"{method.upper()} {path}"
        assert operation.get("summary") or operation.get("description"), where
        successes = [code for code in operation["responses"] if code.startswith("2")]
        assert successes, where
        for code in successes:
            content = operation["responses"][code].get("content")
            assert content and all(media.get("schema") for media in content.values()), f"{where} {code}"


def test_every_client_error_response_is_the_error_body(doc: dict[str, Any]) -> None:
    error_body = doc["components"]["schemas"]["ErrorBody"]
    assert {"code", "msg"} <= set(error_body["required"]) and "errors" in error_body["properties"]
    for path, method, operation in _operations(doc):
        for code, response in operation["responses"].items():
            if code.startswith("4"):  # (a 503 of /healthz is its own report, not an error body)
                assert _json_schema(response) == {"$ref": ERROR_REF}, f"{method.upper()} {path} {code}"


def test_operations_with_a_body_document_the_body_errors(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(operation["responses"]), f"{method.upper()} {path}"
