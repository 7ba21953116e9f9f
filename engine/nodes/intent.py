"""The `intent` node (Coze Studio's IntentDetector): an LLM classifies a query into listed intents.

Numbering follows Coze: the listed intents are `classification_id` 1..n and 0 is "other";
intent i (1-based) leaves on port `branch_<i-1>`, 0 (or any id the list lacks) on `default`.
The model is asked through the llm node's `ask_model`; parsing its answer is pure.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from engine.errors import NodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType
from engine.nodes.llm import ModelChoice, ask_model
from engine.nodes.prompt_ref import PromptRef, library_messages

DEFAULT_PORT = "default"
_INTEGER = re.compile(r"-?\d+")

# Coze's prompts (`nodes/intentdetector`), with the list rendered the same way.
_PROMPT = """# Role
You are an intention classification expert, good at being able to judge which classification
the user's input belongs to.

## Skills
Skill 1: Clearly determine which of the following intention classifications the user's input belongs to.
Intention classification list:
{intents}

Note:
- Please determine the match only between the user's input content and the Intention classification list content,
  without judging or categorizing the match with the classification ID.
{advance}
## Reply requirements
{reply}

##Limit
- Please do not reply in text."""
_JSON_REPLY = """- The answer must be returned in JSON format.
- Strictly ensure that the output is in a valid JSON format.
- The answer needs to include the following fields such as:
{"classificationId": 0, "reason": "Unclear intentions"}"""
_NUMBER_REPLY = """- The answer must be a number indicated classificationId.
- if not match, please just output an number 0.
- do not output json format data, just output an number."""


class IntentConfig(ModelChoice):
    """Config of an `intent` node."""

    intents: list[str] = Field(min_length=1, max_length=50, description="the intents, in port order")
    query: str = Field(default="{{ query }}", min_length=1,
                       description="the text to classify (a template; by default the node's input `query`)")
    system_prompt: str | None = Field(default=None, description="extra instructions added to the classifier's prompt")
    prompt: PromptRef | None = Field(default=None, description="the extra instructions as a library prompt "
                                                               "{key, label | version} instead of system_prompt")
    mode: Literal["standard", "top_speed"] = Field(
        default="standard", description="standard: JSON with a reason; top_speed: the model answers the number only")

    @field_validator("intents")
    @classmethod
    def _distinct(cls, intents: list[str]) -> list[str]:
        cleaned = [i.strip() for i in intents]
        if any(not i for i in cleaned):
            raise ValueError("an intent must not be empty")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("the intents must be distinct")
        return cleaned


class IntentNode(NodeType[IntentConfig]):
    """Outputs `classification_id` (1..n, 0 for none), `reason`, `intent` and the chosen `branch` port."""

    type_name = "intent"
    Config = IntentConfig
    port_output: ClassVar[str | None] = "branch"
    raw_fields: ClassVar[frozenset[str]] = frozenset({"query", "system_prompt"})

    @classmethod
    def ports(cls, config: NodeConfig) -> frozenset[str]:
        """`branch_0` … `branch_<n-1>` (one per intent) plus `default`."""
        assert isinstance(config, IntentConfig)
        return frozenset(f"branch_{i}" for i in range(len(config.intents))) | {DEFAULT_PORT}

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always the same four."""
        return frozenset({"classification_id", "reason", "intent", "branch"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Ask the model which intent the query is, and choose the port."""
        cfg = self.config
        fast = cfg.mode == "top_speed"
        listed = json.dumps([{"classificationId": 0, "content": "Other intentions"},
                             *({"classificationId": i + 1, "content": text} for i, text in enumerate(cfg.intents))],
                            ensure_ascii=False, indent=0)
        extra = ctx.render_text(cfg.system_prompt, inputs) if cfg.system_prompt else ""
        if cfg.prompt is not None:
            extra = "\n".join(m["content"] for m in library_messages(ctx, cfg.prompt, inputs))
        advance = f"\n{extra}\n" if extra and not fast else ""
        system = _PROMPT.format(intents=listed, advance=advance, reply=_NUMBER_REPLY if fast else _JSON_REPLY)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": ctx.render_text(cfg.query, inputs)}]
        answer = ask_model(ctx, cfg.model, cfg.fallback_models, cfg.parameters, messages,
                           wants_json=not fast, stream=False)
        number, reason = parse_answer(ctx.node_id, answer.text, fast)
        return classify(cfg.intents, number, reason)


def parse_answer(node_id: str, text: str, fast: bool) -> tuple[Any, str]:
    """(classification id as answered, reason) from the model's text; NodeError (retryable) if unreadable."""
    if fast:
        found = _INTEGER.search(text)
        if found is None:
            raise NodeError(f"Node {node_id}: the model answered no classification number: {text[:200]!r}",
                            node_id=node_id)
        return int(found.group()), ""
    left, right = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[left:right + 1]) if left != -1 and right > left else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or "classificationId" not in value:
        raise NodeError(f"Node {node_id}: the model did not answer a JSON classification: {text[:200]!r}",
                        node_id=node_id)
    return value["classificationId"], str(value.get("reason") or "")


def classify(intents: list[str], number: Any, reason: str) -> dict[str, Any]:
    """The node's outputs for an answered id: one the list lacks (or not a number) counts as 0, `default`."""
    try:
        chosen = int(number)
    except (TypeError, ValueError):
        chosen = 0
    if isinstance(number, bool) or not 1 <= chosen <= len(intents):
        chosen = 0
    if chosen == 0:
        return {"classification_id": 0, "reason": reason, "intent": None, "branch": DEFAULT_PORT}
    return {"classification_id": chosen, "reason": reason, "intent": intents[chosen - 1],
            "branch": f"branch_{chosen - 1}"}
