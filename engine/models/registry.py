"""The model registry: one generation of model documents, resolved for this process.

Pure except `refresh` and `current_registry`, which read the folder and the store. A
generation lives in Postgres (engine/store/models.py) so that every process, on every
machine, sees the same one; each resolves `${VAR}` placeholders with its own environment.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from engine.models.files import ModelDoc, Problem, load_sources, parse_doc
from engine.store.models import Generation, ModelStore

_KEYISH = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def mask(secret: str | None) -> str | None:
    """`sk-abcdef…wxyz` → `sk-a***wxyz`; short secrets are fully hidden."""
    if not secret:
        return None
    return f"{secret[:4]}***{secret[-4:]}" if len(secret) >= 12 else "***"


@dataclass(frozen=True)
class Registry:
    """The models of one generation, validated with this process's environment."""

    generation: int | None
    raw: Mapping[str, dict[str, Any]]
    models: Mapping[str, ModelDoc]
    problems: tuple[Problem, ...] = ()
    created_at: datetime | None = None
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def build(cls, generation: Generation | None, env: Mapping[str, str] | None = None) -> "Registry":
        """Resolve and validate a stored generation (a document now invalid becomes a problem)."""
        env = dict(os.environ) if env is None else env
        if generation is None:
            return cls(None, {}, {})
        models: dict[str, ModelDoc] = {}
        problems = [Problem(p["source"], p.get("field"), p["message"]) for p in generation.problems]
        for model_id, raw in generation.models.items():
            doc, found = parse_doc({k: v for k, v in raw.items() if k != "_source"}, raw.get("_source", model_id), env)
            problems.extend(found)
            if doc is not None:
                models[model_id] = doc
        secrets = frozenset(s for d in models.values() for s in _secrets_of(d) if s)
        return cls(generation.id, generation.models, models, tuple(problems), generation.created_at, secrets)

    def scrub(self, message: str) -> str:
        """The message with every known key (and anything key-shaped) masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, mask(secret) or "***")
        return _KEYISH.sub(lambda m: mask(m.group(0)) or "***", message)

    def describe(self, model_id: str) -> dict[str, Any]:
        """The public view of one model: everything but secrets (keys masked)."""
        doc = self.models[model_id]
        conn = doc.meta.conn_config
        raw_key = ((self.raw.get(model_id) or {}).get("meta") or {}).get("conn_config", {}).get("api_key")
        env_var = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}", raw_key or "")
        return {
            "id": doc.id, "name": doc.name, "icon_uri": doc.icon_uri or doc.icon_url,
            "description": doc.description.model_dump() if doc.description else None,
            "protocol": doc.meta.protocol, "status": doc.status,
            "capability": doc.meta.capability.model_dump(),
            "default_parameters": doc.default_params(),
            "conn_config": {"base_url": conn.base_url, "model": conn.model, "timeout": conn.timeout,
                            "api_key": mask(conn.api_key),
                            "api_key_env": env_var.group(1) if env_var else None},
            "source": self.raw.get(model_id, {}).get("_source"),
        }


def _secrets_of(doc: ModelDoc) -> list[str | None]:
    conn = doc.meta.conn_config
    extras = [conn.claude or {}, conn.ark or {}, conn.gemini or {}]
    return [conn.api_key, *(str(e.get(k)) for e in extras for k in ("secret_access_key", "secret_key", "session_token")
                            if e.get(k))]


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh changed."""

    generation: int
    model_count: int
    new_models: list[str]
    updated_models: list[str]
    removed_models: list[str]
    problems: list[dict[str, Any]]
    refresh_time: datetime

    def to_dict(self) -> dict[str, Any]:
        """The `data` of POST /v1/models/refresh."""
        return {"model_count": self.model_count, "new_models": self.new_models,
                "updated_models": self.updated_models, "removed_models": self.removed_models,
                "refresh_time": self.refresh_time.isoformat(), "generation": self.generation,
                "problems": self.problems}


def diff(old: Mapping[str, dict[str, Any]], new: Mapping[str, dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """(new, updated, removed) model ids between two generations' documents."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    updated = sorted(k for k in set(new) & set(old) if new[k] != old[k])
    return added, updated, removed


def refresh(store: ModelStore, folder: Path, env: Mapping[str, str] | None = None) -> RefreshResult:
    """Re-read the model folder and the environment models; store them as the new generation."""
    env = dict(os.environ) if env is None else env
    docs, problems = load_sources(folder, env)
    current = store.current()
    old = current.models if current else {}
    added, updated, removed = diff(old, docs)
    stored = store.insert(docs, [p.to_dict() for p in problems])
    assert stored is not None
    return RefreshResult(stored.id, len(docs), added, updated, removed, stored.problems, stored.created_at)


def current_generation(store: ModelStore, folder: Path) -> Generation | None:
    """The stored generation; on first use (none stored) the files are read and stored first."""
    found = store.current()
    if found is None:
        docs, problems = load_sources(folder)
        store.insert(docs, [p.to_dict() for p in problems], only_if_none=True)
        found = store.current()
    return found


__all__ = ["Registry", "RefreshResult", "current_generation", "diff", "mask", "refresh"]
