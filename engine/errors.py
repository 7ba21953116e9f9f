"""One exception tree for the whole engine; the API maps it to HTTP statuses.

Each class's docstring is its default message.
"""
from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Relayflow engine error."""

    code: int = 5000
    http_status: int = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The `{code, msg, ...}` body the API sends for this error."""
        return {"code": self.code, "msg": self.message, **self.details}


class DefinitionError(EngineError):
    """The workflow definition is invalid."""

    code = 4220
    http_status = 422

    def __init__(self, message: str | None = None, *, node_id: str | None = None,
                 field: str | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        self.node_id = node_id
        self.field = field
        if errors is None:
            errors = [{"node_id": node_id, "field": field, "message": message or self.__doc__}]
        self.errors = errors
        if message is None and errors:
            message = "; ".join(_describe(e) for e in errors)
        super().__init__(message, errors=errors)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(p for p in (error.get("node_id"), error.get("field")) if p)
    return f"{where}: {error['message']}" if where else str(error["message"])


class InvalidInputs(EngineError):
    """The run inputs do not match the workflow's declared inputs."""

    code = 4000
    http_status = 422

    def __init__(self, message: str | None = None, *, errors: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors or []
        if message is None and self.errors:
            message = "; ".join(_describe(e) for e in self.errors)
        super().__init__(message, errors=self.errors)


class NotFound(EngineError):
    """Not found."""

    code = 4040
    http_status = 404


class WorkflowNotFound(NotFound):
    """Workflow not found."""


class RunNotFound(NotFound):
    """Run not found."""


class VersionNotFound(NotFound):
    """Workflow version not found."""


class TokenNotFound(NotFound):
    """Token not found."""


class PromptNotFound(NotFound):
    """Prompt not found."""


class PromptVersionNotFound(NotFound):
    """Prompt version not found."""


class SpaceNotFound(NotFound):
    """Space not found."""


class Unauthorized(EngineError):
    """A valid bearer token is required."""

    code = 4010
    http_status = 401


class TooManyFailedLogins(EngineError):
    """Too many failed authentication attempts from this address; try again later."""

    code = 4290
    http_status = 429

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s  # sent as the Retry-After header
        super().__init__(message)


class Forbidden(EngineError):
    """This token may not do that."""

    code = 4030
    http_status = 403


class InvalidTransition(EngineError):
    """That change is not allowed in the object's current state."""

    code = 4090
    http_status = 409


class PromptConflict(InvalidTransition):
    """Someone else saved this prompt since the version this save was based on."""


class IdempotencyKeyInUse(InvalidTransition):
    """This idempotency key already started a run of another workflow; use a new key."""

    def __init__(self, message: str | None = None, *, run_id: str, workflow_id: str) -> None:
        # the body names the run holding the key, so a client can find what it started first
        super().__init__(message, field="idempotency_key", run_id=run_id, workflow_id=workflow_id)


class NotPublished(EngineError):
    """The workflow has no published version."""

    code = 6031
    http_status = 409


class InterruptInSyncRun(InvalidTransition):
    """The sync run reached a question or input node; use stream_run and stream_resume for those."""

    code = 6039  # Coze Studio's code for it


class StillRunning(EngineError):
    """The run did not end within the sync wait; poll get_run_history with its execute_id."""

    code = 6023  # Coze Studio's timeout code
    http_status = 504


class TooManyRequests(EngineError):
    """Too many requests; slow down."""

    code = 4290
    http_status = 429


class TooManyStreams(TooManyRequests):
    """This token holds as many open event streams as it may; close one first."""


class ServiceUnavailable(EngineError):
    """A backing service (PostgreSQL or Redis) is unavailable."""

    code = 5030
    http_status = 503


class ConfigurationError(EngineError):
    """The settings contradict each other."""

    def __init__(self, message: str | None = None, *, settings: list[str]) -> None:
        self.settings = settings  # the RELAYFLOW_ variables at fault
        super().__init__(message, settings=settings)


class NodeError(EngineError):
    """The node failed."""

    code = 7000
    retryable = True
    kind = "error"

    def __init__(self, message: str | None = None, *, retryable: bool | None = None, **details: Any) -> None:
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message, **details)


class NodeTimeout(NodeError):
    """The node did not finish within its timeout."""

    code = 7001
    kind = "timeout"


class PermanentNodeError(NodeError):
    """The node failed in a way that retrying cannot fix."""

    code = 7002
    retryable = False
    kind = "permanent"


class SandboxUnavailable(PermanentNodeError):
    """The code sandbox cannot be started."""


class NodeCrashed(NodeError):
    """The worker running the node stopped (crash or lost lease) too many times."""

    code = 7003
    retryable = False
    kind = "crashed"


class RunDeadlineExceeded(NodeError):
    """The run passed its deadline."""

    code = 7004
    retryable = False
    kind = "deadline"

    @classmethod
    def run_error(cls, node_id: str | None) -> dict[str, Any]:
        """The run's `error` object when its deadline ends it."""
        return {"code": cls.code, "node_id": node_id, "message": (cls.__doc__ or "").strip()}
