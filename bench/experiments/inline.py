"""EXPERIMENT, not adopted: `dramatiq bench.experiments.inline` is the Relayflow worker with
inline successor execution patched in.

When a node's commit makes successors ready, the first one runs in the same thread instead of
being sent as a message (up to `MAX_HOPS` in a row, then a message again); the others are sent
as usual. The successor row is committed `queued` before it runs, exactly as when a message is
sent, so a crash in between costs what a lost message costs (the reconciler re-sends it).

Not adopted because it breaks the design's "one node per message": a long chain holds one worker
thread for up to `MAX_HOPS` nodes, so other runs' nodes wait behind it (weaker fairness), and
Dramatiq's per-message time limit and retries then cover several nodes. It is measured only to
show what the per-node message hop costs.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from engine.executor import Executor

MAX_HOPS = 16
_original_after = Executor._after
_depth = threading.local()


def _after_inline(self: Executor, run_id: uuid.UUID, workflow: Any, decision: Any) -> None:
    """Executor._after that runs the first ready successor in this thread (bounded), sends the rest."""
    depth = getattr(_depth, "n", 0)
    finishing = decision.remaining is not None and decision.remaining <= 0
    if not decision.committed or finishing or decision.skipped or not decision.queued or depth >= MAX_HOPS:
        return _original_after(self, run_id, workflow, decision)
    first, *rest = decision.queued
    for node_id in rest:
        self.dispatcher.send(str(run_id), node_id)
    _depth.n = depth + 1
    try:
        self.run_node(str(run_id), first)
    except Exception:  # e.g. the database went away: fall back to a message (a duplicate is a no-op claim)
        logging.getLogger("relayflow.bench").warning("inline run of %s failed; sending it", first, exc_info=True)
        self.dispatcher.send(str(run_id), first)
    finally:
        _depth.n = depth


Executor._after = _after_inline  # type: ignore[method-assign]

import workers  # noqa: E402,F401  (the broker, the runtime middleware and the run_node actor)
