"""The model registry: model files and environment models, their generations, calling them."""
from __future__ import annotations

from typing import Any

from engine.models.registry import Registry, RefreshResult, current_generation, mask, refresh
from engine.store.models import ModelStore


def list_models(store: ModelStore, folder: Any, operator: bool = False) -> dict[str, Any]:
    """The current registry's models (connection details and the sources' problems for an operator)."""
    registry = Registry.build(current_generation(store, folder))
    return {"models": [registry.describe(m, operator) for m in sorted(registry.models)],
            "generation": registry.generation,
            "refresh_time": registry.created_at.isoformat() if registry.created_at else None,
            "problems": [p.to_dict() for p in registry.problems] if operator else []}


__all__ = ["Registry", "RefreshResult", "list_models", "mask", "refresh"]
