"""The `llm` node: asks a registry model (falling back on `fallback_models`) through LiteLLM."""
from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from engine import metrics
from engine.cost import attempt_cost, usd
from engine.errors import NodeError, PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType
from engine.nodes.llm_params import LlmParameters, sampling_params
from engine.nodes.prompt_ref import PromptRef, library_messages
from engine.outputs import check_outputs
from engine.templates import is_template

if TYPE_CHECKING:
    from engine.models.calling import Answer

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class ModelChoice(NodeConfig):
    """The model fields of a node that calls one (llm, intent): checked against the registry at save time."""

    model: str = Field(min_length=1, description="a model id of the registry (GET /v1/models)")
    fallback_models: list[str] = Field(default_factory=list, description="tried in order when the model fails")
    parameters: LlmParameters = Field(default_factory=LlmParameters,
                                      description="sampling settings overriding the model's defaults (an allowlist)")

    @field_validator("model", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("fallback_models", mode="before")
    @classmethod
    def _ids_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value


class LlmConfig(ModelChoice):
    """Config of an `llm` node."""

    system_prompt: str | None = None
    prompt: str | PromptRef = Field(description="the user prompt (a template), or a library prompt "
                                                "`{key, label}` / `{key, version}` (docs/prompts.md)")

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str | PromptRef) -> str | PromptRef:
        if isinstance(value, str) and not value:
            raise ValueError("give the prompt text, or a library prompt {key, label | version}")
        return value
    output_format: Literal["text", "markdown", "json"] = "text"
    stream: bool = True


