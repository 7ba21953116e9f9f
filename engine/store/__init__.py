"""The storage layer: the only code that talks SQL. Alembic (migrations/) owns the schema."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from engine.store.catalog import CatalogStore, TokenRecord, VersionRecord
from engine.store.diagnosis import DiagnosisStore
from engine.store.lifecycle import (
    Claim,
    Decision,
    Delegation,
    Ended,
    LifecycleStore,
    NewItems,
    NewRun,
    Signal,
    StartedNode,
    Submitted,
)
from engine.store.models import Generation, ModelStore
from engine.store.prompts import PromptStore
from engine.store.reruns import NewRerun, RerunStore
from engine.store.traces import TraceStore
from engine.store.unclaimed import UnclaimedStore
from engine.store.views import ViewStore


@dataclass(frozen=True)
class Store:
    """All storage, over one SQLAlchemy engine."""

    catalog: CatalogStore
    lifecycle: LifecycleStore
    views: ViewStore
    models: ModelStore
    prompts: PromptStore
    reruns: RerunStore
    diagnosis: DiagnosisStore
    traces: TraceStore  # read only when traces are exported (engine/telemetry.py)
    unclaimed: UnclaimedStore  # pure nodes' read and commit without a claim (engine/unclaimed.py)

    @classmethod
    def from_engine(cls, engine: Engine) -> Store:
        """Build the store on a pooled engine."""
        return cls(CatalogStore(engine), LifecycleStore(engine), ViewStore(engine), ModelStore(engine),
                   PromptStore(engine), RerunStore(engine), DiagnosisStore(engine), TraceStore(engine),
                   UnclaimedStore(engine))


__all__ = [
    "Claim",
    "Decision",
    "Delegation",
    "Ended",
    "Generation",
    "NewItems",
    "NewRerun",
    "NewRun",
    "Signal",
    "StartedNode",
    "Store",
    "Submitted",
    "TokenRecord",
    "VersionRecord",
]
