"""Calling models through a LiteLLM Router: one Router per registry generation per process.

LiteLLM does the HTTP, the provider quirks, the retries within a call and the fallbacks; this
module maps our protocols to its providers, classifies its errors into the engine's tree, and
notes every failed call of a node attempt. `litellm` is imported lazily (it is slow to import).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine import telemetry
from engine.errors import NodeError, PermanentNodeError
from engine.models.files import ModelDoc, load_sources
from engine.models.registry import Registry, current_generation
from engine.settings import Settings
from engine.store import Store

PREFIXES = {"openai": "openai", "claude": "anthropic", "ark": "volcengine", "deepseek": "deepseek",
            "gemini": "gemini", "qwen": "dashscope", "ollama": "ollama_chat"}
DEFAULT_TIMEOUT_S = 60.0
_journal = threading.local()
log = logging.getLogger("relayflow.models")  # failed calls of the node attempt running on this thread


def litellm_params(doc: ModelDoc) -> dict[str, Any]:
    """The `litellm_params` of a model's Router deployment (pure)."""
    conn = doc.meta.conn_config
    protocol = doc.meta.protocol
    prefix = PREFIXES[protocol]
    params: dict[str, Any] = {}
    extra = getattr(conn, protocol) or {}
    if protocol == "openai" and extra.get("by_azure"):
        prefix = "azure"
        params["api_version"] = extra.get("api_version")
    elif protocol == "claude" and extra.get("by_bedrock"):
        prefix = "bedrock"
        params.update(aws_access_key_id=extra.get("access_key"), aws_secret_access_key=extra.get("secret_access_key"),
                      aws_session_token=extra.get("session_token"), aws_region_name=extra.get("region"))
    elif protocol == "gemini" and str(extra.get("backend", "")).lower() in ("vertex", "vertexai", "vertex_ai", "2"):
        prefix = "vertex_ai"
        params.update(vertex_project=extra.get("project"), vertex_location=extra.get("location"))
    if conn.custom and isinstance(conn.custom.get("headers"), dict):
        params["extra_headers"] = conn.custom["headers"]
    timeout = conn.timeout or DEFAULT_TIMEOUT_S
    params.update(model=f"{prefix}/{conn.model}", api_base=conn.base_url, api_key=conn.api_key,
                  timeout=timeout, stream_timeout=timeout)
    return {k: v for k, v in params.items() if v not in (None, "")}


def router_config(registry: Registry) -> dict[str, Any]:
    """Router kwargs for a registry (pure): a deployment per model, retry policy, no cooldowns."""
    model_list = [{"model_name": model_id, "litellm_params": litellm_params(doc), "model_info": {"id": model_id}}
                  for model_id, doc in registry.models.items()]
    context = [{m: [d.meta.context_window_fallback]} for m, d in registry.models.items()
               if d.meta.context_window_fallback in registry.models]
    return {"model_list": model_list, "context_window_fallbacks": context or None, "num_retries": 2,
            # one deployment per model: a cooldown would only turn a failure into "no deployment"
            "disable_cooldowns": True,
            "retry_policy": {"BadRequestErrorRetries": 0, "AuthenticationErrorRetries": 0,
                             "NotFoundErrorRetries": 0, "PermissionDeniedErrorRetries": 0,
                             "ContentPolicyViolationErrorRetries": 0, "RateLimitErrorRetries": 2,
                             "TimeoutErrorRetries": 1, "InternalServerErrorRetries": 1}}


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price list
    os.environ.setdefault("LITELLM_LOG", "WARNING")
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    litellm.suppress_debug_info = True
    if not any(isinstance(cb, CustomLogger) and getattr(cb, "relayflow", False) for cb in litellm.callbacks):
        class Journal(CustomLogger):
            relayflow = True

            def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
                # LiteLLM calls failure handlers synchronously on the calling thread (its
                # Router's retries rely on it), so the thread's journal is the node's.
                entries = getattr(_journal, "entries", None)
                if entries is None:
                    return
                exc = kwargs.get("exception")
                info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
                entries.append({"model": info.get("id") or kwargs.get("model"), "error": type(exc).__name__,
                                "status": getattr(exc, "status_code", None)})

        litellm.callbacks.append(Journal())
    return litellm


