"""Statements of tracing (engine/telemetry.py): run only when an exporter is configured."""
from __future__ import annotations

from engine.store.sql import Statement

RUN_TRACE = Statement(
    "A run's row as its span needs it, with the id of its top run (whose id is the trace's).", """
WITH RECURSIVE ancestry AS (
    SELECT r.id, r.parent_run_id, 0 AS up FROM runs r WHERE r.id = :run
    UNION ALL
    SELECT p.id, p.parent_run_id, ancestry.up + 1 FROM runs p JOIN ancestry ON p.id = ancestry.parent_run_id
), top_run AS (
    SELECT ancestry.id FROM ancestry ORDER BY ancestry.up DESC LIMIT 1
)
SELECT c.id, c.workflow_id, c.version, c.space_id, c.status, c.error, c.created_at, c.finished_at,
       c.parent_run_id, c.parent_node_id, c.depth, top_run.id AS root_id
  FROM runs c CROSS JOIN top_run WHERE c.id = :run""")
