"""SQL of the worker registry (heartbeats) and of a run's diagnosis ("why is it stuck").

Every diagnosis read is by one run id and bounded (the run's own node rows, a few live children
per composite node, its pending interrupts); the registry is one row per worker process.
"""
from __future__ import annotations

from engine.store.sql import Statement

# The registration and the heartbeat are one statement: a worker whose row was purged (it was
# silent for a day, then woke) registers again on its next beat.
BEAT_WORKER = Statement("Register a worker process, or refresh its heartbeat and queues.", """
INSERT INTO workers (id, host, pid, queues) VALUES (:id, :host, :pid, CAST(:queues AS text[]))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), queues = EXCLUDED.queues
""")

DROP_WORKER = Statement("Remove a worker process's row (it stopped cleanly).", "DELETE FROM workers WHERE id = :id")

PURGE_WORKERS = Statement("Remove the rows of workers silent for longer than :age_s (long dead).", """
DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => :age_s)
""")

LIVE_WORKERS = Statement("Workers whose heartbeat is fresher than :stale_s, newest first (bounded).", """
SELECT id, host, pid, queues, started_at, heartbeat_at FROM workers
 WHERE heartbeat_at >= now() - make_interval(secs => :stale_s)
 ORDER BY started_at DESC, id LIMIT :limit""")

# `db_now` is the database's clock: every other time here is the database's too.
RUN_FACTS = Statement(
    "A run of a space (NULL: any) with its space's cap and the live workers (all, and those consuming :queue).", """
SELECT r.id, r.status, r.space_id, r.version_id, r.body, r.created_at, r.started_at, r.finished_at,
       r.deadline_at, r.parent_run_id, r.parent_node_id, now() AS db_now,
       s.max_running_nodes, coalesce(s.running_nodes, 0) AS running_nodes,
       (SELECT count(*) FROM workers w WHERE w.heartbeat_at >= now() - make_interval(secs => :stale_s)) AS live_workers,
       (SELECT count(*) FROM workers w WHERE w.heartbeat_at >= now() - make_interval(secs => :stale_s)
           AND CAST(:queue AS text) = ANY(w.queues)) AS queue_workers
  FROM runs r LEFT JOIN spaces s ON s.id = r.space_id
 WHERE r.id = :run AND (CAST(:space AS text) IS NULL OR r.space_id = :space)""")

NODE_FACTS = Statement(
    "A run's node rows with their worker's heartbeat and whether the space's waitlist holds them.", """
SELECT n.node_id, n.status, n.attempts, n.crashes, n.error, n.lease_expires_at, n.next_attempt_at,
       n.queued_at, n.started_at, n.worker, n.attempt_log -> -1 AS last_failure,
       n.children_total, n.children_done, n.children_started,
       w.heartbeat_at AS worker_heartbeat_at,
       EXISTS (SELECT 1 FROM space_waiters sw WHERE sw.node_row_id = n.id) AS waitlisted
  FROM node_runs n LEFT JOIN workers w ON w.id = n.worker
 WHERE n.run_id = :run ORDER BY n.id LIMIT :limit""")

PENDING_ASKS = Statement("A run's unanswered interrupts, oldest first (bounded).", """
SELECT i.event_id, i.node_id, i.type, i.created_at FROM run_interrupts i
 WHERE i.run_id = :run AND i.status = 'pending' ORDER BY i.created_at, i.event_id LIMIT :limit""")

# LATERAL ... LIMIT: a batch of 10,000 items reads :per_node of them, lowest item first (the
# started ones: a batch starts items in order).
LIVE_CHILDREN = Statement("The first :per_node live child runs of each composite node of a run that waits for them.", """
SELECT n.node_id, live_child.id, live_child.status, live_child.item_index, live_child.started_at
  FROM node_runs n CROSS JOIN LATERAL (
       SELECT c.id, c.status, c.item_index, c.started_at FROM runs c
        WHERE c.parent_run_id = n.run_id AND c.parent_node_id = n.node_id AND c.parent_epoch = n.epoch
          AND c.status IN ('queued', 'running', 'interrupted')
        ORDER BY c.item_index LIMIT :per_node) live_child
 WHERE n.run_id = :run AND n.status = 'delegated'
 ORDER BY n.node_id, live_child.item_index""")
