"""SQL of reruns: a new run of a source run's version that reuses the source's recorded node outcomes.

The plan (engine/rerun_plan.py, no I/O) decides which nodes are reused and the frontier's join
counters; INSERT_RERUN writes the run, the reused rows (one INSERT ... SELECT from the source's
rows) and the frontier rows in one statement. Lineage reads use ix_runs_source (migration 0012).
"""
from __future__ import annotations

from engine.store.sql import Statement

SOURCE_RUN = Statement("A run of a space as a rerun's source: its version, status, inputs, error and lineage.", """
SELECT r.id, r.workflow_id, r.version_id, r.version, r.status, r.inputs, r.error, r.parent_run_id, r.body,
       r.source_run_id
  FROM runs r WHERE r.id = :id AND r.space_id = :space""")

SOURCE_OUTCOMES = Statement("The node rows of a source run as a rerun's plan reads them: status, port, settled.", """
SELECT nr.node_id, nr.status, nr.port, nr.settled FROM node_runs nr WHERE nr.run_id = :run""")

# The source must still be a final top-level run of the space (checked again here, in the same
# statement that copies it, so a source deleted meanwhile by retention inserts nothing). Reused rows
# keep the source's outcome (status, output, port, error, model, pinned prompt, times, a composite's
# child counters) but no attempts and no usage: nothing ran, and nothing is charged again.
# Frontier rows carry the join counters of engine/rerun_plan.py; a skipped one is already settled.
# A bulk rerun sets :key (its source and range): a second bulk call of the same range inserts
# nothing for that source (the space's idempotency key is unique).
INSERT_RERUN = Statement(
    "Insert a rerun of a final run: the run, the reused node rows copied from the source, the frontier, run.queued.", """
WITH source_run AS (
    SELECT r.id, r.space_id, r.workflow_id, r.version_id, r.version, r.inputs FROM runs r
     WHERE r.id = :source AND r.space_id = :space AND r.parent_run_id IS NULL
       AND r.status IN ('succeeded', 'failed', 'cancelled')
), new_run AS (
    INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs, idempotency_key, remaining,
                      deadline_at, run_mode, depth, source_run_id, rerun_from, overrides)
    SELECT :id, source_run.space_id, source_run.workflow_id, source_run.version_id, source_run.version, 'queued',
           coalesce(CAST(:inputs AS jsonb), source_run.inputs), :key, :remaining,
           CASE WHEN CAST(:deadline_s AS float8) IS NULL THEN NULL
                ELSE now() + make_interval(secs => CAST(:deadline_s AS float8)) END,
           'async', 0, source_run.id, :from_node, CAST(:overrides AS jsonb)
      FROM source_run
    ON CONFLICT (space_id, idempotency_key) DO NOTHING
    RETURNING id
), reused_nodes AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, settled, output,
                           error, port, model, prompt, queued_at, started_at, finished_at,
                           children_total, children_done, children_started)
    SELECT new_run.id, nr.node_id, nr.status, nr.in_degree, nr.join_any, 0, nr.active_in, true, nr.output,
           nr.error, nr.port, nr.model, nr.prompt, nr.queued_at, nr.started_at, nr.finished_at,
           nr.children_total, nr.children_done, nr.children_started
      FROM new_run, node_runs nr
     WHERE nr.run_id = :source AND nr.node_id = ANY(CAST(:reused AS text[]))
     ORDER BY nr.id
    RETURNING node_runs.id
), frontier_nodes AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, settled, queued_at)
    SELECT new_run.id, frontier.node_id, frontier.status, frontier.deg, frontier.join_any, frontier.pending,
           frontier.act, frontier.settled, now()
      FROM new_run, unnest(CAST(:f_ids AS text[]), CAST(:f_status AS text[]), CAST(:f_deg AS int[]),
                           CAST(:f_any AS boolean[]), CAST(:f_pending AS int[]), CAST(:f_act AS int[]),
                           CAST(:f_settled AS boolean[]))
           AS frontier(node_id, status, deg, join_any, pending, act, settled)
     ORDER BY frontier.node_id
), queued_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT new_run.id, 'run.queued', NULL, CAST(:event_data AS jsonb) FROM new_run
)
SELECT new_run.id, (SELECT count(*) FROM reused_nodes) AS reused FROM new_run
""")

RERUNS_OF = Statement("The newest reruns of a run (at most :limit ids), newest first.", """
SELECT r.id FROM runs r WHERE r.source_run_id = :run AND r.space_id = :space
 ORDER BY r.created_at DESC, r.id DESC LIMIT :limit""")

LIST_RERUNS = Statement("A source run's reruns, newest first, optionally of a status, older than a cursor.", """
SELECT id, workflow_id, version, status, error, created_at, started_at, finished_at,
       input_tokens, output_tokens, run_mode, parent_run_id, parent_node_id, item_index, source_run_id, rerun_from
  FROM runs r
 WHERE r.source_run_id = :source AND r.space_id = :space
   AND (CAST(:status AS text) IS NULL OR r.status = :status)
   AND (CAST(:b_at AS timestamptz) IS NULL OR (r.created_at, r.id) < (CAST(:b_at AS timestamptz), CAST(:b_id AS uuid)))
 ORDER BY r.created_at DESC, r.id DESC LIMIT :limit""")

# Bounded (:limit), oldest first, top-level runs only. With a bulk :key_prefix, a source that a bulk
# call of the same range already reran (its key taken in the space) is left out unless :again.
BULK_SOURCES = Statement(
    "Ended top-level runs of a workflow with a status, created in a range, a bulk rerun's candidates, oldest first.", """
SELECT r.id, r.version_id, r.status, r.error, r.created_at FROM runs r
 WHERE r.space_id = :space AND r.workflow_id = :wf AND r.parent_run_id IS NULL
   AND r.status = ANY(CAST(:statuses AS text[]))
   AND r.created_at >= :since AND r.created_at < :until
   AND (CAST(:again AS boolean) OR NOT EXISTS (
        SELECT 1 FROM runs c WHERE c.space_id = :space AND c.idempotency_key = :key_prefix || CAST(r.id AS text)))
 ORDER BY r.created_at, r.id LIMIT :limit""")
