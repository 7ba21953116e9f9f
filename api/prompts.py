"""Prompt library routes `/v1/prompts…`: create, get, list and search, versions, labels, diff,
history, delete and restore. Every token of the space reads; writes follow engine/prompt_library.py."""
from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.models import ErrorBody
from api.prompt_models import (
    PromptCreate,
    PromptDeleted,
    PromptDiff,
    PromptDiffQuery,
    PromptGetQuery,
    PromptHistory,
    PromptHistoryQuery,
    PromptLabelMove,
    PromptLabelMoved,
    PromptLabelPath,
    PromptList,
    PromptListQuery,
    PromptOut,
    PromptPath,
    PromptVersionCreate,
)
from api.runtime import principal, runtime
from engine import prompt_library as library

tag = Tag(name="prompts", description="The space's prompt library: versions, labels, history")
bp = APIBlueprint("prompts", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])
_READ: dict[str | int, Any] = {401: ErrorBody, 404: ErrorBody, 422: ErrorBody}
_WRITE: dict[str | int, Any] = {**_READ, 403: ErrorBody, 409: ErrorBody}


@bp.post("/prompts", responses={201: PromptOut, **_WRITE})
def create_prompt(body: PromptCreate) -> Any:
    """Create a prompt at version 1 (manage scope); the caller's owner becomes its creator. 409 if the key is taken."""
    who = principal("manage")
    return library.create(runtime().store, who, body.key, body.name, body.description, body.tags, body.version,
                          body.labels), 201


@bp.get("/prompts", responses={200: PromptList, **_READ})
def list_prompts(query: PromptListQuery) -> Any:
    """List the space's prompts, newest first; `q` finds a substring (CJK and emoji too) of key, name,
    description or latest text; filters by tag, creator and label."""
    who = principal()
    return library.list_page(runtime().store, who, cursor=query.cursor, limit=query.limit, q=query.q, tag=query.tag,
                             creator=query.creator, label=query.label)


@bp.get("/prompts/<key>", responses={200: PromptOut, **_READ})
def get_prompt(path: PromptPath, query: PromptGetQuery) -> Any:
    """A prompt at `version` or `label` (default: `production`, else `latest`)."""
    who = principal()
    return library.get(runtime().store, who, path.key, query.version, query.label)


@bp.post("/prompts/<key>/versions", responses={201: PromptOut, **_WRITE})
def create_version(path: PromptPath, body: PromptVersionCreate) -> Any:
    """Save a new immutable version based on `base_version` (creator or admin).

    409 when someone saved since, nothing written: its body adds `current_version`, `author` and
    `base_version` to `code` and `msg`."""
    who = principal("manage")
    return library.save_version(runtime().store, who, path.key, body.base_version, body.doc(), body.name,
                                body.description), 201


@bp.put("/prompts/<key>/labels/<label>", responses={200: PromptLabelMoved, **_WRITE})
def move_label(path: PromptLabelPath, body: PromptLabelMove) -> Any:
    """Point a label at a version (creator or admin); rollback is moving `production` back. `latest` moves by itself."""
    who = principal("manage")
    return library.move_label(runtime().store, who, path.key, path.label, body.version)


@bp.get("/prompts/<key>/diff", responses={200: PromptDiff, **_READ})
def diff_versions(path: PromptPath, query: PromptDiffQuery) -> Any:
    """The unified diff between two versions' text or messages."""
    who = principal()
    return library.diff(runtime().store, who, path.key, query.from_, query.to)


@bp.get("/prompts/<key>/history", responses={200: PromptHistory, **_READ})
def prompt_history(path: PromptPath, query: PromptHistoryQuery) -> Any:
    """Every change of the prompt, oldest first: who, when and what (create, version, label, delete, restore)."""
    who = principal()
    return library.history(runtime().store, who, path.key, query.cursor, query.limit)


@bp.delete("/prompts/<key>", responses={200: PromptDeleted, **_WRITE})
def delete_prompt(path: PromptPath) -> Any:
    """Soft-delete a prompt (creator or admin): gone for everyone, restorable by an admin for a while."""
    rt = runtime()
    who = principal("manage")
    return library.delete(rt.store, who, path.key, rt.settings.prompt_restore_window_s)


@bp.post("/prompts/<key>/restore", responses={200: PromptOut, **_WRITE})
def restore_prompt(path: PromptPath) -> Any:
    """Restore a deleted prompt (admin scope) within RELAYFLOW_PROMPT_RESTORE_WINDOW_S of its deletion."""
    rt = runtime()
    who = principal("admin")
    return library.restore(rt.store, who, path.key, rt.settings.prompt_restore_window_s)
