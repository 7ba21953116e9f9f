"""The HTTP API: a Flask app factory. Views are thin: parse, call engine, serialise."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.settings import Settings, get_settings

if TYPE_CHECKING:
    from flask_openapi3 import OpenAPI


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def create_app(settings: Settings | None = None) -> OpenAPI:
    """Build the app; settings default to the environment."""
    # Imported here so the CLI (which lives in this package) starts fast.
    from flask import request
    from flask_openapi3 import Info, OpenAPI
    from werkzeug.exceptions import BadRequest, UnsupportedMediaType

    from api import coze, coze_prompts, errors, health, metrics, openapi, prompts, registry, reruns, runs, tokens, ui, workflows
    from api.json_provider import OrjsonProvider
    from api.models import ErrorBody
    from api.runtime import principal

    settings = settings or get_settings()
    app = OpenAPI(__name__, info=Info(title="Relayflow", version="0.1.0"),
                  security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                  validation_error_status=422, validation_error_model=ErrorBody,
                  validation_error_callback=errors.validation_error,
                  doc_ui=False)
    app.config["RELAYFLOW_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrjsonProvider(app)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    errors.init_app(app)

    @app.before_request
    def _authenticate() -> None:
        # Before any parsing: an unauthenticated caller learns nothing of a route's input rules.
        # The scope each route needs is checked in its view (`principal(scope)`).
        if request.url_rule is not None and request.url_rule.rule.startswith(("/v1/", "/api/")):
            principal()

    @app.before_request
    def _require_valid_json() -> Any:
        # flask-openapi3 parses bodies leniently; malformed JSON must be a 400, not a 422.
        # NaN/Infinity are not JSON (and PostgreSQL's jsonb refuses them); a body nested past
        # Python's recursion limit is refused here rather than failing deeper down.
        body: Any = None
        # not the dashboard's: it posts HTML forms (api/ui)
        if request.method in ("POST", "PUT", "PATCH") and not request.path.startswith("/ui/") \
                and request.content_length != 0 and request.get_data(cache=True):
            if not request.is_json:
                raise UnsupportedMediaType()
            try:
                body = json.loads(request.get_data(cache=True), parse_constant=_not_json)
            except (ValueError, RecursionError):
                raise BadRequest() from None
        # PostgreSQL stores no NUL character and psycopg encodes no lone surrogate: refuse them
        # up front, naming the field, instead of a driver error (500) later.
        # (a poll has a path argument only: it skips the empty parts)
        parts: list[Any] = [request.view_args] if request.view_args else []
        if request.args:
            parts.extend({k: v} for k, v in request.args.items(multi=True))
        if body is not None:
            parts.append(body)
        for part in parts:
            if (where := errors.unstorable_text(part)) is not None:
                return errors.unstorable_response(where)
        return None

    app.register_api(workflows.bp)
    app.register_api(runs.bp)
    app.register_api(reruns.bp)
    app.register_api(coze.bp)
    app.register_api(coze.history_bp)
    app.register_api(tokens.bp)
    app.register_api(health.bp)
    app.register_api(registry.bp)
    app.register_api(prompts.bp)
    app.register_api(coze_prompts.bp)
    app.register_api(coze_prompts.library_bp)
    ui.init_app(app)  # the dashboard at /ui
    # The generated OpenAPI 3.1 document, from the same pydantic models that validate requests.
    app.add_url_rule("/openapi.json", "openapi_json", lambda: openapi.document(app))
    metrics.init_app(app)
    return app
