"""The sampling settings an `llm` node's author may set: an allowlist, each checked and bounded.

Everything else LiteLLM accepts as a call keyword (`api_base`, `base_url`, `api_key`,
`extra_headers`, `custom_llm_provider`, `timeout`, `metadata`, `callbacks`, ...) would let an
author send the operator's key, or the registry's header secrets, to a host of their choosing.
Connection settings come only from the model registry. No I/O.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from engine.nodes.base import NodeConfig

__all__ = ["ALLOWED", "LlmParameters", "sampling_params"]

_MAX_INT64 = 2**63 - 1


class LlmParameters(NodeConfig):
    """`parameters` of an `llm` node (unknown keys are refused at save time)."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=1, le=1000)
    # Clamped at run time to the model's output limit from the registry, when it is known.
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-_MAX_INT64 - 1, le=_MAX_INT64)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    response_format: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if len(items) > 16 or any(len(s) > 256 for s in items):
            raise ValueError("at most 16 stop sequences of at most 256 characters")
        return value

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        kind = value.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError("type must be 'text', 'json_object' or 'json_schema'")
        extra = set(value) - {"type", "json_schema"}
        if extra:
            raise ValueError(f"unknown key '{sorted(extra)[0]}'; allowed keys: json_schema, type")
        if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
            raise ValueError("json_schema must be an object (name, schema, strict)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if len(value) > 300:
            raise ValueError("at most 300 token biases")
        for token, bias in value.items():
            if not token.isdigit() or not -100 <= bias <= 100:
                raise ValueError("keys are token ids, values between -100 and 100")
        return value


ALLOWED: frozenset[str] = frozenset(LlmParameters.model_fields)


def sampling_params(defaults: dict[str, Any], chosen: dict[str, Any], output_limit: int | None) -> dict[str, Any]:
    """The call's sampling keywords: the registry's defaults (the operator's), then the author's, filtered and clamped.

    The filter repeats the save-time allowlist (defence in depth: a stored or rendered config
    that skipped validation still cannot pass a connection setting).
    """
    params = {**defaults, **{k: v for k, v in chosen.items() if k in ALLOWED and v is not None}}
    if output_limit:
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(params.get(key), int):
                params[key] = min(params[key], output_limit)
    return params
