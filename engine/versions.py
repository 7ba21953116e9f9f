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
        # (space, workflow, version or None for the latest) -> (version row id, version number)
        self._refs: dict[tuple[str, str, int | None], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def get(self, version_id: int, body: str = "") -> CompiledWorkflow:
        """The compiled graph of a version (or of the inline body at `body` in it), loading and
        compiling the version on first use."""
        found = self._compiled.get(version_id)
        if found is None:
            found = compile_workflow(self.catalog.get_version_by_id(version_id).definition)
            self.put(version_id, found)
        return found.body_at(body) if body else found

    def resolve(self, space_id: str, workflow_id: str, version: int | None) -> tuple[int, int, CompiledWorkflow]:
        """(version row id, version number, compiled graph) of a workflow of the space at `version`
        (None: what this process last saw as the latest; a submit checks it still is, INSERT_RUN's
        `latest`). Read from the database only the first time (WorkflowNotFound / VersionNotFound)."""
        key = (space_id, workflow_id, version)
        found = self._refs.get(key)
        if found is None:
            record = self.catalog.get_version(workflow_id, space_id, version)
            if record.id not in self._compiled:
                self.put(record.id, compile_workflow(record.definition))
            found = (record.id, record.version)
            with self._lock:
                if len(self._refs) >= self.max_entries:
                    self._refs.pop(next(iter(self._refs)))
                self._refs[key] = found
        return found[0], found[1], self.get(found[0])

    def forget_latest(self, space_id: str, workflow_id: str) -> None:
        """Drop what this process took for the workflow's latest version (a newer one exists)."""
        with self._lock:
            self._refs.pop((space_id, workflow_id, None), None)

    def put(self, version_id: int, compiled: CompiledWorkflow) -> None:
        """Remember a compiled version (the API does this when it stores one)."""
        with self._lock:
            if len(self._compiled) >= self.max_entries:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[version_id] = compiled
