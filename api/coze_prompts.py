"""Coze Studio's prompt library routes (`/api/playground_api/*_prompt_resource`, official templates,
and prompts in `/api/plugin_api/library_resource_list`), with its shapes: ids as JSON strings,
`{code, msg, data}` and its prompt error codes (110000001 no permission, 110000005 not found, …)
in the body of a real HTTP status. Bearer auth as every route; the token's space is the space.

A prompt saved here is a library prompt like any other: each save is a new version (Coze's
clients send no base version, so an update is based on the latest), and its key is generated.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, jsonify, make_response
from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody
from api.prompt_models import (
    CozeCodeResponse,
    CozeDeleteRequest,
    CozeLibraryRequest,
    CozeLibraryResponse,
    CozeOfficialRequest,
    CozeOfficialResponse,
    CozePromptIdQuery,
    CozePromptInfoResponse,
    CozeUpsertRequest,
    CozeUpsertResponse,
)
from api.runtime import principal, runtime
from engine import prompt_library as library
from engine.errors import EngineError, Forbidden, InvalidInputs, NotFound, PromptNotFound
from engine.official_prompts import official_prompts
from engine.prompt_docs import VersionDoc, as_lines
from engine.store.prompts import PromptRecord
from engine.tokens import Principal

tag = Tag(name="coze-prompts", description="Coze Studio compatible prompt library routes")
bp = APIBlueprint("coze_prompts", __name__, url_prefix="/api/playground_api", abp_tags=[tag],
                  abp_security=[{"bearer": []}])
library_bp = APIBlueprint("coze_library", __name__, url_prefix="/api/plugin_api", abp_tags=[tag],
                          abp_security=[{"bearer": []}])
_ERRORS: dict[str | int, Any] = {401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody}
# backend/types/errno/prompt.go
INVALID_PARAM, NO_PERMISSION, CREATE_FAILED, GET_FAILED, NOT_FOUND, UPDATE_FAILED, DELETE_FAILED = (
    110000000, 110000001, 110000003, 110000004, 110000005, 110000006, 110000007)
PROMPT_RES_TYPE = 6
_ACTIONS = [{"key": 4, "enable": True}, {"key": 2, "enable": True}, {"key": 1, "enable": False}]  # Edit, Delete, Copy


class CozeFailure(Exception):
    """A request error in Coze's shape."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        self.response: Response = make_response(jsonify({"code": code, "msg": msg}), status)
        super().__init__(msg)


@contextmanager
def _coze_errors(failed_code: int) -> Iterator[None]:
    """Engine errors as Coze's codes: no permission, not found, invalid param, else `failed_code`."""
    try:
        yield
    except Forbidden as exc:
        raise CozeFailure(403, NO_PERMISSION, f"no permission: {exc.message}") from None
    except NotFound as exc:
        raise CozeFailure(404, NOT_FOUND, exc.message) from None
    except InvalidInputs as exc:
        raise CozeFailure(422, INVALID_PARAM, exc.message) from None
    except EngineError as exc:
        if exc.http_status == 401:
            raise
        raise CozeFailure(exc.http_status, failed_code, exc.message) from None


def _caller(space_id: str | int | None = None) -> Principal:
    who = principal()
    if space_id not in (None, "", 0, "0") and str(space_id) != who.space_id:
        raise PromptNotFound(f"Space {space_id} not found.")  # another space: not disclosed
    return who


def _prompt_id(value: str | int | None) -> int | None:
    text = str(value or "0").strip()
    if not text.isdigit() or len(text) > 18:
        raise InvalidInputs(errors=[{"field": "id", "message": "must be a prompt id (digits)"}])
    return int(text) or None


def _resource(prompt: PromptRecord, text: str) -> dict[str, Any]:
    return {"id": str(prompt.id), "space_id": prompt.space_id, "name": prompt.name,
            "description": prompt.description, "prompt_text": text}


def _text_of(prompt: PromptRecord) -> str:
    found = runtime().store.prompts.version(prompt.id, prompt.latest_version)
    assert found is not None
    return found.text if found.text is not None else "".join(as_lines(None, found.messages))


@bp.errorhandler(CozeFailure)
def _failure(exc: CozeFailure) -> Response:
    return exc.response


library_bp.register_error_handler(CozeFailure, _failure)


