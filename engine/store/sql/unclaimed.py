"""SQL of the unclaimed path: a node of a pure type (engine/nodes/base.py `NodeType.pure`) is read
without a lock, executed, and committed only if it is still the untouched queued node it was.

Why it keeps every guarantee of the claim: the commit is fenced on the node's row being `queued`
at epoch 0 with no attempt (nobody claimed it, and the reconciler did not re-send it: a re-send
moves the epoch, repairs.STALE_QUEUED), under the run's row lock, so of two executions of one
node exactly one commits and signals its successors, as with a claim. A worker that dies while
executing leaves the node `queued`: its message is redelivered, or the reconciler re-sends it,
and from then on it takes the claiming path, where crashes are counted. What it saves per node
is the claim's write: the run's row lock, the node's `running` update, the separate
`node.started` event and their transaction (docs/benchmarks.md, "The unclaimed path").
"""
from __future__ import annotations

from engine.store.sql import Statement
from engine.store.sql.runs import DECISION, SIGNALS, UPSERT_SUCCESSORS

# What the claim returns, read from the latest committed rows without taking anything. A node
# that is never `running` is not counted into its space's running nodes, so in a capped space an
# author's slow templates could run beside its cap, as many at once as there are worker threads,
# and starve the other spaces. So in a capped space (its own `max_running_nodes`, else the
# workers' :cap, above 0) a node is taken only while the space has room (`running_nodes`, read,
# not locked), and only when the workers give such nodes a budget (:budgeted): past it the worker
# stops the execution and claims the node, which then counts (engine/executor.py). What a capped
# space can run beside its cap is bounded by worker threads x that budget, once per time it has room.
PEEK_UNCLAIMED = Statement(
    "Read a never-attempted queued node of a live run and what it needs, without claiming it.", """
SELECT n.id, n.epoch, r.version_id, r.body, r.deadline_at, r.space_id, now() AS read_at,
       coalesce(s.max_running_nodes, :cap) > 0 AS capped,
       CASE WHEN wn.needs_inputs THEN r.inputs END AS inputs,
       CASE WHEN r.rerun_from = :node THEN r.overrides END AS overrides,
       (SELECT jsonb_object_agg(d.node_id, d.output) FROM node_runs d
         WHERE d.run_id = r.id AND d.node_id = ANY(wn.deps)) AS deps
  FROM runs r JOIN node_runs n ON n.run_id = r.id AND n.node_id = :node
  JOIN spaces s ON s.id = r.space_id
  LEFT JOIN workflow_nodes wn ON wn.version_id = r.version_id AND wn.body = r.body AND wn.node_id = :node
 WHERE r.id = :run AND r.status IN ('queued', 'running', 'interrupted')
   AND n.status = 'queued' AND n.epoch = 0 AND n.attempts = 0 AND n.resume IS NULL
   AND NOT EXISTS (SELECT 1 FROM space_waiters w WHERE w.node_row_id = n.id)
   AND (coalesce(s.max_running_nodes, :cap) <= 0
        OR (CAST(:budgeted AS boolean) AND s.running_nodes < coalesce(s.max_running_nodes, :cap)))
""")

# COMMIT_NODE for a node nobody claimed: its attempt starts and ends here (attempt 1, epoch 1),
# `node.started` and `node.succeeded` are recorded together, and a queued run starts (`run.started`).
COMMIT_UNCLAIMED = Statement(
    "Store an unclaimed pure node's outputs if it is still untouched, signal its successors, count it, record events.",
    f"""
WITH run_lock AS MATERIALIZED (
    SELECT id, runs.status = 'queued' AS starting FROM runs
     WHERE id = :run AND runs.status IN ('queued', 'running', 'interrupted') FOR UPDATE
), decided_node AS (
    UPDATE node_runs n
       SET status = 'succeeded', output = CAST(:output AS jsonb), port = :port, attempts = 1, epoch = 1,
           started_at = CAST(:started_at AS timestamptz), finished_at = now(), settled = true,
           worker = CAST(:worker AS text), counted = false
      FROM run_lock WHERE n.id = :nid AND n.status = 'queued' AND n.epoch = 0 AND n.attempts = 0
    RETURNING n.id
), unwaitlisted AS (
    DELETE FROM space_waiters w USING decided_node WHERE w.node_row_id = decided_node.id
), {SIGNALS}, {UPSERT_SUCCESSORS.format(gate=", decided_node")}, node_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'run.started', NULL, NULL FROM run_lock, decided_node WHERE run_lock.starting
    UNION ALL
    SELECT :run, 'node.started', :node, jsonb_build_object('attempt', 1) FROM decided_node
    UNION ALL
    SELECT :run, 'node.succeeded', :node, CAST(:event_data AS jsonb) FROM decided_node
    UNION ALL
    SELECT :run, 'node.skipped', signalled_successors.node_id, NULL FROM signalled_successors
     WHERE signalled_successors.status = 'skipped'
), run_progress AS (
    UPDATE runs SET status = CASE WHEN run_lock.starting THEN 'running' ELSE runs.status END,
                    started_at = CASE WHEN run_lock.starting THEN now() ELSE runs.started_at END,
                    updated_at = now(),
                    remaining = runs.remaining - 1
                                - (SELECT count(*) FROM signalled_successors WHERE signalled_successors.status = 'skipped')
      FROM decided_node, run_lock WHERE runs.id = :run
    RETURNING runs.remaining
){DECISION},
       EXISTS (SELECT 1 FROM run_lock, decided_node WHERE run_lock.starting) AS run_started
""")
