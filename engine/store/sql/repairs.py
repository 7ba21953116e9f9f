"""SQL of leases and of the reconciler's sweep: what repairs runs whose workers or messages were lost.

Run by one leader at a time (TRY_LEAD); each statement is atomic on its own.
"""
from __future__ import annotations

from engine.store.sql import Statement
from engine.store.sql.runs import RUN_LOCK_UNDER_WAY

TRY_LEAD = Statement("Take the reconciler's transaction-scoped advisory lock (one leader at a time).",
                     "SELECT pg_try_advisory_xact_lock(:k)")

RENEW_LEASES = Statement("Extend the leases of the running nodes this process still runs.", """
UPDATE node_runs SET lease_expires_at = now() + make_interval(secs => :lease_s)
 WHERE id = ANY(CAST(:ids AS bigint[])) AND node_runs.status = 'running'
""")

EXPIRED_LEASES = Statement("Running nodes of live runs whose worker stopped renewing the lease, oldest first.", """
SELECT n.id, n.run_id, n.node_id, n.epoch, n.crashes, n.attempts, r.version_id, r.body, r.space_id
  FROM runs r JOIN node_runs n ON n.run_id = r.id
 WHERE r.status IN ('queued', 'running', 'interrupted')
   AND n.status = 'running' AND n.lease_expires_at < now()
 ORDER BY n.lease_expires_at LIMIT :limit""")

REQUEUE_CRASHED = Statement(
    "Put a crashed node (lease expired, epoch unchanged) back in the queue and record node.crashed.", f"""
WITH {RUN_LOCK_UNDER_WAY}, requeued_node AS (
    UPDATE node_runs n
       SET status = 'queued', crashes = n.crashes + 1, queued_at = now(), lease_expires_at = NULL,
           attempt_log = n.attempt_log || CAST(:log AS jsonb)
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running' AND n.lease_expires_at < now()
    RETURNING n.id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.crashed', :node, CAST(:log AS jsonb) -> 0 FROM requeued_node
RETURNING id
""")

STALE_QUEUED = Statement(
    "Claimable nodes of live runs whose message looks lost (not waitlisted); marks them re-sent now.", """
UPDATE node_runs SET queued_at = now(),
       -- a re-sent node that was never attempted leaves the unclaimed path (sql/unclaimed.py): if
       -- its executions kill their worker, the claim counts the crashes
       epoch = CASE WHEN node_runs.attempts = 0 THEN node_runs.epoch + 1 ELSE node_runs.epoch END
 WHERE id IN (SELECT n.id FROM runs r JOIN node_runs n ON n.run_id = r.id
               WHERE r.status IN ('queued', 'running', 'interrupted')
                 AND n.status IN ('queued', 'retrying')
                 AND n.queued_at < now() - make_interval(secs => :age)
                 -- a node on its space's waitlist is not lost: a freed slot wakes it
                 AND NOT EXISTS (SELECT 1 FROM space_waiters w WHERE w.node_row_id = n.id)
               ORDER BY n.queued_at LIMIT :limit FOR UPDATE OF n SKIP LOCKED)
RETURNING run_id, node_id, status""")

UNSETTLED_SKIPS = Statement("Skipped nodes whose successors were never signalled (the deciding worker died).", """
SELECT n.run_id, n.node_id, r.version_id, r.body FROM runs r JOIN node_runs n ON n.run_id = r.id
 WHERE r.status IN ('running', 'interrupted') AND n.status = 'skipped' AND NOT n.settled
   AND n.queued_at < now() - make_interval(secs => :age)
 LIMIT :limit""")

UNFINISHED_RUNS = Statement("Running runs whose nodes are all decided but that were never marked finished.", """
SELECT id, version_id, body FROM runs
 WHERE runs.status = 'running' AND remaining <= 0 AND updated_at < now() - make_interval(secs => :age)
 LIMIT :limit""")

OVERDUE_RUNS = Statement("Live runs past their deadline.", """
SELECT id FROM runs WHERE runs.status IN ('queued', 'running', 'interrupted') AND deadline_at < now()
 LIMIT :limit""")