@bp.post("/upsert_prompt_resource", responses={200: CozeUpsertResponse, **_ERRORS})
def upsert_prompt_resource(body: CozeUpsertRequest) -> Any:
    """Create (no `id`) or update (creator or admin) a prompt resource: each save is a new version."""
    rt = runtime()
    prompt = body.prompt
    with _coze_errors(CREATE_FAILED if not prompt.id else UPDATE_FAILED):
        who = _caller(prompt.space_id)
        prompt_id = _prompt_id(prompt.id)
        doc = VersionDoc(text=prompt.prompt_text, message="saved from a Coze Studio client")
        if prompt_id is None:
            key = f"coze-{secrets.token_hex(5)}"
            created = library.create(rt.store, who, key, prompt.name, prompt.description, [], doc, [])
            return {"code": 0, "msg": "", "data": {"id": created["id"]}}
        found = library.find_by_id(rt.store, who, prompt_id)
        library.require_editor(who, found)
        current = rt.store.prompts.version(found.id, found.latest_version)
        assert current is not None
        if doc.same_content(current.text, current.messages, current.variables, current.model):
            library.update_meta(rt.store, who, found, prompt.name, prompt.description)
        else:
            library.save_version(rt.store, who, found.key, found.latest_version, doc, prompt.name, prompt.description)
        return {"code": 0, "msg": "", "data": {"id": str(found.id)}}


@bp.get("/get_prompt_resource_info", responses={200: CozePromptInfoResponse, **_ERRORS})
def get_prompt_resource_info(query: CozePromptIdQuery) -> Any:
    """A prompt resource with its latest text."""
    with _coze_errors(GET_FAILED):
        found = library.find_by_id(runtime().store, _caller(), int(query.prompt_resource_id))
        return {"code": 0, "msg": "", "data": _resource(found, _text_of(found))}


@bp.post("/delete_prompt_resource", responses={200: CozeCodeResponse, **_ERRORS})
def delete_prompt_resource(body: CozeDeleteRequest) -> Any:
    """Delete a prompt resource (creator or admin); here a soft delete an admin may undo."""
    rt = runtime()
    with _coze_errors(DELETE_FAILED):
        who = _caller()
        prompt_id = _prompt_id(body.prompt_resource_id)
        if prompt_id is None:
            raise InvalidInputs(errors=[{"field": "prompt_resource_id", "message": "give a prompt id"}])
        found = library.find_by_id(rt.store, who, prompt_id)
        library.delete(rt.store, who, found.key, rt.settings.prompt_restore_window_s)
        return {"code": 0, "msg": ""}


@bp.post("/get_official_prompt_list", responses={200: CozeOfficialResponse, **_ERRORS})
def get_official_prompt_list(body: CozeOfficialRequest) -> Any:
    """The official templates whose name or text holds `keyword` (case-insensitive)."""
    _caller()
    return {"code": 0, "msg": "", "data": [{"id": str(p.id), "space_id": "0", "name": p.name,
                                            "description": p.description, "prompt_text": p.prompt_text}
                                           for p in official_prompts(body.keyword)]}


@library_bp.post("/library_resource_list", responses={200: CozeLibraryResponse, **_ERRORS})
def library_resource_list(body: CozeLibraryRequest) -> Any:
    """The space's library resources; prompts (res_type 6) are the ones served here."""
    with _coze_errors(GET_FAILED):
        who = _caller(body.space_id)
        if body.res_type_filter and PROMPT_RES_TYPE not in body.res_type_filter:
            return {"code": 0, "msg": "", "resource_list": [], "cursor": "", "has_more": False}
        query = body.name or (" ".join(body.search_keys) if body.search_keys else None)
        page = library.list_page(runtime().store, who, cursor=body.cursor, limit=body.size, q=query, tag=None,
                                 creator=who.owner if body.user_filter == 1 else None, label=None)
        items = [{"res_id": p["id"], "res_type": PROMPT_RES_TYPE, "res_sub_type": 0, "name": p["name"],
                  "desc": p["description"], "icon": "", "creator_id": p["creator"], "creator_name": p["creator"],
                  "publish_status": 2, "biz_res_status": 0, "edit_time": _epoch_s(p["updated_at"]),
                  "space_id": who.space_id, "actions": _ACTIONS, "detail_disable": False, "del_flag": False}
                 for p in page["prompts"]]
        return {"code": 0, "msg": "", "resource_list": items, "cursor": page["next_cursor"] or "",
                "has_more": page["next_cursor"] is not None}


def _epoch_s(iso: str) -> str:
    from datetime import datetime

    return str(int(datetime.fromisoformat(iso).timestamp()))
