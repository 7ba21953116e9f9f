"""The model registry: one generation of model documents, resolved for this process.

Pure except `refresh` and `current_generation`, which read the folder and the store. A
generation lives in Postgres (engine/store/models.py) so that every process, on every
machine, sees the same one; no secret is stored in it (engine/models/secrets.py): each process
resolves `${VAR}` placeholders with its own environment and literal keys from its own files.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.models import secrets as secret_fields
from engine.models.files import ModelDoc, Problem, load_sources, parse_doc
from engine.store.models import Generation, ModelStore

_KEYISH = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def mask(secret: str | None) -> str | None:
    """`sk-abcdef…wxyz` → `sk-a***wxyz`; short secrets are fully hidden."""
    if not secret:
        return None
    return f"{secret[:4]}***{secret[-4:]}" if len(secret) >= 12 else "***"


def mask_keys(text: str) -> str:
    """The text with every key-shaped string (`sk-…`) masked as `mask` does."""
    if "sk-" not in text:  # every log line passes here: the substring test is ~50x cheaper than the regex
        return text
    return _KEYISH.sub(lambda m: mask(m.group(0)) or "***", text)


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
    def build(cls, generation: Generation | None, env: Mapping[str, str] | None = None,
              local: Mapping[str, dict[str, Any]] | None = None) -> Registry:
        """Resolve and validate a stored generation (a document now invalid becomes a problem).

        `local`: this process's own reading of the model sources, whose literal secrets fill
        the stored documents' blanks (a process that only lists models passes none).
        """
        env = dict(os.environ) if env is None else env
        if generation is None:
            return cls(None, {}, {})
        models: dict[str, ModelDoc] = {}
        problems = [Problem(p["source"], p.get("field"), p["message"]) for p in generation.problems]
        for model_id, raw in generation.models.items():
            source = raw.get("_source", model_id)
            if local is not None:
                raw, missing = secret_fields.restore(raw, local.get(model_id))
                if missing:
                    problems.extend(Problem(source, f, "the value is written in the model file, and this machine's "
                                                       "model sources have none for it (copy the file here, or take "
                                                       "it from ${VAR})") for f in missing)
                    continue
            doc, found = parse_doc({k: v for k, v in raw.items() if k != "_source"}, source, env)
            problems.extend(found)
            if doc is not None:
                models[model_id] = doc
        secrets = frozenset(s for d in models.values() for s in secret_fields.values(d.model_dump()) if len(s) >= 3)
        return cls(generation.id, generation.models, models, tuple(problems), generation.created_at, secrets)

    def scrub(self, message: str) -> str:
        """The message with every secret value the registry knows (keys, header values, cloud
        secrets) replaced by `***`, and anything else key-shaped masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        return mask_keys(message)

    def describe(self, model_id: str, operator: bool = False) -> dict[str, Any]:
        """The view of one model: what an author needs; with `operator`, also where it is reached
        and read from. Never a key, a part of one, or a header value."""
        doc = self.models[model_id]
        view: dict[str, Any] = {
            "id": doc.id, "name": doc.name, "icon_uri": doc.icon_uri or doc.icon_url,
            "description": doc.description.model_dump() if doc.description else None,
            "protocol": doc.meta.protocol, "status": doc.status,
            "capability": doc.meta.capability.model_dump(),
            "default_parameters": doc.default_params(),
            "pricing": doc.pricing.view() if doc.pricing is not None else None,
        }
        if operator:
            conn = doc.meta.conn_config
            raw = self.raw.get(model_id) or {}
            raw_key = (raw.get("meta") or {}).get("conn_config", {}).get("api_key")
            env_var = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}", str(raw_key or ""))
            view["conn_config"] = {"base_url": conn.base_url, "model": conn.model, "timeout": conn.timeout,
                                   "api_key_set": bool(conn.api_key), "api_key_env": env_var.group(1) if env_var else None,
                                   "header_names": secret_fields.header_names(raw)}
            view["source"] = raw.get("_source")
        return view


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
    docs = secret_fields.redact(docs)
    # a change of a literal key alone is not seen here (no key is stored to compare with); every
    # process still reads its files anew for the new generation
    added, updated, removed = diff(old, docs)
    stored = store.insert(docs, [p.to_dict() for p in problems])
    assert stored is not None
    return RefreshResult(stored.id, len(docs), added, updated, removed, stored.problems, stored.created_at)


def current_generation(store: ModelStore, folder: Path) -> Generation | None:
    """The stored generation; on first use (none stored) the files are read and stored first."""
    found = store.current()
    if found is None:
        docs, problems = load_sources(folder)
        store.insert(secret_fields.redact(docs), [p.to_dict() for p in problems], only_if_none=True)
        found = store.current()
    return found


__all__ = ["Registry", "RefreshResult", "current_generation", "diff", "mask", "mask_keys", "refresh"]
