"""Token routes (admin scope): create, list and revoke the personal access tokens of the caller's space."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody, TokenCreate, TokenCreated, TokenList, TokenPath, TokenRevoked
from api.runtime import principal, runtime
from engine import tokens
from engine.store.catalog import TokenInfo

tag = Tag(name="tokens", description="Personal access tokens of the caller's space (admin scope)")
bp = APIBlueprint("tokens", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@bp.post("/tokens", responses={201: TokenCreated, 401: ErrorBody, 403: ErrorBody, 422: ErrorBody})
def create_token(body: TokenCreate) -> Any:
    """Create a token in the caller's space; its plaintext is in this answer only."""
    who = principal("admin")
    tokens.check_grantable(tokens.check_scopes(body.scopes))  # unknown names (422) before the refusal (403)
    expires_in = timedelta(seconds=body.expires_in_s) if body.expires_in_s is not None else None
    issued = tokens.issue_token(runtime().store, who.space_id, body.name, body.scopes, expires_in, owner=body.user)
    return {"token_id": issued.token_id, "token": issued.token, "name": issued.name, "owner": issued.owner,
            "space_id": issued.space_id, "scopes": list(issued.scopes), "expires_at": _iso(issued.expires_at)}, 201


@bp.get("/tokens", responses={200: TokenList, 401: ErrorBody, 403: ErrorBody})
def list_tokens() -> Any:
    """List the space's tokens (revoked and expired ones too); never their hashes or plaintext."""
    who = principal("admin")
    return {"tokens": [_token_dict(t) for t in tokens.list_tokens(runtime().store, who.space_id)]}


@bp.post("/tokens/<token_id>/revoke",
         responses={200: TokenRevoked, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody,
                    422: ErrorBody})
def revoke_token(path: TokenPath) -> Any:
    """Revoke a token of the space: it answers 401 from now on. 409 if it already is revoked."""
    who = principal("admin")
    rt = runtime()
    revoked_at = tokens.revoke_token(rt.store, path.token_id, who.space_id)
    rt.tokens.revoked(path.token_id)  # this process at once, the others within milliseconds (at most a second)
    return {"token_id": path.token_id, "revoked_at": revoked_at.isoformat()}


def _token_dict(info: TokenInfo) -> dict[str, Any]:
    return {"token_id": info.id, "name": info.name, "owner": info.owner, "space_id": info.space_id, "scopes": list(info.scopes),
            "created_at": info.created_at.isoformat(), "expires_at": _iso(info.expires_at),
            "last_used_at": _iso(info.last_used_at), "revoked_at": _iso(info.revoked_at)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