# Composite nodes. A child's end queues its parent node in the same statement, so these repair
# only what a crash or a slow attempt leaves: a child that ended before its parent was parked
# (its messages were re-sent as lost while the parent's attempt was still running), and live
# children of an attempt that is over (it crashed after inserting them, or was superseded).
UNWOKEN_PARENTS = Statement(
    "Delegated nodes of live runs with no live child of their attempt left (a child ended before the park).", """
SELECT n.run_id, n.node_id, r.space_id FROM runs r JOIN node_runs n ON n.run_id = r.id
 WHERE r.status IN ('running', 'interrupted') AND n.status = 'delegated'
   AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = n.run_id AND c.parent_node_id = n.node_id
                      AND c.parent_epoch = n.epoch AND c.status IN ('queued', 'running', 'interrupted'))
 LIMIT :limit""")

WAKE_PARENT = Statement(
    "Queue a delegated node whose children of its attempt all ended, with the outcome of the last to end.", f"""
WITH {RUN_LOCK_UNDER_WAY}, last_child AS (
    SELECT c.id, c.status, c.outputs, c.error FROM run_lock, node_runs n JOIN runs c
        ON c.parent_run_id = n.run_id AND c.parent_node_id = n.node_id AND c.parent_epoch = n.epoch
     WHERE n.run_id = run_lock.id AND n.node_id = :node AND n.status = 'delegated'
       AND NOT EXISTS (SELECT 1 FROM runs l WHERE l.parent_run_id = n.run_id AND l.parent_node_id = n.node_id
                          AND l.parent_epoch = n.epoch AND l.status IN ('queued', 'running', 'interrupted'))
     ORDER BY c.finished_at DESC NULLS LAST, c.id LIMIT 1
), woken_node AS (
    UPDATE node_runs n
       SET status = 'queued', queued_at = now(), children_done = n.children_total,
           resume = coalesce(n.resume, '{{}}'::jsonb)
                    || jsonb_build_object('child_run_id', last_child.id, 'status', last_child.status,
                                          'outputs', last_child.outputs, 'error', last_child.error)
      FROM last_child WHERE n.run_id = :run AND n.node_id = :node AND n.status = 'delegated'
    RETURNING n.node_id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.woken', woken_node.node_id, NULL FROM woken_node
RETURNING id
""")

# Per parent attempt, not per child: `live_attempt` skips through ix_runs_live_children (one index
# probe per attempt with live children, however many items it has), and only the children of
# attempts that are over are read.
ORPHANED_CHILDREN = Statement(
    "Live child runs whose parent node's attempt no longer waits for them (it crashed, was superseded or ended).", """
WITH RECURSIVE live_attempt AS (
    (SELECT c.parent_run_id, c.parent_node_id, c.parent_epoch FROM runs c
      WHERE c.parent_run_id IS NOT NULL AND c.status IN ('queued', 'running', 'interrupted')
      ORDER BY c.parent_run_id, c.parent_node_id, c.parent_epoch LIMIT 1)
    UNION ALL
    SELECT next_attempt.* FROM live_attempt CROSS JOIN LATERAL (
        SELECT c.parent_run_id, c.parent_node_id, c.parent_epoch FROM runs c
         WHERE c.parent_run_id IS NOT NULL AND c.status IN ('queued', 'running', 'interrupted')
           AND (c.parent_run_id, c.parent_node_id, c.parent_epoch)
               > (live_attempt.parent_run_id, live_attempt.parent_node_id, live_attempt.parent_epoch)
         ORDER BY c.parent_run_id, c.parent_node_id, c.parent_epoch LIMIT 1) next_attempt
), over_attempt AS MATERIALIZED (
    -- LATERAL ... LIMIT 1: one index probe per attempt (a plain join is planned as a hash join
    -- over every node row)
    SELECT live_attempt.* FROM live_attempt CROSS JOIN LATERAL (
        SELECT n.epoch <> live_attempt.parent_epoch OR (n.status <> 'running' AND n.status <> 'delegated') AS attempt_over
          FROM node_runs n
         WHERE n.run_id = live_attempt.parent_run_id AND n.node_id = live_attempt.parent_node_id LIMIT 1) parent_node
     WHERE parent_node.attempt_over
)
SELECT c.id, c.parent_run_id, c.parent_node_id, c.parent_epoch FROM over_attempt JOIN runs c
    ON c.parent_run_id = over_attempt.parent_run_id AND c.parent_node_id = over_attempt.parent_node_id
   AND c.parent_epoch = over_attempt.parent_epoch
 WHERE c.status IN ('queued', 'running', 'interrupted') AND c.created_at < now() - make_interval(secs => :age)
 LIMIT :limit""")
