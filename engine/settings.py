"""Settings, read from environment variables (and an optional `.env`), documented in docs/configuration.md.

`DATABASE_URL` and `REDIS_URL` are read without prefix (the names every platform uses);
everything else is `RELAYFLOW_<NAME>`. With neither URL set, `relayflow up` starts embedded
servers and sets them for its child processes.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigurationError


class Settings(BaseSettings):
    """Every knob of Relayflow; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="RELAYFLOW_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "RELAYFLOW_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "RELAYFLOW_REDIS_URL"))
    data_dir: Path = Path.home() / ".relayflow"
    # Configuration files; default: the `conf` package data shipped with Relayflow.
    conf_dir: Path | None = None
    # The model files' folder (default `<conf_dir>/model`); see docs/models.md.
    model_dir: Path | None = None

    queue_name: str = "relayflow"
    lease_s: float = 30.0
    lease_renew_every_s: float = 10.0
    default_node_timeout_s: float = 600.0
    max_crashes: int = 3
    # Nodes of pure types (template, selector, …) run before they are claimed and commit fenced on
    # staying untouched (engine/store/sql/unclaimed.py): one write per node instead of two. True
    # claims them like every other node (their `node.started` then lands when they start).
    claim_pure_nodes: bool = False
    # In a capped space (RELAYFLOW_SPACE_MAX_RUNNING_NODES, or the space's own cap), a pure node
    # runs unclaimed, uncounted, only while its space has room and for at most this long; past it
    # the worker stops it and claims it (it runs again from the start, counted against the cap).
    # The bound on what a capped space runs beside its cap. 0: a capped space's nodes are all claimed.
    unclaimed_budget_ms: float = Field(default=50.0, ge=0)
    # How deep child runs may nest (a sub-workflow calling a sub-workflow…): a run submitted by a
    # client is depth 0; a child past this depth fails its parent node, naming the chain.
    max_run_depth: int = Field(default=5, ge=1)
    # The most items one batch node may run (its own `max_items` may only lower it): each item is a
    # child run, inserted when the batch starts.
    batch_max_items: int = Field(default=10_000, ge=1)
    # The most iterations one loop node may run (its own `max_iterations` may only lower it): a
    # `while` loop still going at the cap fails, so no loop is unbounded.
    loop_max_iterations: int = Field(default=1000, ge=1)
    # How long an admin may restore a deleted prompt (docs/prompts.md).
    prompt_restore_window_s: int = Field(default=30 * 86400, ge=0)
    reconcile_every_s: float = 5.0
    resend_queued_after_s: float = 30.0
    retry_grace_s: float = 2.0
    redis_heartbeat_timeout_ms: int = 60_000
    queue_poll_max_ms: int = 100
    # Workers and web processes log lines at this level and above (docs/operations.md "Logs")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # telemetry (issue 13): one JSON object per log line, or `key=value` pairs (logfmt); traces
    # are configured by the standard OTEL_* variables (docs/operations.md "Traces"), not here
    log_format: Literal["json", "logfmt"] = "json"
    otel_capture_content: bool = False  # prompt and completion text on LLM spans (off: never)

    sse_keepalive_s: float = 15.0
    sse_max_s: float = 1800.0
    sync_wait_default_s: float = 30.0
    sync_wait_max_s: float = 300.0

    max_body_bytes: int = 2 * 1024 * 1024
    http_allow_private: bool = False
    code_memory_mb: int = 256
    code_python: str | None = None

    # Secret hygiene: failed authentication attempts per client address (counted in Redis across
    # web processes) before 429, in a fixed window
    auth_failure_limit: int = 20
    auth_failure_window_s: int = 60
    # Verified tokens cached per web process (engine/token_cache.py): an entry lives token_cache_s
    # (0: no cache, a lookup per request); a revocation reaches every process within token_recheck_s
    # (0.5 s: the promise is a second, with room for the re-read itself)
    # Each worker process imports LiteLLM and builds its Router at start, in a background thread
    # (off the message path), so the first LLM node does not wait for it; false: on first use
    worker_warm_llm: bool = True
    token_cache_s: float = 30.0
    token_recheck_s: float = 0.5

    # Code sandbox (issue 9, item 1): see engine/nodes/sandbox.py and docs/configuration.md.
    code_sandbox: Literal["bwrap", "none"] = "bwrap"
    code_bwrap: str | None = None
    code_memory_max_mb: int = Field(default=1024, ge=32)
    code_pids_max: int = Field(default=64, ge=1)
    code_cpu_s: int = Field(default=60, ge=1)
    code_file_mb: int = Field(default=16, ge=1)
    code_tmpfs_mb: int = Field(default=64, ge=1)
    code_packages_dir: Path | None = None
    code_cgroup: bool = True

    # Untrusted authors: definition, template, output and node-time limits (docs/configuration.md).
    definition_max_bytes: int = 512 * 1024
    definition_max_depth: int = 32
    definition_max_nodes: int = 500
    template_max_chars: int = 1024 * 1024
    template_max_int_bits: int = 4096
    template_max_range: int = 10_000
    node_input_max_bytes: int = 1024 * 1024
    node_output_max_bytes: int = 1024 * 1024
    run_output_max_bytes: int = 4 * 1024 * 1024
    node_timeout_grace_s: float = 2.0

    # Event streams (issue 9: one token's streams are capped; a revoked token's streams close)
    max_streams_per_token: int = 50
    stream_recheck_s: float = 3.0
    stream_slot_ttl_s: float = 60.0

    # Fair share between spaces (issue 9): running nodes per space at once; 0 = no cap. A space's
    # own cap (`relayflow spaces set-cap`) overrides it. Keep it well under the deployment's worker
    # threads (docs/configuration.md), or one space can still fill them all.
    space_max_running_nodes: int = Field(default=8, ge=0)

    # Diagnosis (issue 13, `diagnosis`): every worker process refreshes its row of `workers` this
    # often; a row silent for 3 intervals counts as a dead worker (docs/operations.md "Why is a run stuck"). Web
    # and worker processes must agree on it.
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    # Retention (issue 13, part `retention`; docs/operations.md, "Retention"): ended top-level runs older
    # than this many days are deleted with their child runs, nodes, events and interrupts; 0 keeps
    # them forever. A space's own value (`relayflow spaces set-retention`) overrides it. 30 days:
    # a month of history to investigate and rerun from, while the tables stay bounded.
    retention_days: float = Field(default=30.0, ge=0)
    retention_every_s: float = Field(default=60.0, gt=0)  # how often one worker process sweeps
    retention_batch: int = Field(default=100, ge=1)       # top-level runs deleted per transaction
    # Rest between two batches of one sweep, so the deletes never hold the disk and the
    # database's CPU for long while nodes run: 0.5 s kept nodes' latency within ~10% of their
    # neighbours' and still deletes ~6,600 events/s (bench/retention.py, docs/operations.md, "Retention").
    retention_pause_s: float = Field(default=0.5, ge=0)

    db_pool_size: int = 10
    db_max_overflow: int = 10

    # Metrics (issue 13, costmetrics; docs/operations.md, "Metrics"): a worker host with no web process may
    # export the host's metrics on this port (the first worker process to bind it serves them).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @property
    def model_path(self) -> Path:
        """The folder of the model files."""
        if self.model_dir is not None:
            return self.model_dir
        return (self.conf_dir if self.conf_dir is not None else package_data("conf")) / "model"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, url: str | None) -> str | None:
        """Accept the `postgres://` and `postgresql://` spellings and use psycopg 3."""
        if url is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @model_validator(mode="after")
    def _no_contradictions(self) -> Settings:
        """Refuse settings that contradict each other, naming both variables (ConfigurationError).

        Raised as our own error, not a ValueError, so pydantic passes it through unwrapped.
        Not a contradiction: RELAYFLOW_CODE_MEMORY_MB above RELAYFLOW_CODE_MEMORY_MAX_MB (the
        operator's cap is documented to clamp every node, the default included).
        """
        rules = (
            # One renewal may come late (a slow database, a busy process) and the lease must still
            # hold: otherwise the reconciler declares a healthy node crashed and it runs twice.
            ("lease_renew_every_s", "lease_s", self.lease_renew_every_s > self.lease_s / 2,
             "must be at most half of", " (a lease must outlive one late renewal)"),
            ("sync_wait_default_s", "sync_wait_max_s", self.sync_wait_default_s > self.sync_wait_max_s,
             "must not exceed", ""),
        )
        faults = [(a, b, f"{_env(a)}={getattr(self, a)} {relation} {_env(b)}={getattr(self, b)}{why}")
                  for a, b, broken, relation, why in rules if broken]
        if faults:
            raise ConfigurationError("Settings contradict each other: " + "; ".join(f[2] for f in faults) + ".",
                                     settings=[_env(name) for a, b, _ in faults for name in (a, b)])
        return self


def package_data(package: str) -> Path:
    """The folder of a package shipped with its data (`conf`, `examples`, `migrations`), wherever installed."""
    # importlib.resources, not a path computed from this file: installed from a wheel, `conf`
    # and `examples` sit beside `engine` in site-packages, not two folders above it.
    folder = resources.files(package)
    if not isinstance(folder, Path):  # a zip import: alembic and the model loader need real files
        raise ConfigurationError(f"the `{package}` package is not a folder on disk ({folder}); install "
                                 "Relayflow unzipped (pip does), or name your folders with RELAYFLOW_CONF_DIR.",
                                 settings=["RELAYFLOW_CONF_DIR"])
    return folder.resolve()  # also tidies `migrations/../examples` (alembic.ini prepends `migrations/..`)


def _env(name: str) -> str:
    """The environment variable of a setting."""
    return f"RELAYFLOW_{name.upper()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
