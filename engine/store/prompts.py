"""Storage of the prompt library: prompts, immutable versions, labels and the audit history.

Search: `prompts.search_text` (key, name, description and the latest text, lower-cased) is
matched with `LIKE '%…%'`, served by a pg_trgm GIN index where the extension exists
(migration 0010). Trigrams, not full-text search: Postgres' text-search parsers split words on
spaces and punctuation, so Chinese or Japanese text (no spaces) becomes one long "word" and a
substring of it is never found, and emoji are dropped as punctuation; a trigram index matches
any substring of three characters or more, and shorter patterns still give the right answer
(by a scan of the space's rows).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from engine.store.sql import prompts as sql


@dataclass(frozen=True)
class PromptRecord:
    """A prompt as stored (without its versions)."""

    id: int
    space_id: str
    key: str
    name: str
    description: str
    tags: tuple[str, ...]
    creator: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    labels: dict[str, int] | None = None  # filled by listings

    @classmethod
    def from_row(cls, row: Any, labels: dict[str, int] | None = None) -> PromptRecord:
        """Build from a row of GET_PROMPT or LIST_PROMPTS."""
        return cls(row.id, row.space_id, row.key, row.name, row.description, tuple(row.tags), row.creator,
                   row.latest_version, row.created_at, row.updated_at, row.deleted_at,
                   labels if labels is not None else getattr(row, "labels", None))


@dataclass(frozen=True)
class PromptVersionRecord:
    """One immutable version."""

    id: int
    version: int
    text: str | None
    messages: list[dict[str, Any]] | None
    variables: list[dict[str, Any]]
    model: dict[str, Any] | None
    message: str
    author: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> PromptVersionRecord:
        """Build from a row of GET_VERSION or INSERT_VERSION."""
        return cls(row.id, row.version, row.text, row.messages, list(row.variables), row.model, row.message,
                   row.author, row.created_at)


@dataclass(frozen=True)
class PromptEvent:
    """One audited change."""

    id: int
    action: str
    actor: str
    token_id: int | None
    version: int | None
    detail: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class NewVersion:
    """What a save stores as a version."""

    text: str | None
    messages: list[dict[str, Any]] | None
    variables: list[dict[str, Any]]
    model: dict[str, Any] | None
    message: str


@dataclass(frozen=True)
class Actor:
    """Who changes a prompt (a token's owner, and the token), for the audit."""

    name: str
    token_id: int | None


class PromptStore:
    """SQL for the prompt library; each write and its audit event in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    @staticmethod
    def _event(conn: Connection, prompt_id: int, action: str, actor: Actor, version: int | None,
               detail: dict[str, Any]) -> None:
        conn.execute(sql.INSERT_EVENT.clause, {"prompt_id": prompt_id, "action": action, "actor": actor.name,
                                               "token_id": actor.token_id, "version": version,
                                               "detail": json.dumps(detail, ensure_ascii=False)})

    @staticmethod
    def _insert_version(conn: Connection, prompt_id: int, number: int, new: NewVersion,
                        author: str) -> PromptVersionRecord:
        row = conn.execute(sql.INSERT_VERSION.clause, {
            "prompt_id": prompt_id, "version": number, "text": new.text,
            "messages": json.dumps(new.messages, ensure_ascii=False) if new.messages is not None else None,
            "variables": json.dumps(new.variables, ensure_ascii=False),
            "model": json.dumps(new.model, ensure_ascii=False) if new.model is not None else None,
            "message": new.message, "author": author}).one()
        return PromptVersionRecord.from_row(row)

    def create(self, space_id: str, key: str, name: str, description: str, tags: list[str], first: NewVersion,
               search: str, actor: Actor, labels: list[str]) -> int | None:
        """Create a prompt with its version 1 (and labels on it); None if the key is taken."""
        with self.engine.begin() as conn:
            prompt_id = conn.execute(sql.INSERT_PROMPT.clause, {
                "space": space_id, "key": key, "name": name, "description": description, "tags": tags,
                "creator": actor.name, "search": search}).scalar()
            if prompt_id is None:
                return None
            self._insert_version(conn, prompt_id, 1, first, actor.name)
            self._event(conn, prompt_id, "create", actor, 1, {"key": key, "name": name, "message": first.message})
            for label in labels:
                conn.execute(sql.SET_LABEL.clause, {"prompt_id": prompt_id, "label": label, "version": 1,
                                                    "actor": actor.name})
                self._event(conn, prompt_id, "label", actor, 1, {"label": label, "from": None, "to": 1})
        return int(prompt_id)

    def add_version(self, prompt_id: int, base: int, new: NewVersion, search: str, actor: Actor,
                    name: str | None = None, description: str | None = None) -> PromptVersionRecord | None:
        """Store the next version if the prompt is still at `base`; None (nothing written) if not."""
        with self.engine.begin() as conn:
            number = conn.execute(sql.ADVANCE_PROMPT.clause, {
                "prompt_id": prompt_id, "base": base, "search": search, "name": name,
                "description": description}).scalar()
            if number is None:
                return None
            record = self._insert_version(conn, prompt_id, number, new, actor.name)
            self._event(conn, prompt_id, "version", actor, number, {"based_on": base, "message": new.message})
        return record

    def current_version(self, prompt_id: int) -> tuple[int, str, datetime]:
        """(latest version, its author, when) of a prompt."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.CURRENT_VERSION.clause, {"prompt_id": prompt_id}).one()
        return int(row.version), str(row.author), row.created_at

    def update_meta(self, prompt_id: int, actor: Actor, name: str | None, description: str | None,
                    tags: list[str] | None) -> None:
        """Change a prompt's name, description or tags (None: unchanged), audited."""
        changed = {k: v for k, v in (("name", name), ("description", description), ("tags", tags)) if v is not None}
        with self.engine.begin() as conn:
            conn.execute(sql.UPDATE_PROMPT_META.clause, {"prompt_id": prompt_id, "name": name,
                                                         "description": description, "tags": tags})
            self._event(conn, prompt_id, "update", actor, None, changed)

    def get(self, space_id: str, key: str) -> PromptRecord | None:
        """A prompt of the space by key (deleted ones too)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_PROMPT.clause, {"space": space_id, "key": key}).first()
        return PromptRecord.from_row(row) if row is not None else None

    def get_by_id(self, space_id: str, prompt_id: int) -> PromptRecord | None:
        """A prompt of the space by id (deleted ones too)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_PROMPT_BY_ID.clause, {"space": space_id, "prompt_id": prompt_id}).first()
        return PromptRecord.from_row(row) if row is not None else None

    def version(self, prompt_id: int, number: int) -> PromptVersionRecord | None:
        """One version of a prompt."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_VERSION.clause, {"prompt_id": prompt_id, "version": number}).first()
        return PromptVersionRecord.from_row(row) if row is not None else None

    def version_by_id(self, version_id: int) -> PromptVersionRecord | None:
        """One version by its row id."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_VERSION_BY_ID.clause, {"version_id": version_id}).first()
        return PromptVersionRecord.from_row(row) if row is not None else None

    def labels(self, prompt_id: int) -> dict[str, int]:
        """label -> version."""
        with self.reads.connect() as conn:
            return {r.label: r.version for r in conn.execute(sql.LABELS.clause, {"prompt_id": prompt_id})}

    def set_label(self, prompt_id: int, label: str, version: int, actor: Actor) -> int | None:
        """Point `label` at `version`, audited; the version it pointed at before (None: new)."""
        with self.engine.begin() as conn:
            previous = conn.execute(sql.SET_LABEL.clause, {"prompt_id": prompt_id, "label": label,
                                                           "version": version, "actor": actor.name}).scalar()
            self._event(conn, prompt_id, "label", actor, version, {"label": label, "from": previous, "to": version})
        return previous

    def page(self, space_id: str, *, before: int | None, limit: int, tag: str | None, creator: str | None,
             label: str | None, pattern: str | None) -> list[PromptRecord]:
        """A page of live prompts, newest first (`before`: the cursor, an id)."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.LIST_PROMPTS.clause, {
                "space": space_id, "before": before, "limit": limit, "tag": tag, "creator": creator,
                "label": label, "pattern": pattern}).all()
        return [PromptRecord.from_row(r) for r in rows]

    def history(self, prompt_id: int, after: int, limit: int) -> list[PromptEvent]:
        """A page of the audit history, oldest first."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.HISTORY.clause, {"prompt_id": prompt_id, "after": after, "limit": limit}).all()
        return [PromptEvent(r.id, r.action, r.actor, r.token_id, r.version, r.detail, r.created_at) for r in rows]

    def delete(self, prompt_id: int, actor: Actor) -> datetime | None:
        """Soft-delete, audited; when (None: it already was)."""
        with self.engine.begin() as conn:
            when = conn.execute(sql.SOFT_DELETE.clause, {"prompt_id": prompt_id}).scalar()
            if when is not None:
                self._event(conn, prompt_id, "delete", actor, None, {})
        return when

    def restore(self, prompt_id: int, window_s: int, actor: Actor) -> bool:
        """Undo a delete of less than `window_s` ago, audited; False if not restorable."""
        with self.engine.begin() as conn:
            done = conn.execute(sql.RESTORE.clause, {"prompt_id": prompt_id, "window_s": window_s}).first()
            if done is not None:
                self._event(conn, prompt_id, "restore", actor, None, {})
        return done is not None

    def referenced(self, space_id: str, keys: list[str]) -> dict[str, tuple[int, frozenset[str]]]:
        """key -> (latest version, labels) of the live prompts of the space among `keys`."""
        if not keys:
            return {}
        with self.reads.connect() as conn:
            rows = conn.execute(sql.REFERENCED.clause, {"space": space_id, "keys": keys}).all()
        return {r.key: (r.latest_version, frozenset(r.labels)) for r in rows}

    def change_counter(self) -> int:
        """The library's change counter (0 before any change)."""
        with self.reads.connect() as conn:
            return int(conn.execute(sql.CHANGE_COUNTER.clause).scalar() or 0)

    def pin(self, space_id: str, node_row_id: int, key: str, version: int | None,
            label: str | None) -> tuple[dict[str, Any] | None, int]:
        """Resolve and pin a node's prompt unless an earlier attempt did: (the pin, change counter)."""
        with self.engine.begin() as conn:
            row = conn.execute(sql.PIN_PROMPT.clause, {"space": space_id, "node_row_id": node_row_id, "key": key,
                                                       "version": version, "label": label}).one()
        return row.prompt, int(row.counter or 0)
