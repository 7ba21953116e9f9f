"""SQL of retention: picking ended top-level runs past their space's retention, and deleting them whole.

A run is deleted as a tree: the top-level run, its child runs at every depth (`parent_run_id`
chains: sub-workflow, batch and loop bodies), and every row of each (node_runs, run_events,
run_interrupts, space_waiters). Only trees whose every run has ended are deleted; one statement
per batch, so a batch is all gone or all there. Runs elsewhere that name a deleted run (a
rerun's `source_run_id`) keep their text: nothing references runs by foreign key but these rows.
"""
from __future__ import annotations

from engine.store.sql import Statement

TRY_LEAD = Statement("Take the retention sweep's transaction-scoped advisory lock (one sweeper at a time).",
                     "SELECT pg_try_advisory_xact_lock(:k)")

# A space's cutoff: now - its retention (its own, else the deployment's); a retention of 0 keeps
# its runs forever, so the space is not read at all.
_EXPIRED_ROOTS = """
expired_roots AS (
    SELECT picked.id, picked.finished_at FROM spaces s CROSS JOIN LATERAL (
        SELECT r.id, r.finished_at FROM runs r
         WHERE r.space_id = s.id AND r.parent_run_id IS NULL
           AND r.status IN ('succeeded', 'failed', 'cancelled')
           AND r.finished_at < now() - make_interval(secs => COALESCE(s.retention_days, :default_days) * 86400)
         ORDER BY r.finished_at LIMIT :batch) picked
     WHERE COALESCE(s.retention_days, :default_days) > 0
     ORDER BY picked.finished_at LIMIT :batch
)"""

DELETE_EXPIRED_BATCH = Statement(
    "Delete the oldest `batch` expired run trees (no live run in them) with all their rows; counts what went.", f"""
WITH RECURSIVE {_EXPIRED_ROOTS}, locked_roots AS (
    -- re-checked under the row lock; a root another sweeper holds is skipped, not waited for
    SELECT r.id FROM runs r
     WHERE r.id IN (SELECT id FROM expired_roots) AND r.parent_run_id IS NULL
       AND r.status IN ('succeeded', 'failed', 'cancelled')
     FOR UPDATE OF r SKIP LOCKED
), run_tree AS (
    SELECT id, id AS root_id FROM locked_roots
    UNION ALL
    SELECT c.id, run_tree.root_id FROM runs c JOIN run_tree ON c.parent_run_id = run_tree.id
), doomed_runs AS (
    -- a tree with any live run (an orphan the reconciler has not cancelled yet) waits; one array,
    -- so each delete below probes its table's run_id index once per run (an array of unknown
    -- length plans as index probes, where a CTE's rows could plan as a scan of the table)
    SELECT array_agg(tree.id) AS ids FROM run_tree tree
     WHERE NOT EXISTS (SELECT 1 FROM run_tree live JOIN runs c ON c.id = live.id
                        WHERE live.root_id = tree.root_id AND c.status IN ('queued', 'running', 'interrupted'))
), deleted_events AS (
    DELETE FROM run_events e WHERE e.run_id = ANY(CAST((SELECT ids FROM doomed_runs) AS uuid[])) RETURNING 1
), deleted_interrupts AS (
    DELETE FROM run_interrupts i WHERE i.run_id = ANY(CAST((SELECT ids FROM doomed_runs) AS uuid[])) RETURNING 1
), deleted_nodes AS (
    DELETE FROM node_runs n WHERE n.run_id = ANY(CAST((SELECT ids FROM doomed_runs) AS uuid[])) RETURNING n.id
), deleted_waiters AS (
    DELETE FROM space_waiters w WHERE w.node_row_id IN (SELECT id FROM deleted_nodes) RETURNING 1
), deleted_runs AS (
    DELETE FROM runs r WHERE r.id = ANY(CAST((SELECT ids FROM doomed_runs) AS uuid[])) RETURNING r.parent_run_id
)
SELECT (SELECT count(*) FROM expired_roots) AS picked,
       (SELECT count(*) FROM deleted_runs WHERE parent_run_id IS NULL) AS roots,
       (SELECT count(*) FROM deleted_runs) AS runs,
       (SELECT count(*) FROM deleted_nodes) AS nodes,
       (SELECT count(*) FROM deleted_events) AS events,
       (SELECT count(*) FROM deleted_interrupts) AS interrupts,
       (SELECT count(*) FROM deleted_waiters) AS waiters""")

COUNT_EXPIRED = Statement(
    "What a full sweep would delete now, at most (trees with a live run are counted but kept).", f"""
WITH RECURSIVE {_EXPIRED_ROOTS.replace("LIMIT :batch", "LIMIT ALL")}, run_tree AS (
    SELECT id FROM expired_roots
    UNION ALL
    SELECT c.id FROM runs c JOIN run_tree ON c.parent_run_id = run_tree.id
)
SELECT (SELECT count(*) FROM expired_roots) AS roots,
       (SELECT count(*) FROM run_tree) AS runs,
       (SELECT count(*) FROM node_runs n WHERE n.run_id IN (SELECT id FROM run_tree)) AS nodes,
       (SELECT count(*) FROM run_events e WHERE e.run_id IN (SELECT id FROM run_tree)) AS events,
       (SELECT count(*) FROM run_interrupts i WHERE i.run_id IN (SELECT id FROM run_tree)) AS interrupts""")

SPACE_RETENTIONS = Statement("Every space with its own retention in days (NULL: the deployment's default).",
                             "SELECT id, retention_days FROM spaces ORDER BY id")

SET_SPACE_RETENTION = Statement("Set a space's retention in days (NULL: the deployment's default; 0: forever).",
                                "UPDATE spaces SET retention_days = :days WHERE id = :id")
