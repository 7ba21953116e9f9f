"""The model registry: model files and environment models, their generations, calling them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.models.registry import RefreshResult, Registry, current_generation, mask, refresh
from engine.store.models import ModelStore


def list_models(store: ModelStore, folder: Any, operator: bool = False) -> dict[str, Any]:
    """The current registry's models (connection details and the sources' problems for an operator)."""
    registry = Registry.build(current_generation(store, folder))
    return {"models": [registry.describe(m, operator) for m in sorted(registry.models)],
            "generation": registry.generation,
            "refresh_time": registry.created_at.isoformat() if registry.created_at else None,
            "problems": [p.to_dict() for p in registry.problems] if operator else []}


class ModelIds:
    """The current generation's model ids, as GET /v1/models lists them, for checking definitions:
    one cheap query per use; the generation is read and validated again only when it moved on."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._cached: tuple[int, frozenset[str]] | None = None  # (generation, ids)

    def current(self, folder: Path) -> frozenset[str]:
        """The ids of the current generation (on first use, the folder's models are stored first)."""
        cached = self._cached
        if cached is not None and self.store.current_id() == cached[0]:
            return cached[1]
        registry = Registry.build(current_generation(self.store, folder))
        ids = frozenset(registry.models)
        if registry.generation is not None:
            self._cached = (registry.generation, ids)  # one assignment: safe across request threads
        return ids


__all__ = ["ModelIds", "Registry", "RefreshResult", "list_models", "mask", "refresh"]
