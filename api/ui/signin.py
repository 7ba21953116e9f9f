"""Signing in (paste a token) and out."""
from __future__ import annotations

from flask import make_response, redirect, render_template, request
from flask.typing import ResponseReturnValue

from api.ui import bp, session
from engine.errors import TooManyFailedLogins, Unauthorized


def _form(error: str = "", status: int = 200) -> ResponseReturnValue:
    value = session.new_signin_value()
    response = make_response(render_template("signin.html", signin_value=value, error=error,
                                             why=request.args.get("why", ""),
                                             next=session.safe_next(request.values.get("next"))), status)
    session.set_cookie(response, session.PRE_COOKIE, value, samesite="Strict")
    return response


@bp.get("/signin")
def signin_form() -> ResponseReturnValue:
    """The sign-in page."""
    return _form()


@bp.post("/signin")
def signin() -> ResponseReturnValue:
    """Check the pasted token as the API would; on success keep it in the session cookie."""
    token = request.form.get("token", "").strip()
    try:
        session.verify(token)
    except TooManyFailedLogins as exc:
        return _form(exc.message, 429)
    except Unauthorized as exc:
        return _form(exc.message, 401)
    response = redirect(session.safe_next(request.form.get("next")), 303)
    session.set_cookie(response, session.COOKIE, token)
    session.clear_cookie(response, session.PRE_COOKIE)
    return response


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    """Forget the token: the cookie is cleared."""
    response = redirect("/ui/signin", 303)
    session.clear_cookie(response, session.COOKIE)
    return response
