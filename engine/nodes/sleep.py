"""The `sleep` node: waits a number of seconds within the node's timeout."""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from engine.errors import NodeTimeout
from engine.nodes.base import NodeConfig, NodeContext, NodeType

STEP_S = 0.25


class SleepConfig(NodeConfig):
    """Config of a `sleep` node."""

    seconds: float = Field(ge=0, le=86400)


class SleepNode(NodeType[SleepConfig]):
    """Sleeps `seconds` and outputs `{"slept_s": seconds}`."""

    type_name = "sleep"
    Config = SleepConfig

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `slept_s`."""
        return frozenset({"slept_s"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Sleep in small steps; fail at once if the sleep cannot fit in the remaining timeout."""
        seconds = self.config.seconds
        remaining_s = ctx.remaining_s()
        if seconds > remaining_s:
            # Sleeping until the timeout would only waste the attempt, and so would a retry.
            raise NodeTimeout(
                f"sleep: seconds={seconds:g} exceeds the node's remaining timeout of {remaining_s:.3g}s; "
                "raise the node's timeout_s",
                retryable=False,
            )
        deadline = time.monotonic() + seconds
        while (left_s := deadline - time.monotonic()) > 0:
            time.sleep(min(STEP_S, left_s))
        return {"slept_s": seconds}
