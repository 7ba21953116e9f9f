"""The served OpenAPI 3.1 document: flask-openapi3's, completed with the error responses that
every route shares (they come from one place, api/errors.py, not from each view)."""
from __future__ import annotations

import copy
from typing import Any

from flask_openapi3 import OpenAPI

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
# Answered by the before_request body check and Werkzeug for any route that takes a body.
_BODY_ERRORS = {"400": "The request body is not valid JSON.", "413": "The request body is too large.",
                "415": "The body is not application/json."}
_METHODS = ("get", "put", "post", "delete", "patch")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(_ERROR_REF)}}}


def _is_auto_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("type") == "array")  # flask-openapi3's default: a list of pydantic errors


def document(app: OpenAPI) -> dict[str, Any]:
    """The OpenAPI document with ErrorBody for 401 (bearer routes), 422 and body errors on every route."""
    cached: dict[str, Any] | None = app.extensions.get("relayflow_openapi")
    if cached is not None:
        return cached
    doc = copy.deepcopy(app.api_doc)
    for path_item in doc.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            if "422" in responses and _is_auto_422(responses["422"]):
                if takes_input:
                    responses["422"] = _error("A parameter or body field is invalid (errors lists each one).")
                else:  # nothing to validate: flask-openapi3 adds it to every route
                    del responses["422"]
            if operation.get("security"):
                responses.setdefault("401", _error("A valid bearer token is required."))
                responses.setdefault("429", _error("Too many failed authentication attempts from this address "
                                                   "(Retry-After says when to try again), or too many open streams."))
            if operation.get("requestBody"):
                for status, description in _BODY_ERRORS.items():
                    responses.setdefault(status, _error(description))
            operation["responses"] = dict(sorted(responses.items()))
    app.extensions["relayflow_openapi"] = doc
    return doc
