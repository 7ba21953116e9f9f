"""A node's reference to a library prompt (`prompt: {key, label | version}`) and rendering it.

No I/O here: the version comes through `ctx.prompts` (engine/prompt_cache.py), pinned at the
node's first attempt; variables are filled from the node's inputs (engine/prompt_docs.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from engine.errors import PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext
from engine.prompt_docs import fill_variables


class PromptRef(NodeConfig):
    """A library prompt by key, at a label (e.g. `production`, `latest`) or a fixed version."""

    key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    label: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_of(self) -> PromptRef:
        if (self.label is None) == (self.version is None):
            raise ValueError("give the prompt's `label` (e.g. production) or its `version`, one of the two")
        return self


def library_messages(ctx: NodeContext, ref: PromptRef, inputs: dict[str, Any],
                     system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The chat messages of the node's pinned prompt version, rendered with its variables.

    A text version is the user message (after the node's own `system_prompt`, if any); a chat
    version gives its messages as they are. Records `prompt: {key, version}` in `ctx.report`.
    """
    if ctx.prompts is None:
        raise PermanentNodeError(f"Node {ctx.node_id}: no prompt library is available where it runs.",
                                 node_id=ctx.node_id, field="config.prompt")
    found = ctx.prompts.resolve(ref.key, ref.version, ref.label)
    ctx.report["prompt"] = {"key": found.key, "version": found.version}
    values = {**inputs, **fill_variables(ctx.node_id, found.variables, inputs)}
    if found.messages is not None:
        return [{"role": m["role"], "content": ctx.render_text(m["text"], values)} for m in found.messages]
    messages = [{"role": "user", "content": ctx.render_text(found.text or "", values)}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": ctx.render_text(system_prompt, inputs)})
    return messages


def prompt_refs(configs: Mapping[str, NodeConfig]) -> dict[str, PromptRef]:
    """node id -> the library prompt it names (llm and intent nodes)."""
    return {node_id: ref for node_id, config in configs.items()
            if isinstance(ref := getattr(config, "prompt", None), PromptRef)}


def missing_prompt_errors(refs: Mapping[str, PromptRef],
                          known: Mapping[str, tuple[int, frozenset[str]]]) -> list[dict[str, Any]]:
    """Definition errors for references (node id -> ref) the library (key -> (latest, labels)) cannot serve."""
    errors: list[dict[str, Any]] = []
    for node_id, ref in refs.items():
        found = known.get(ref.key)
        if found is None:
            errors.append({"node_id": node_id, "field": "config.prompt.key",
                           "message": f"prompt '{ref.key}' is not in this space's library (GET /v1/prompts)"})
            continue
        latest, labels = found
        if ref.version is not None and ref.version > latest:
            errors.append({"node_id": node_id, "field": "config.prompt.version",
                           "message": f"prompt '{ref.key}' has no version {ref.version} (latest: {latest})"})
        if ref.label is not None and ref.label != "latest" and ref.label not in labels:
            shown = ", ".join(["latest", *sorted(labels)])
            errors.append({"node_id": node_id, "field": "config.prompt.label",
                           "message": f"prompt '{ref.key}' has no label '{ref.label}' (its labels: {shown})"})
    return errors
