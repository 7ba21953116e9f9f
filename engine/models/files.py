"""Model documents: Coze Studio's `conf/model/*.yaml` files and `MODEL_*_<n>` environment models.

Reading the folder is the only I/O here; parsing, `${VAR}` interpolation and validation are
pure. Documents keep their `${VAR}` placeholders: they are stored as written (no key needs to
be stored when a file takes it from the environment) and resolved by each process that calls.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROTOCOLS = ("openai", "claude", "ark", "deepseek", "gemini", "qwen", "ollama")
DELETED_STATUS = 10  # Coze: 0 default (in use), 1 in use, 5 pending offline, 10 deleted
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Text(_Open):
    """A text in Chinese and English."""

    zh: str | None = None
    en: str | None = None


class Parameter(_Open):
    """One tunable parameter and its presets (`default_val.default_val` is the default)."""

    name: str
    type: Literal["int", "float", "boolean", "string"] | None = None
    default_val: dict[str, Any] | None = None

    def default(self) -> Any:
        """The default value, typed by `type` (None when the file gives none)."""
        raw = (self.default_val or {}).get("default_val")
        if raw is None or raw == "":
            return None
        if self.type == "int":
            return int(float(raw))
        if self.type == "float":
            return float(raw)
        if self.type == "boolean":
            return str(raw).lower() in ("1", "true", "yes")
        return raw


class Capability(_Open):
    """What the model can do (Coze's `meta.capability`)."""

    function_call: bool = False
    input_modal: list[str] = Field(default_factory=lambda: ["text"])
    input_tokens: int | None = None
    json_mode: bool = False
    max_tokens: int | None = None
    output_modal: list[str] = Field(default_factory=lambda: ["text"])
    output_tokens: int | None = None
    reasoning: bool = False


class ConnConfig(_Open):
    """How to reach the model (Coze's `meta.conn_config`); per-protocol extras sit under their name."""

    base_url: str | None = None
    api_key: str | None = None
    model: str = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0, description="seconds; '30s', '1m', '500ms' accepted")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: list[str] | None = None
    openai: dict[str, Any] | None = None
    claude: dict[str, Any] | None = None
    ark: dict[str, Any] | None = None
    deepseek: dict[str, Any] | None = None
    gemini: dict[str, Any] | None = None
    qwen: dict[str, Any] | None = None
    ollama: dict[str, Any] | None = None
    custom: dict[str, Any] | None = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            found = _DURATION.match(value)
            if not found:
                raise ValueError("must be seconds or a duration like '30s', '2m', '500ms'")
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[found.group(2)]
            return float(found.group(1)) * scale
        return value


class Meta(_Open):
    """Protocol, capability, connection."""

    protocol: Literal["openai", "claude", "ark", "deepseek", "gemini", "qwen", "ollama"]
    capability: Capability = Field(default_factory=Capability)
    conn_config: ConnConfig
    status: int | None = None
    # Relayflow extension: the model a context-window error moves to (LiteLLM context_window_fallbacks).
    context_window_fallback: str | None = None


class Pricing(BaseModel):
    """What a model costs (a Relayflow extension, top-level `pricing`): USD per million tokens.

    Cached input tokens cost `cached_input_per_million`, or the input price when it is not given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # numbers or decimal strings ("0.15"); negative, NaN or text is refused with the field named
    input_per_million: Decimal = Field(default=Decimal(0), ge=0, allow_inf_nan=False)
    output_per_million: Decimal = Field(default=Decimal(0), ge=0, allow_inf_nan=False)
    cached_input_per_million: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    # One currency everywhere, so run and node sums (and the `_usd` metrics) add up.
    currency: Literal["USD"] = "USD"

    def view(self) -> dict[str, Any]:
        """JSON form (decimal strings, exact)."""
        cached = self.cached_input_per_million
        return {"input_per_million": str(self.input_per_million), "output_per_million": str(self.output_per_million),
                "cached_input_per_million": str(cached if cached is not None else self.input_per_million),
                "currency": self.currency}


class ModelDoc(_Open):
    """One model, as written in a `conf/model/*.yaml` file."""

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    icon_uri: str | None = None
    icon_url: str | None = None
    description: Text | None = None
    default_parameters: list[Parameter] = Field(default_factory=list)
    meta: Meta
    status: int = 0
    pricing: Pricing | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def deleted(self) -> bool:
        """Status 10 (deleted): listed nowhere, callable by no one."""
        return DELETED_STATUS in (self.status, self.meta.status)

    def default_params(self) -> dict[str, Any]:
        """Call parameters: `default_parameters` defaults, then fixed `conn_config` values."""
        params = {p.name: p.default() for p in self.default_parameters if p.name != "response_format"}
        conn = self.meta.conn_config
        for name in ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens",
                     "frequency_penalty", "presence_penalty", "stop"):
            if getattr(conn, name) is not None:
                params[name] = getattr(conn, name)
        return {k: v for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class Problem:
    """A model source that could not be used: where, which field, why."""

    source: str
    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"source": self.source, "field": self.field, "message": self.message}


def interpolate(value: Any, env: Mapping[str, str], missing: set[str] | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of `value`; unset names go to `missing`."""
    if isinstance(value, str):
        def sub(found: re.Match[str]) -> str:
            name, default = found.group(1), found.group(2)
            if name in env:
                return env[name]
            if default is None and missing is not None:
                missing.add(name)
            return default or ""
        # pydantic's lax mode turns "60" or "true" into the field's type where one is declared
        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    return value