def unknown_model_errors(configs: Mapping[str, NodeConfig], known: Collection[str],
                         shown: int = 5) -> list[dict[str, Any]]:
    """Definition errors for model-calling nodes (node id -> config) naming a model that `known` lacks.

    Checked when a workflow is saved, against the registry's current generation; a templated
    model id is known only once rendered, so the run checks it (as it does a model removed later).
    With no model at all, every llm node is refused: nothing it names could answer.
    """
    listed = ", ".join(sorted(known)[:shown]) + (f" (and {len(known) - shown} more)" if len(known) > shown else "")
    errors: list[dict[str, Any]] = []
    for node_id, config in configs.items():
        if not isinstance(config, ModelChoice):
            continue
        if not known:
            which = "" if is_template(str(config.model)) else f"model '{config.model}' is not available: "
            errors.append({"node_id": node_id, "field": "config.model",
                           "message": f"{which}the model registry has no models, so no node calling a model can run "
                                      "(add a model file, see docs/models.md, then POST /v1/models/refresh)"})
            continue
        fallbacks = config.fallback_models if isinstance(config.fallback_models, list) else []  # a template
        named = [("config.model", config.model), *((f"config.fallback_models[{i}]", m) for i, m in enumerate(fallbacks))]
        for field_, model_id in named:
            model_id = str(model_id)  # a templated config keeps its raw values
            if is_template(model_id) or model_id in known:
                continue
            close = difflib.get_close_matches(model_id, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append({"node_id": node_id, "field": field_,
                           "message": f"model '{model_id}' is not in the model registry{hint}; "
                                      f"available: {listed} (GET /v1/models lists them)"})
    return errors


class ChunkBuffer:
    """Batches token chunks into `node.chunk` events (every `every_s` or `max_parts` chunks)."""

    def __init__(self, emit: Callable[[str, dict[str, Any]], None], every_s: float = 0.1, max_parts: int = 20) -> None:
        self.emit, self.every_s, self.max_parts = emit, every_s, max_parts
        self.parts: list[str] = []
        self.model: str | None = None
        self.last = time.monotonic()

    def add(self, text: str, model: str) -> None:
        """Buffer a chunk; publish the batch when it is due."""
        if self.model not in (None, model):
            self.flush()
        self.parts.append(text)
        self.model = model
        if len(self.parts) >= self.max_parts or time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Publish what is buffered."""
        if self.parts:
            self.emit("node.chunk", {"text": "".join(self.parts), "model": self.model})
        self.parts, self.last = [], time.monotonic()

    def reset(self, model: str) -> None:
        """The stream of `model` broke: drop the buffer, tell clients to discard the partial text."""
        self.parts = []
        self.emit("node.chunk_reset", {"model": model, "reason": "the stream broke; another model answers"})


class LlmNode(NodeType[LlmConfig]):
    """Renders the prompts, asks the model, returns `text` (or the JSON answer's fields)."""

    type_name = "llm"
    Config = LlmConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"system_prompt", "prompt"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """`text` and `reasoning_content`; a JSON answer's declared fields (any if undeclared)."""
        if isinstance(config, LlmConfig) and config.output_format == "json":
            return frozenset(declared) | {"reasoning_content"} if declared else None
        return frozenset({"text", "reasoning_content"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """One attempt: the model and its fallbacks, as LiteLLM's Router tries them."""
        cfg = self.config
        messages = chat_messages(ctx, cfg, inputs)
        wants_json = cfg.output_format == "json"
        answer = ask_model(ctx, cfg.model, cfg.fallback_models, cfg.parameters, messages,
                           wants_json=wants_json, stream=cfg.stream and not wants_json)
        extra = {"reasoning_content": answer.reasoning} if answer.reasoning else {}
        if not wants_json:
            return {"text": answer.text, **extra}
        return {**self._parse_json(ctx, answer.text, answer.model), **extra}

    def _parse_json(self, ctx: NodeContext, text: str, model: str) -> dict[str, Any]:
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            raise NodeError(f"Node {ctx.node_id}: model {model} answered text that is not JSON: {text[:200]!r}",
                            node_id=ctx.node_id) from None
        if not isinstance(value, dict):
            raise NodeError(f"Node {ctx.node_id}: model {model} answered JSON {type(value).__name__}, expected an object.",
                            node_id=ctx.node_id)
        try:
            check_outputs(ctx.node_id, value, ctx.declared_outputs)
        except PermanentNodeError as exc:  # another answer may fit: the attempt is retryable
            raise NodeError(f"{exc.message} (model {model} answered {text[:200]!r})", node_id=ctx.node_id) from None
        return value


def chat_messages(ctx: NodeContext, cfg: LlmConfig, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages an attempt sends: the library prompt's, or the node's own `prompt` (and `system_prompt`)."""
    if isinstance(cfg.prompt, PromptRef):
        return library_messages(ctx, cfg.prompt, inputs, cfg.system_prompt)
    messages = [{"role": "user", "content": ctx.render_text(cfg.prompt, inputs)}]
    if cfg.system_prompt:
        messages.insert(0, {"role": "system", "content": ctx.render_text(cfg.system_prompt, inputs)})
    return messages


def ask_model(ctx: NodeContext, model: str, fallback_models: list[str], parameters: LlmParameters,
              messages: list[dict[str, Any]], *, wants_json: bool, stream: bool) -> Answer:
    """Ask `model` (then its fallbacks) through the registry of `ctx.models`; fills `ctx.report`.

    The one way a node calls a model (llm and intent nodes): registry checks, sampling
    parameters, the node's deadline, JSON mode and streamed `node.chunk` events.
    """
    from engine.models.calling import DEFAULT_TIMEOUT_S, call, elapsed_ms

    if ctx.models is None:
        raise PermanentNodeError(f"Node {ctx.node_id}: no model registry is available where it runs.",
                                 node_id=ctx.node_id)
    registry, router = ctx.models.current()
    chain = list(dict.fromkeys([model, *fallback_models]))
    for model_id in chain:
        if model_id not in registry.models:
            # saved when it was known (or templated): removed since, or rendered to an unknown id
            known = ", ".join(sorted(registry.models)) or "none"
            where = ("config.model" if model_id == model
                     else f"config.fallback_models[{fallback_models.index(model_id)}]")
            raise PermanentNodeError(f"Node {ctx.node_id}: model {model_id} is not in the registry (removed?); "
                                     f"known models: {known}.", node_id=ctx.node_id, field=where)
    primary = registry.models[model]
    caps = primary.meta.capability
    params = sampling_params(primary.default_params(), parameters.model_dump(exclude_none=True),
                             caps.output_tokens or caps.max_tokens)
    # The node's timeout bounds the call too (connection settings stay the registry's).
    model_timeout = primary.meta.conn_config.timeout or DEFAULT_TIMEOUT_S
    if ctx.remaining_s() < model_timeout:
        params["timeout"] = max(0.5, ctx.remaining_s())
    if wants_json and primary.meta.capability.json_mode:
        params.setdefault("response_format", {"type": "json_object"})
    buffer = ChunkBuffer(ctx.emit_event)
    started = time.monotonic()
    try:
        answer = call(router, registry, ctx.node_id, chain, messages, params, stream, buffer.add, buffer.reset)
    except NodeError as exc:
        ctx.report.update(latency_ms=elapsed_ms(started), failed_calls=exc.details.pop("failed_calls", []), cost=0.0)
        metrics.llm_failed(model, time.monotonic() - started)
        raise
    finally:
        buffer.flush()
    # the price of the model that answered (a fallback's own), even if its answer fails a check later
    answered = registry.models.get(answer.model)
    cost = attempt_cost(answered.pricing if answered is not None else None, answer.usage)
    ctx.report.update(model=answer.model, latency_ms=elapsed_ms(started), usage=answer.usage,
                      failed_calls=answer.failed_calls, cost=usd(cost))
    metrics.llm_answered(answer.model, time.monotonic() - started, answer.usage, cost)
    return answer
