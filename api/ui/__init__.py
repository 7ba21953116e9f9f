"""The web dashboard at /ui: server-rendered pages (Jinja2) and a little JavaScript of our own,
served by the web process. Templates and static files are package data of this package.

Views are thin like the API's: they read the signed-in principal (session.py), call the same
engine service with that principal's space, and render. Modules: `session` (cookie and CSRF),
`graph` (the run graph's layout), `forms` (form fields to values), `runs` (runs and run pages),
`catalog` (workflows, models, prompts, API docs), `hooks` (features other parts add: rerun,
diagnosis). May import `engine` and `api.runtime`; nothing imports it but `api.create_app`.
"""
from __future__ import annotations

import json
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from api.errors import unstorable_text
from api.ui import session
from engine.errors import EngineError, NotFound

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static",
               static_url_path="/static")

# No inline script or style and nothing from another origin: a template bug cannot become XSS
# that runs, and the page cannot be framed (clickjacking on the cancel button).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# Routes the pages' JavaScript calls: without a session they answer 401, not the sign-in page.
_SCRIPT_ENDPOINTS = frozenset({"ui.runs_live", "ui.run_state", "ui.run_events"})
PRETTY_MAX_CHARS = 20_000
STATUS_ORDER = ("queued", "running", "interrupted", "succeeded", "failed", "cancelled")


@bp.before_request
def _csrf() -> ResponseReturnValue | None:
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint == "ui.static":
        return None
    if request.endpoint == "ui.signin":
        ok = session.check_signin_form()
    else:
        ok = session.check_csrf()
    if not ok:
        return error_page("Refused", "This form was not sent from this dashboard (missing or wrong CSRF token). "
                                     "Reload the page and try again.", 403)
    if (where := unstorable_text(request.form.to_dict())) is not None:  # PostgreSQL stores no NUL
        return error_page("Refused", f"{where}: must not contain NUL characters or unpaired surrogates", 422)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    # Swagger UI's bundle sets inline styles: that page alone allows them
    csp = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") if request.endpoint == "ui.api_docs" else CSP
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint not in ("ui.static", "ui.swagger_static"):
        response.headers["Cache-Control"] = "no-store"  # pages hold the space's data
    return response


@bp.app_template_global()
def csrf_token() -> str:
    """The CSRF token for this page's forms."""
    return session.page_csrf()


@bp.app_template_filter("short_id")
def short_id(value: str | None) -> str:
    """The first 8 characters of a run id."""
    return (value or "")[:8]


@bp.app_template_filter("when")
def when(value: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC as stored)."""
    return value.replace("T", " ")[:19] if value else "—"


@bp.app_template_filter("pretty")
def pretty(value: Any) -> str:
    """A value as indented JSON (escaped by the template like any text), cut past PRETTY_MAX_CHARS."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > PRETTY_MAX_CHARS:  # a 10,000-item input would make the page heavy: the API has it whole
        return f"{text[:PRETTY_MAX_CHARS]}\n… ({len(text) - PRETTY_MAX_CHARS:,} more characters: GET /v1/runs/ID has it all)"
    return text


@bp.app_template_filter("yaml")
def as_yaml(value: Any) -> str:
    """A value as block YAML (how definitions are written)."""
    return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100))


@bp.errorhandler(session.SignInRequired)
def _sign_in(exc: session.SignInRequired) -> ResponseReturnValue:
    if request.endpoint not in _SCRIPT_ENDPOINTS:
        back = request.full_path.rstrip("?") if request.method == "GET" else "/ui/"  # a form's POST is not a page
        target = url_for("ui.signin", next=back, why=exc.why or None)
        response = redirect(target, 303)
    else:  # the page's JavaScript polling: a status it can act on
        response = Response('{"signed_in": false}', 401, mimetype="application/json")
    if exc.why:
        session.clear_cookie(response, session.COOKIE)
    return response


@bp.errorhandler(EngineError)
def _engine_error(exc: EngineError) -> ResponseReturnValue:
    if isinstance(exc, NotFound):  # another space's id reads the same as no id: nothing shown
        return error_page("Not found", "There is nothing here.", 404)
    return error_page("Error", exc.message, exc.http_status)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    return error_page(exc.name, exc.description or "", exc.code or 500)


def error_page(title: str, message: str, status: int) -> ResponseReturnValue:
    """An error page; signed in (if this request got that far), with the navigation."""
    return render_template("error.html", title=title, message=message, who=g.get("ui_principal")), status


def init_app(app: Flask) -> None:
    """Register the dashboard's routes under /ui."""
    from api.ui import catalog, runs, signin  # noqa: F401  (their routes register on `bp`)

    app.register_blueprint(bp)


def render(template: str, **context: Any) -> str:
    """Render a signed-in page (the principal is in every template as `who`)."""
    return render_template(template, who=session.current(), **context)
