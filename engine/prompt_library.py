"""The prompt library's rules: who may do what, optimistic locking, labels, diff, history.

Every token of a space reads and uses its prompts; writing needs the `manage` scope, and editing,
labelling or deleting a prompt also needs to be its creator (the token's owner) or the space's
admin. Another space's prompt is never found (404, not 403: its existence is not disclosed).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engine.errors import Forbidden, InvalidInputs, InvalidTransition, PromptConflict, PromptNotFound, PromptVersionNotFound
from engine.prompt_docs import (
    LATEST,
    PRODUCTION,
    VersionDoc,
    changed_fields,
    check_key,
    check_label,
    search_pattern,
    search_text,
    unified_diff,
)
from engine.store import Store
from engine.store.prompts import Actor, NewVersion, PromptRecord, PromptVersionRecord
from engine.tokens import Principal

PAGE_MAX = 100


def _actor(who: Principal) -> Actor:
    return Actor(who.owner, who.token_id)


def _new(doc: VersionDoc) -> NewVersion:
    stored = doc.stored()
    return NewVersion(stored["text"], stored["messages"], stored["variables"], stored["model"], stored["message"])


def find(store: Store, who: Principal, key: str, *, deleted: bool = False) -> PromptRecord:
    """A live prompt of the caller's space (with `deleted`, a deleted one), else 404."""
    found = store.prompts.get(who.space_id, key)
    if found is None or (found.deleted_at is not None) != deleted:
        raise PromptNotFound(f"Prompt '{key}' not found" + (" among deleted prompts." if deleted else "."))
    return found


def find_by_id(store: Store, who: Principal, prompt_id: int) -> PromptRecord:
    """A live prompt of the caller's space by id (Coze's routes), else 404."""
    found = store.prompts.get_by_id(who.space_id, prompt_id)
    if found is None or found.deleted_at is not None:
        raise PromptNotFound(f"Prompt {prompt_id} not found.")
    return found


def require_editor(who: Principal, prompt: PromptRecord) -> None:
    """Refuse (403) unless the caller may change the prompt: `manage`, and its creator or an admin."""
    who.require("manage")
    if not who.is_admin and who.owner != prompt.creator:
        raise Forbidden(f"Only the creator of prompt '{prompt.key}' ({prompt.creator}) or an admin of the space "
                        "may change it.")


def create(store: Store, who: Principal, key: str, name: str | None, description: str, tags: list[str],
           version: VersionDoc, labels: list[str]) -> dict[str, Any]:
    """Create a prompt at version 1 (the caller is its creator); 409 if the key is taken."""
    who.require("manage")
    check_key(key)
    for label in labels:
        check_label(label)
    title = name or key
    stored = version.stored()
    prompt_id = store.prompts.create(who.space_id, key, title, description, list(dict.fromkeys(tags)), _new(version),
                                     search_text(key, title, description, stored["text"], stored["messages"]),
                                     _actor(who), list(dict.fromkeys(labels)))
    if prompt_id is None:
        taken = store.prompts.get(who.space_id, key)
        gone = " (it is deleted: an admin may restore it)" if taken and taken.deleted_at else ""
        raise InvalidTransition(f"Prompt key '{key}' is already taken in this space{gone}.")
    return describe(store, find(store, who, key), 1)


def resolve_number(store: Store, prompt: PromptRecord, version: int | None, label: str | None) -> int:
    """The version number a `version` or `label` names (neither: `production`, else `latest`)."""
    if version is not None:
        if not 1 <= version <= prompt.latest_version:
            raise PromptVersionNotFound(f"Prompt '{prompt.key}' has no version {version} "
                                        f"(its versions are 1-{prompt.latest_version}).")
        return version
    labels = store.prompts.labels(prompt.id)
    if label is None:
        return labels.get(PRODUCTION, prompt.latest_version)
    if label == LATEST:
        return prompt.latest_version
    if label not in labels:
        raise PromptVersionNotFound(f"Prompt '{prompt.key}' has no label '{label}' (its labels: "
                                    f"{', '.join([LATEST, *sorted(labels)])}).")
    return labels[label]


def get(store: Store, who: Principal, key: str, version: int | None = None, label: str | None = None) -> dict[str, Any]:
    """A prompt at a version or label."""
    prompt = find(store, who, key)
    return describe(store, prompt, resolve_number(store, prompt, version, label))


def describe(store: Store, prompt: PromptRecord, number: int) -> dict[str, Any]:
    """A prompt with one of its versions and its labels, as the API shows it."""
    found = store.prompts.version(prompt.id, number)
    if found is None:
        raise PromptVersionNotFound(f"Prompt '{prompt.key}' has no version {number}.")
    return {**summary(prompt, {LATEST: prompt.latest_version, **store.prompts.labels(prompt.id)}),
            "version": version_dict(found)}


def summary(prompt: PromptRecord, labels: dict[str, int] | None = None) -> dict[str, Any]:
    """A prompt without its content."""
    return {"id": str(prompt.id), "key": prompt.key, "name": prompt.name, "description": prompt.description,
            "tags": list(prompt.tags), "creator": prompt.creator, "latest_version": prompt.latest_version,
            "labels": labels if labels is not None else {LATEST: prompt.latest_version, **(prompt.labels or {})},
            "created_at": prompt.created_at.isoformat(), "updated_at": prompt.updated_at.isoformat(),
            "deleted_at": _iso(prompt.deleted_at)}


