"""How nodes use library prompts: resolve a reference once per node, pin it, cache the text.

One statement per node attempt (engine/store/sql/prompts.py PIN_PROMPT) resolves the reference
(a version, a label or `latest`), pins it on the node's row unless an earlier attempt did, and
returns the pin that holds with the library's change counter. The version's content comes from
this process's cache, dropped whenever the counter moved (a prompt changed, in any process):
versions are immutable, so the cache is only a saving, and a label move is seen by the very
next node because resolving is always that one query.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import PermanentNodeError

if TYPE_CHECKING:
    from engine.store.prompts import PromptStore, PromptVersionRecord


@dataclass(frozen=True)
class ResolvedPrompt:
    """The version a node uses."""

    key: str
    version: int
    text: str | None
    messages: list[dict[str, Any]] | None
    variables: list[dict[str, Any]]


class PromptCache:
    """Per-process: version contents by version id, valid for one change counter."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._counter: int | None = None
        self._versions: dict[int, PromptVersionRecord] = {}
        self.loads = 0  # versions read from the database (tests check the cache with it)

    def bind(self, space_id: str | None, node_row_id: int, node_id: str) -> BoundPrompts:
        """The port one node attempt resolves its prompt through."""
        return BoundPrompts(self, space_id or "", node_row_id, node_id)

    def content(self, version_id: int, counter: int) -> PromptVersionRecord | None:
        """A version's content: from the cache unless the library changed since it was filled."""
        with self._lock:
            if counter != self._counter:
                self._versions.clear()
                self._counter = counter
            found = self._versions.get(version_id)
        if found is None:
            found = self.store.version_by_id(version_id)
            if found is not None:
                with self._lock:
                    self.loads += 1
                    self._versions[version_id] = found
        return found


@dataclass(frozen=True)
class BoundPrompts:
    """The prompt port of one node attempt (`NodeContext.prompts`)."""

    cache: PromptCache
    space_id: str
    node_row_id: int
    node_id: str

    def resolve(self, key: str, version: int | None, label: str | None) -> ResolvedPrompt:
        """The version this node uses: pinned at its first attempt, the same on every retry."""
        pin, counter = self.cache.store.pin(self.space_id, self.node_row_id, key, version, label)
        if pin is None:
            which = f"version {version}" if version is not None else f"label '{label}'"
            raise PermanentNodeError(f"Node {self.node_id}: prompt '{key}' has no {which} in this space "
                                     "(deleted, or the label was never set?).", node_id=self.node_id,
                                     field="config.prompt")
        found = self.cache.content(int(pin["version_id"]), counter)
        if found is None:  # versions are never removed but with their prompt's space
            raise PermanentNodeError(f"Node {self.node_id}: prompt '{key}' version {pin['version']} is gone.",
                                     node_id=self.node_id, field="config.prompt")
        return ResolvedPrompt(str(pin["key"]), int(pin["version"]), found.text, found.messages, found.variables)
