"""Node types use the services their context hands them, never a process-wide lookup."""
from __future__ import annotations

from typing import Any

import pytest

from engine.errors import PermanentNodeError
from engine.models.registry import Registry
from engine.nodes.base import NodeContext
from engine.nodes.llm import LlmConfig, LlmNode
from engine.settings import Settings


class EmptyRegistry:
    """A model source whose current registry has no model."""

    def __init__(self) -> None:
        self.asked = 0

    def current(self) -> tuple[Registry, Any]:
        self.asked += 1
        return Registry(None, {}, {}), None


def context(models: Any) -> NodeContext:
    return NodeContext(run_id="r", node_id="ask", attempt=1, timeout_s=5, settings=Settings(), models=models)


def test_an_llm_node_reads_the_registry_its_context_gives() -> None:
    # Given a context whose registry lacks the node's model
    models = EmptyRegistry()
    node = LlmNode(LlmConfig(model="gpt", prompt="hi"))
    # When the node runs, Then it failed against that registry, naming the model
    with pytest.raises(PermanentNodeError, match="model gpt is not in the registry"):
        node.run(context(models), {})
    assert models.asked == 1


def test_an_llm_node_without_a_registry_in_its_context_fails_clearly() -> None:
    with pytest.raises(PermanentNodeError, match="Node ask: no model registry"):
        LlmNode(LlmConfig(model="gpt", prompt="hi")).run(context(None), {})