@dataclass
class Hub:
    """A registry and its Router, rebuilt when the stored generation moves on.

    One per executor (so per worker process); nodes reach it as `NodeContext.models`.
    """

    store: Store
    settings: Settings
    registry: Registry = field(default_factory=lambda: Registry(None, {}, {}))
    _router: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[Registry, Any]:
        """(registry, router) of the current generation: one cheap query, a rebuild if it moved."""
        latest = self.store.models.current_id()
        if latest is not None and latest == self.registry.generation and self._router is not None:
            return self.registry, self._router
        with self._lock:
            if latest is None or latest != self.registry.generation or self._router is None:
                generation = current_generation(self.store.models, self.settings.model_path)
                # literal secrets are not stored: this process takes them from its own files
                local, _ = load_sources(self.settings.model_path)
                registry = Registry.build(generation, local=local)
                litellm = _import_litellm()
                from litellm.types.router import RetryPolicy

                config = router_config(registry)
                config["retry_policy"] = RetryPolicy(**config["retry_policy"])
                router = litellm.Router(**config) if config["model_list"] else None
                self.registry, self._router = registry, router
                log.info("model router built", extra={"event": "models.router_built",
                                                      "generation": generation.id if generation else None,
                                                      "models": len(registry.models)})
            return self.registry, self._router


    def warm(self) -> float:
        """Do now what the first LLM node would pay for: import LiteLLM, build this generation's Router
        and pass one mocked call (no network) through it, streamed and not, which imports the rest
        of its call path (its proxy types, the HTTP stack). Seconds spent.

        Run off the message path at process start (workers/runtime.py): a node that needs the Router
        meanwhile waits on this hub's lock (`current`) or Python's import lock, never builds twice.
        """
        started = time.monotonic()
        litellm = _import_litellm()
        registry, router = self.current()
        messages = [{"role": "user", "content": "warm-up"}]
        if router is not None:
            model = next(iter(registry.models))
            router.completion(model=model, messages=messages, mock_response="ok")
            for _chunk in router.completion(model=model, messages=messages, mock_response="ok", stream=True):
                pass
        else:
            litellm.completion(model="openai/warm-up", messages=messages, mock_response="ok")
        import httpcore  # noqa: F401  (httpx imports it, and h11, at its first connection)
        return time.monotonic() - started


@dataclass
class Answer:
    """A model's answer and what it cost."""

    text: str
    reasoning: str | None
    model: str
    usage: dict[str, int]
    failed_calls: list[dict[str, Any]]


def call(router: Any, registry: Registry, node_id: str, chain: list[str], messages: list[dict[str, Any]],
         params: dict[str, Any], stream: bool, on_chunk: Callable[[str, str], None],
         on_reset: Callable[[str], None]) -> Answer:
    """Ask `chain[0]` (LiteLLM retries it, then falls back along `chain[1:]`).

    A stream that breaks after it started is beyond the Router: `on_reset` tells the client to
    drop the partial text, and the rest of the chain is asked, so no text is ever duplicated.
    When traces are exported, the call is a `chat {model}` span (engine/telemetry.py).
    """
    params = _call_params(registry, chain[0], params)
    if not telemetry.ENABLED:
        return _call(router, registry, node_id, chain, messages, params, stream, on_chunk, on_reset)
    doc = registry.models.get(chain[0])
    with telemetry.chat(_provider_model(registry, chain[0]), doc.meta.protocol if doc else None, params,
                        messages) as span:
        answer = _call(router, registry, node_id, chain, messages, params, stream, on_chunk, on_reset)
        span.answered(_provider_model(registry, answer.model), answer.usage, answer.text)
        return answer


def _provider_model(registry: Registry, model_id: str) -> str:
    """The provider's name of a registry model (what `gen_ai.*.model` means), else its id."""
    doc = registry.models.get(model_id)
    return str(doc.meta.conn_config.model or model_id) if doc is not None else model_id