def version_dict(found: PromptVersionRecord) -> dict[str, Any]:
    """One version as the API shows it."""
    return {"number": found.version, "text": found.text, "messages": found.messages, "variables": found.variables,
            "model": found.model, "message": found.message, "author": found.author,
            "created_at": found.created_at.isoformat()}


def list_page(store: Store, who: Principal, *, cursor: str | None, limit: int, q: str | None, tag: str | None,
              creator: str | None, label: str | None) -> dict[str, Any]:
    """A page of the space's prompts, newest first, and the cursor of the next (None: the last page)."""
    before = _cursor(cursor)
    page = store.prompts.page(who.space_id, before=before, limit=limit + 1, tag=tag, creator=creator, label=label,
                              pattern=search_pattern(q))
    more = len(page) > limit
    page = page[:limit]
    return {"prompts": [summary(p) for p in page], "next_cursor": str(page[-1].id) if more and page else None}


def save_version(store: Store, who: Principal, key: str, base_version: int, doc: VersionDoc,
                 name: str | None = None, description: str | None = None) -> dict[str, Any]:
    """Store a new version based on `base_version`; 409 naming the current one if someone saved since."""
    prompt = find(store, who, key)
    require_editor(who, prompt)
    stored = doc.stored()
    text = search_text(prompt.key, name or prompt.name, prompt.description if description is None else description,
                       stored["text"], stored["messages"])
    saved = store.prompts.add_version(prompt.id, base_version, _new(doc), text, _actor(who), name, description)
    if saved is None:
        current, author, when = store.prompts.current_version(prompt.id)
        raise PromptConflict(f"Prompt '{key}' is at version {current} (saved by {author} at "
                             f"{when.isoformat(timespec='seconds')}), not {base_version}: fetch it, merge, and save "
                             f"again with base_version {current}.", current_version=current, author=author,
                             base_version=base_version)
    return describe(store, find(store, who, key), saved.version)


def update_meta(store: Store, who: Principal, prompt: PromptRecord, name: str | None, description: str | None,
                tags: list[str] | None = None) -> None:
    """Change a prompt's name, description or tags (creator or admin), audited; no new version."""
    require_editor(who, prompt)
    store.prompts.update_meta(prompt.id, _actor(who), name, description, tags)


def move_label(store: Store, who: Principal, key: str, label: str, version: int) -> dict[str, Any]:
    """Point a label at a version (a rollback is moving `production` back)."""
    check_label(label)
    prompt = find(store, who, key)
    require_editor(who, prompt)
    resolve_number(store, prompt, version, None)
    previous = store.prompts.set_label(prompt.id, label, version, _actor(who))
    return {"key": key, "label": label, "version": version, "previous_version": previous}


def diff(store: Store, who: Principal, key: str, old: int, new: int) -> dict[str, Any]:
    """The unified diff between two versions' text or messages, and which other fields changed."""
    prompt = find(store, who, key)
    versions = []
    for number in (old, new):
        found = store.prompts.version(prompt.id, resolve_number(store, prompt, number, None))
        assert found is not None
        versions.append(found)
    a, b = versions
    return {"key": key, "from": old, "to": new,
            "diff": unified_diff(key, (a.version, a.text, a.messages), (b.version, b.text, b.messages)),
            "changed": changed_fields(version_dict(a), version_dict(b))}


def history(store: Store, who: Principal, key: str, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of the audit history (oldest first): who, when, what. Deleted prompts' too."""
    prompt = store.prompts.get(who.space_id, key)
    if prompt is None:
        raise PromptNotFound(f"Prompt '{key}' not found.")
    page = store.prompts.history(prompt.id, _cursor(cursor) or 0, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {"key": key, "events": [{"id": e.id, "action": e.action, "actor": e.actor, "token_id": e.token_id,
                                    "version": e.version, "detail": e.detail, "at": e.created_at.isoformat()}
                                   for e in page],
            "next_cursor": str(page[-1].id) if more and page else None}


def delete(store: Store, who: Principal, key: str, window_s: int) -> dict[str, Any]:
    """Soft-delete: hidden from everyone, restorable by an admin for the restore window."""
    prompt = find(store, who, key)
    require_editor(who, prompt)
    when = store.prompts.delete(prompt.id, _actor(who))
    if when is None:  # deleted by someone else meanwhile
        raise PromptNotFound(f"Prompt '{key}' not found.")
    return {"key": key, "deleted_at": when.isoformat(),
            "restorable_until": (when + timedelta(seconds=window_s)).isoformat()}


def restore(store: Store, who: Principal, key: str, window_s: int) -> dict[str, Any]:
    """Bring back a deleted prompt (admin scope) within the restore window."""
    who.require("admin")
    prompt = find(store, who, key, deleted=True)
    if not store.prompts.restore(prompt.id, window_s, _actor(who)):
        raise InvalidTransition(f"Prompt '{key}' was deleted more than {window_s} s ago and can no longer be restored.")
    return describe(store, find(store, who, key), prompt.latest_version)


def _cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInputs(errors=[{"field": "cursor", "message": "is not a cursor this listing gave"}])
    return int(cursor)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
