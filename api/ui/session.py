"""The dashboard's session: the token in a cookie, checked exactly as the API checks a bearer token,
and the CSRF token every state-changing request must carry.

Why these choices (docs/dashboard.md, "Security"):
- The cookie holds the token itself (HttpOnly: page scripts never read it), so signing in needs no
  server-side session table, and revoking the token signs every browser out at its next request.
- SameSite=Lax rather than Strict: a link to a run pasted in a chat opens signed in (Strict would
  show the sign-in page on every such arrival), while cross-site POSTs, frames and fetches still go
  without the cookie. Every POST also needs the CSRF token, so Lax gives away nothing.
- The CSRF token is an HMAC of a fixed label keyed by the session's token: it needs no server
  secret shared between web processes, differs per session, and reveals nothing of the token.
- Sign-in has no session yet: a double-submitted random value (a Strict cookie and a form field)
  stops another site from signing a browser in with the other site's token.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import g, request
from werkzeug.wrappers import Response

from engine.errors import Unauthorized
from engine.tokens import Principal, authenticate

COOKIE = "relayflow_ui"
PRE_COOKIE = "relayflow_ui_signin"  # the sign-in form's double-submit value
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
_LABEL = b"relayflow-ui-csrf-v1"


class SignInRequired(Exception):
    """No valid session: the view answers with the sign-in page (why says what happened, if anything)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose token is `token`."""
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def current() -> Principal:
    """The signed-in principal (cached on the request); SignInRequired without a valid cookie."""
    found: Principal | None = g.get("ui_principal")
    if found is not None:
        return found
    from api.runtime import runtime

    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired()
    rt = runtime()
    address = request.remote_addr or "unknown"
    rt.limiter.check(address)  # the same brake as the API's bearer tokens
    try:
        found = authenticate(rt.store, f"Bearer {token}")
    except Unauthorized as exc:
        rt.limiter.failed(address)
        raise SignInRequired(exc.message) from None
    g.ui_principal, g.ui_token = found, token
    return found


def verify(token: str) -> Principal:
    """Check a pasted token (sign-in); raises Unauthorized saying why, counted like an API failure."""
    from api.runtime import runtime

    rt = runtime()
    address = request.remote_addr or "unknown"
    rt.limiter.check(address)
    try:
        return authenticate(rt.store, f"Bearer {token.strip()}")
    except Unauthorized:
        rt.limiter.failed(address)
        raise


def page_csrf() -> str:
    """The CSRF token for this page's forms ('' before sign-in)."""
    token = g.get("ui_token")
    return csrf_token(token) if token else ""


def check_csrf() -> bool:
    """Whether this POST carries the session's CSRF token (form field or header) from our own origin."""
    if not _same_origin():
        return False
    token = request.cookies.get(COOKIE)
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    return bool(token and sent) and hmac.compare_digest(sent, csrf_token(token or ""))


def check_signin_form() -> bool:
    """Whether the sign-in POST carries the value its form was served with (double submit)."""
    expected = request.cookies.get(PRE_COOKIE, "")
    sent = request.form.get(CSRF_FIELD, "")
    return _same_origin() and bool(expected and sent) and hmac.compare_digest(sent, expected)


def _same_origin() -> bool:
    # Browsers send Origin on every POST; a value naming another host is another site's form.
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


def new_signin_value() -> str:
    """A fresh double-submit value for the sign-in form."""
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, name: str, value: str, samesite: str = "Lax") -> None:
    """A session cookie of the dashboard: HttpOnly, Secure when served over https, path /ui."""
    response.set_cookie(name, value, httponly=True, samesite=samesite, secure=request.is_secure, path="/ui")


def clear_cookie(response: Response, name: str) -> None:
    """Remove a dashboard cookie."""
    response.delete_cookie(name, path="/ui", httponly=True, samesite="Lax", secure=request.is_secure)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard, never another site."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"