def _call(router: Any, registry: Registry, node_id: str, chain: list[str], messages: list[dict[str, Any]],
          params: dict[str, Any], stream: bool, on_chunk: Callable[[str, str], None],
          on_reset: Callable[[str], None]) -> Answer:
    _journal.entries = []
    try:
        while True:
            try:
                response = router.completion(model=chain[0], messages=messages, fallbacks=chain[1:] or None,
                                             stream=stream, **params,
                                             **({"stream_options": {"include_usage": True}} if stream else {}))
            except Exception as exc:
                raise classify(exc, node_id, chain[0], registry, list(_journal.entries)) from None
            answered = (getattr(response, "_hidden_params", None) or {}).get("model_id") or chain[0]
            if not stream:
                return _whole(response, answered, _journal.entries)
            try:
                return _streamed(response, answered, on_chunk, _journal.entries)
            except Exception as exc:
                _journal.entries.append({"model": answered, "error": type(exc).__name__,
                                         "status": getattr(exc, "status_code", None), "partial_stream": True})
                on_reset(answered)
                later = chain[chain.index(answered) + 1:] if answered in chain else []
                if not later:
                    raise classify(exc, node_id, answered, registry, list(_journal.entries)) from None
                chain = later
    finally:
        _journal.entries = None


def _call_params(registry: Registry, model_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Only sampling settings reach LiteLLM: a call keyword would override the deployment's
    connection (api_base, api_key, headers), so anything else is dropped here as well as refused at save."""
    from engine.nodes.llm_params import ALLOWED

    doc = registry.models.get(model_id)
    allowed = ALLOWED | {"timeout"} | set(doc.default_params() if doc is not None else ())
    dropped = sorted(set(params) - allowed)
    if dropped:
        log.warning("dropped call parameters that are not sampling settings: %s", ", ".join(dropped))
    return {k: v for k, v in params.items() if k in allowed}


def _usage(usage: Any) -> dict[str, int]:
    details = getattr(usage, "prompt_tokens_details", None)
    cached = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    return {"input_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "output_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            # part of input_tokens, billed at the cached price (engine/cost.py)
            "cached_input_tokens": int(cached or 0)}


def _whole(response: Any, model: str, failed: list[dict[str, Any]]) -> Answer:
    message = response.choices[0].message
    return Answer(message.content or "", getattr(message, "reasoning_content", None) or None, model,
                  _usage(getattr(response, "usage", None)), list(failed))


def _streamed(stream: Iterator[Any], model: str, on_chunk: Callable[[str, str], None],
              failed: list[dict[str, Any]]) -> Answer:
    text: list[str] = []
    reasoning: list[str] = []
    usage: Any = None
    for chunk in stream:
        if getattr(chunk, "usage", None):
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            reasoning.append(delta.reasoning_content)
        if delta.content:
            text.append(delta.content)
            on_chunk(delta.content, model)
    return Answer("".join(text), "".join(reasoning) or None, model, _usage(usage), list(failed))


def classify(exc: Exception, node_id: str, model: str, registry: Registry,
             failed: list[dict[str, Any]]) -> NodeError:
    """LiteLLM's error as the engine's: 429, timeouts, connection errors, 5xx retry; other 4xx do not."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    permanent_names = {"BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError",
                       "UnprocessableEntityError", "UnsupportedParamsError", "ContextWindowExceededError",
                       "ContentPolicyViolationError", "InvalidRequestError"}
    retryable_names = {"RateLimitError", "Timeout", "APITimeoutError", "APIConnectionError", "InternalServerError",
                       "ServiceUnavailableError", "BadGatewayError", "ServiceUnavailable"}
    if name in retryable_names:
        permanent = False
    elif name in permanent_names:
        permanent = True
    else:
        permanent = isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)
    detail = registry.scrub(str(exc).split("\n")[0])[:500]
    tried = ", ".join(dict.fromkeys(str(f["model"]) for f in failed)) or model
    message = f"Node {node_id}: model {model} failed ({name}{f' {status}' if status else ''}); tried {tried}: {detail}"
    cls = PermanentNodeError if permanent else NodeError
    return cls(message, node_id=node_id, model=model, failed_calls=failed)


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started` (time.monotonic())."""
    return int((time.monotonic() - started) * 1000)
