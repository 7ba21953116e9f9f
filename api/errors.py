"""One place maps failures to HTTP: the engine's error tree, Werkzeug's HTTP errors, request
validation errors, and anything unexpected (500, without internals)."""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, make_response, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from engine.errors import EngineError

log = logging.getLogger("relayflow.api")

_HTTP_MESSAGES = {
    400: "The request body is not valid JSON.",
    404: "No such route.",
    405: "Method not allowed on this route.",
    413: "The request body is too large.",
    415: "Send the body as application/json.",
}


def error_response(status: int, code: int, msg: str, **extra: Any) -> ResponseReturnValue:
    """A `{code, msg, ...}` JSON error with a real HTTP status."""
    return jsonify({"code": code, "msg": msg, **extra}), status


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # NUL, and halves of surrogate pairs


def unstorable_text(value: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string in `value` holding a NUL or a lone surrogate
    ("" for `value` itself)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:  # iterative: bodies may nest deeper than the recursion limit allows
        at, item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return at
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return at
                stack.append((f"{at}.{key}" if at else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{at}[{i}]", child) for i, child in enumerate(item))
    return None


def unstorable_response(where: str) -> Response:
    """422 for text that cannot be stored (NUL characters, unpaired surrogates) at `where`."""
    message = "must not contain NUL characters or unpaired surrogates"
    shown = _UNSTORABLE.sub("?", where) or None  # the key itself may hold the character at fault
    return make_response(jsonify({"code": 4000, "msg": f"Invalid request: {shown or 'body'}: {message}",
                                  "errors": [{"field": shown, "message": message}]}), 422)


# Coze Studio's prompt routes answer its own "invalid param" code (backend/types/errno/prompt.go).
COZE_PROMPT_PREFIXES = ("/api/playground_api/", "/api/plugin_api/")
COZE_INVALID_PARAM = 110000000


def validation_error(exc: ValidationError) -> Response:
    """422 listing every invalid field; never echoes the submitted values (they may hold secrets)."""
    errors: list[dict[str, Any]] = [{"field": ".".join(str(p) for p in e["loc"]) or None, "message": e["msg"]}
                                    for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
    code = COZE_INVALID_PARAM if request.path.startswith(COZE_PROMPT_PREFIXES) else 4000
    return make_response(jsonify({"code": code, "msg": f"Invalid request: {summary}", "errors": errors}), 422)


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(EngineError)
    def _engine(exc: EngineError) -> ResponseReturnValue:
        # RFC 6750: a 401 names the scheme the client must use
        headers = {"WWW-Authenticate": 'Bearer realm="relayflow"'} if exc.http_status == 401 else {}
        retry_after_s = getattr(exc, "retry_after_s", None)
        if retry_after_s:
            headers["Retry-After"] = str(retry_after_s)
        return jsonify(exc.to_dict()), exc.http_status, headers

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        msg = _HTTP_MESSAGES.get(status) or exc.description or exc.name
        if status == 413:
            msg = f"The request body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes."
        return error_response(status, status * 10, msg)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, 5000, "Internal server error.")