def parse_doc(raw: Any, source: str, env: Mapping[str, str]) -> tuple[ModelDoc | None, list[Problem]]:
    """Validate one raw document (placeholders resolved against `env` for the check only)."""
    if not isinstance(raw, dict):
        return None, [Problem(source, None, "a model file must be a mapping (id, name, meta, ...)")]
    try:
        return ModelDoc.model_validate(interpolate(raw, env)), []
    except ValidationError as exc:
        return None, [Problem(source, ".".join(str(p) for p in e["loc"]) or None, e["msg"]) for e in exc.errors()]


def read_folder(folder: Path, env: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Raw documents of `folder/*.yaml|yml` (not sub-folders such as templates/) by model id."""
    docs: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    if not folder.is_dir():
        return docs, [Problem(str(folder), None, "the model folder does not exist")]
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append(Problem(str(path), None, f"cannot be read as YAML: {_yaml_reason(exc)}"))
            continue
        problems.extend(_admit(docs, raw, str(path), env))
    return docs, problems


def _yaml_reason(exc: Exception) -> str:
    """Why a file is not YAML, without quoting its text (the line at fault may hold a key)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem or exc.context or 'invalid YAML'}{where}"
    return type(exc).__name__ if not isinstance(exc, OSError) else (exc.strerror or type(exc).__name__)


def env_docs(env: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Models from MODEL_PROTOCOL_<n>, MODEL_OPENCOZE_ID_<n>, MODEL_NAME_<n>, MODEL_ID_<n>,
    MODEL_API_KEY_<n>, MODEL_BASE_URL_<n> for n = 0, 1, … (until a MODEL_PROTOCOL_<n> is unset);
    prices from MODEL_PRICE_INPUT_<n>, MODEL_PRICE_OUTPUT_<n>, MODEL_PRICE_CACHED_INPUT_<n>.

    The key stays a `${MODEL_API_KEY_<n>}` placeholder, so it is never stored.
    """
    docs: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    n = 0
    while f"MODEL_PROTOCOL_{n}" in env:
        raw = {"id": env.get(f"MODEL_OPENCOZE_ID_{n}") or f"env-{n}",
               "name": env.get(f"MODEL_NAME_{n}") or env.get(f"MODEL_ID_{n}") or f"env model {n}",
               "meta": {"protocol": env[f"MODEL_PROTOCOL_{n}"].strip().lower(),
                        "conn_config": {"model": env.get(f"MODEL_ID_{n}", ""),
                                        "base_url": env.get(f"MODEL_BASE_URL_{n}") or None,
                                        "api_key": f"${{MODEL_API_KEY_{n}}}" if f"MODEL_API_KEY_{n}" in env else None}}}
        prices = {name: env[f"MODEL_PRICE_{var}_{n}"] for name, var in _ENV_PRICES if f"MODEL_PRICE_{var}_{n}" in env}
        if prices:
            raw["pricing"] = prices
        problems.extend(_admit(docs, raw, f"env MODEL_*_{n}", env))
        n += 1
    return docs, problems


_ENV_PRICES = (("input_per_million", "INPUT"), ("output_per_million", "OUTPUT"),
               ("cached_input_per_million", "CACHED_INPUT"))


def _admit(docs: dict[str, dict[str, Any]], raw: Any, source: str, env: Mapping[str, str]) -> list[Problem]:
    doc, problems = parse_doc(raw, source, env)
    if doc is None:
        return problems
    if doc.deleted:
        return []
    if doc.id in docs:
        return [Problem(source, "id", f"model id '{doc.id}' is already used by {docs[doc.id]['_source']}")]
    docs[doc.id] = {**raw, "id": doc.id, "_source": source}
    return []


def load_sources(folder: Path, env: Mapping[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Every model of the folder and of the environment (a bad source is a Problem, not a failure)."""
    env = dict(os.environ) if env is None else env
    docs, problems = read_folder(folder, env)
    extra, more = env_docs(env)
    for model_id, raw in extra.items():
        if model_id in docs:
            more.append(Problem(raw["_source"], "id", f"model id '{model_id}' is already used by {docs[model_id]['_source']}"))
        else:
            docs[model_id] = raw
    return docs, problems + more
