"""Compiled workflow versions, cached per process: versions are immutable, so each process
compiles one at most once."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from engine.compiler import CompiledWorkflow, compile_workflow

if TYPE_CHECKING:
    from engine.store.catalog import CatalogStore


class VersionCache:
    """version row id → CompiledWorkflow."""

    def __init__(self, catalog: CatalogStore, max_entries: int = 512) -> None:
        self.catalog = catalog
        self.max_entries = max_entries
        self._compiled: dict[int, CompiledWorkflow] = {}
        self._lock = threading.Lock()

    def get(self, version_id: int, body: str = "") -> CompiledWorkflow:
        """The compiled graph of a version (or of the inline body at `body` in it), loading and
        compiling the version on first use."""
        found = self._compiled.get(version_id)
        if found is None:
            found = compile_workflow(self.catalog.get_version_by_id(version_id).definition)
            self.put(version_id, found)
        return found.body_at(body) if body else found

    def put(self, version_id: int, compiled: CompiledWorkflow) -> None:
        """Remember a compiled version (the API does this when it stores one)."""
        with self._lock:
            if len(self._compiled) >= self.max_entries:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[version_id] = compiled
