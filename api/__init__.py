"""The HTTP API: a Flask app factory. Views are thin: parse, call engine, serialise."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.settings import Settings, get_settings

if TYPE_CHECKING:
    from flask_openapi3 import OpenAPI


def create_app(settings: Settings | None = None) -> "OpenAPI":
    """Build the app; settings default to the environment."""
    # Imported here so the CLI (which lives in this package) starts fast.
    from flask import request
    from flask_openapi3 import Info, OpenAPI
    from werkzeug.exceptions import BadRequest, UnsupportedMediaType

    from api import errors, health, registry, runs, workflows

    settings = settings or get_settings()
    app = OpenAPI(__name__, info=Info(title="Relayflow", version="0.1.0"),
                  security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                  validation_error_status=422, validation_error_callback=errors.validation_error,
                  doc_ui=False)
    app.config["RELAYFLOW_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    errors.init_app(app)

    @app.before_request
    def _require_valid_json() -> None:
        # flask-openapi3 parses bodies leniently; malformed JSON must be a 400, not a 422.
        if request.method in ("POST", "PUT", "PATCH") and request.content_length != 0 and request.get_data(cache=True):
            if not request.is_json:
                raise UnsupportedMediaType()
            try:
                json.loads(request.get_data(cache=True))
            except ValueError:
                raise BadRequest() from None

    app.register_api(workflows.bp)
    app.register_api(runs.bp)
    app.register_api(health.bp)
    app.register_api(registry.bp)
    # The generated OpenAPI 3.1 document, from the same pydantic models that validate requests.
    app.add_url_rule("/openapi.json", "openapi_json", lambda: app.api_doc)
    return app
