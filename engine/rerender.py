"""What a node was given, rendered again: its inputs, its config once templated and, for an llm
node, the chat messages of its pinned prompt version. No I/O.

Nothing of this is stored when a node runs (the hot path writes outputs only): a reader (the
dashboard's node inspector) hands in what the run recorded — the run inputs, the upstream nodes'
outputs and the pinned prompt version — and gets the same rendering the executor did, through the
same code (`CompiledNode.render`, the llm node's `chat_messages`). Templates are deterministic
over those, so the result is what the attempt saw, unless a rerun overrode the node's inputs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.compiler import CompiledNode
from engine.errors import EngineError, PermanentNodeError
from engine.nodes.base import NodeContext
from engine.nodes.llm import LlmConfig, chat_messages
from engine.prompt_cache import ResolvedPrompt
from engine.settings import Settings
from engine.templates import render_text


@dataclass(frozen=True)
class Rendered:
    """A node's inputs and config as rendered for its attempt; `messages` for an llm node."""

    inputs: dict[str, Any] | None
    config: dict[str, Any] | None
    messages: list[dict[str, Any]] | None
    problem: str | None  # why it could not be rendered (an upstream output missing, …)


@dataclass(frozen=True)
class _Pinned:
    """The prompt port of a re-render: the version the attempt pinned, whatever the label says now."""

    pinned: ResolvedPrompt | None

    def resolve(self, key: str, version: int | None, label: str | None) -> ResolvedPrompt:
        if self.pinned is None or self.pinned.key != key:
            raise PermanentNodeError(f"prompt '{key}' was not pinned by this node (it never started?)")
        return self.pinned


def rerender(node: CompiledNode, run_inputs: dict[str, Any] | None, dep_outputs: Mapping[str, Any],
             settings: Settings, pinned: ResolvedPrompt | None = None) -> Rendered:
    """Render `node` from the recorded run inputs and its upstream nodes' outputs (`pinned`: its prompt version)."""
    context = node.make_context(run_inputs, dict(dep_outputs))
    try:
        config, inputs = node.render(context)
    except EngineError as exc:
        return Rendered(None, None, None, exc.message)
    shown_config = config.model_dump(mode="json") if node.config_template is not None else None
    if not isinstance(config, LlmConfig):
        return Rendered(inputs, shown_config, None, None)
    ctx = NodeContext(run_id="", node_id=node.id, attempt=0, timeout_s=0.0, settings=settings,
                      render_text=lambda source, extra: render_text(source, {**context, **extra}),
                      prompts=_Pinned(pinned))
    try:
        messages = chat_messages(ctx, config, inputs)
    except EngineError as exc:
        return Rendered(inputs, shown_config, None, exc.message)
    return Rendered(inputs, shown_config, messages, None)
