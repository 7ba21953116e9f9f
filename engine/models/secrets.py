"""Secrets of model documents: kept out of PostgreSQL, resolved by each process from its own files.

A generation in PostgreSQL is what every process on every machine agrees on; a literal key is
not something they need to agree on through the database. So before a generation is stored,
every secret value written literally in a document (an `api_key`, a custom header's value, a
cloud secret) is replaced by `LOCAL`; a `${VAR}` placeholder stays (it names, it does not hold).
A process that builds its Router reads its own model files and environment (`load_sources`)
and puts its own value back where the stored document says `LOCAL`. A machine whose files lack
that model or that value gets a problem naming the field, not a call with a wrong key.

Pure functions; the caller does the reading.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

LOCAL = "<secret: read from this machine's model file>"
# keys under meta.conn_config (at any depth) whose values are secrets; custom.headers values always are
_SECRET_KEY = re.compile(r"(api_?key|secret|token|password|access_key|credential)", re.IGNORECASE)
# a placeholder with a written default (`${KEY:-sk-...}`) holds a secret: it is not one of these
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}")
_SCHEMES = {"", "bearer", "basic", "token"}  # what may stand beside a placeholder in a header value


def _only_placeholders(value: str) -> bool:
    """True for `${KEY}`, `Bearer ${KEY}`: the value is taken from the environment, none is written."""
    return bool(_PLACEHOLDER.search(value)) and _PLACEHOLDER.sub("", value).strip().lower() in _SCHEMES


def _secret_paths(conn: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths (under conn_config) of the secret strings of a raw conn_config mapping."""
    found: list[tuple[str, ...]] = []
    if not isinstance(conn, dict):
        return found
    for key, value in conn.items():
        here = (*path, str(key))
        in_headers = here[-2:-1] == ("headers",)
        if isinstance(value, dict):
            found += _secret_paths(value, here)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and \
                (in_headers or _SECRET_KEY.search(str(key))):
            found.append(here)
    return found


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _conn(doc: Mapping[str, Any]) -> Any:
    meta = doc.get("meta")
    return meta.get("conn_config") if isinstance(meta, dict) else None


def redact(docs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents as they may be stored: every literal secret replaced by `LOCAL`."""
    stored: dict[str, dict[str, Any]] = {}
    for model_id, doc in docs.items():
        copy = deepcopy(doc)
        conn = _conn(copy)
        for path in _secret_paths(conn):
            value = _get(conn, path)
            if not (isinstance(value, str) and _only_placeholders(value)):
                _set(conn, path, LOCAL)
        stored[model_id] = copy
    return stored


def restore(stored: Mapping[str, Any], local: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """One stored document with this process's own secrets put back where it says `LOCAL`.

    Returns the document and the dotted fields this process has no value for.
    """
    copy = deepcopy(dict(stored))
    conn = _conn(copy)
    missing: list[str] = []
    for path in _secret_paths(conn):
        if _get(conn, path) != LOCAL:
            continue
        value = _get(_conn(local or {}), path)
        if value is None or value == LOCAL:
            missing.append(".".join(("meta", "conn_config", *path)))
        else:
            _set(conn, path, value)
    return copy, missing


def values(doc: Any) -> list[str]:
    """Every secret value of a resolved document's conn_config (to mask them in error texts)."""
    conn = doc.get("meta", {}).get("conn_config") if isinstance(doc, dict) else None
    found = [_get(conn, path) for path in _secret_paths(conn)]
    return [str(v) for v in found if v not in (None, "", LOCAL)]


def header_names(doc: Mapping[str, Any]) -> list[str]:
    """The names of a document's custom headers."""
    headers = _get(_conn(doc), ("custom", "headers"))
    return sorted(str(k) for k in headers) if isinstance(headers, dict) else []
