"""SQL of the read side: runs and their nodes as clients see them, run lists, events, health."""
from __future__ import annotations

from engine.store.sql import Statement

# A poll in one round trip: the node rows as one json array (their timestamps come back as ISO
# text; engine/store/views.py turns them back), the pending interrupt and the newest reruns beside.
# json_agg, not jsonb_agg(to_jsonb(...)): the array is only sent, never queried, and building it
# as text skipped the conversion to jsonb that was half the statement's time.
POLL_RUN = Statement(
    "A run of a space (NULL space: any) with its node rows, oldest pending interrupt and newest reruns (a poll).", """
SELECT r.id, r.space_id, r.workflow_id, r.version_id, r.version, r.status, r.inputs, r.outputs, r.error,
       r.input_tokens, r.output_tokens, r.cost, r.created_at, r.started_at, r.finished_at, r.updated_at,
       r.idempotency_key, r.run_mode, r.parent_run_id, r.parent_node_id, r.depth, r.body, r.item_index,
       r.source_run_id, r.rerun_from,
       (SELECT json_agg(nr ORDER BY nr.id) FROM (
            SELECT n.id, n.node_id, n.status, n.attempts, n.crashes, n.error, n.output, n.port, n.attempt_log,
                   n.started_at, n.finished_at, n.model, n.usage, n.cost, n.children_total, n.children_done,
                   n.children_started, n.prompt, n.worker, n.queued_at
              FROM node_runs n WHERE n.run_id = r.id) nr) AS nodes,
       (SELECT jsonb_build_object('event_id', i.event_id, 'node_id', i.node_id, 'type', i.type, 'data', i.data)
          FROM run_interrupts i
         WHERE r.status = 'interrupted' AND i.run_id = r.id AND i.status = 'pending'
         ORDER BY i.created_at, i.event_id LIMIT 1) AS interrupt,
       ARRAY(SELECT c.id FROM runs c WHERE c.source_run_id = r.id AND c.space_id = r.space_id
              ORDER BY c.created_at DESC, c.id DESC LIMIT :reruns) AS reruns
  FROM runs r WHERE r.id = :id AND (CAST(:space AS text) IS NULL OR r.space_id = :space)""")

LIST_RUNS = Statement(
    "Runs of a space, newest first, optionally of one workflow, status or parent run, older than a cursor.", """
SELECT id, workflow_id, version, status, error, created_at, started_at, finished_at,
       input_tokens, output_tokens, cost, run_mode, parent_run_id, parent_node_id, item_index, source_run_id, rerun_from
  FROM runs
 WHERE space_id = :space
   AND (CAST(:wf AS text) IS NULL OR workflow_id = :wf)
   -- without a parent: the runs clients submitted (a batch's thousands of items are listed by parent)
   AND (CASE WHEN CAST(:parent AS uuid) IS NULL THEN parent_run_id IS NULL
             ELSE parent_run_id = CAST(:parent AS uuid) END)
   AND (CAST(:pnode AS text) IS NULL OR parent_node_id = :pnode)
   AND (CAST(:status AS text) IS NULL OR runs.status = :status)
   AND (CAST(:b_at AS timestamptz) IS NULL OR (created_at, id) < (CAST(:b_at AS timestamptz), CAST(:b_id AS uuid)))
 ORDER BY created_at DESC, id DESC LIMIT :limit""")

# No index serves a substring of the inputs: the search walks ix_runs_space_created newest first
# over at most :scan top-level runs of the range (each one's inputs read and matched), so its cost
# is bounded whatever the space's size. The caller pages on: the next page starts where the scan
# stopped. `matches` are the hits; the row with `hit = false` is the oldest run scanned.
SEARCH_RUNS = Statement(
    "Top-level runs whose inputs contain a text, among the :scan newest of a range older than a cursor.", """
WITH scan_window AS (
    SELECT id, workflow_id, version, status, error, created_at, started_at, finished_at,
           input_tokens, output_tokens, cost, run_mode, parent_run_id, parent_node_id, item_index,
           source_run_id, rerun_from, inputs
      FROM runs
     WHERE space_id = :space AND parent_run_id IS NULL
       AND (CAST(:wf AS text) IS NULL OR workflow_id = :wf)
       AND (CAST(:status AS text) IS NULL OR runs.status = :status)
       AND (CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz))
       AND (CAST(:b_at AS timestamptz) IS NULL OR (created_at, id) < (CAST(:b_at AS timestamptz), CAST(:b_id AS uuid)))
     ORDER BY created_at DESC, id DESC LIMIT :scan
), matches AS (
    SELECT * FROM scan_window WHERE CAST(inputs AS text) ILIKE :pattern  -- backslash escapes % and _ (LIKE's default)
     ORDER BY created_at DESC, id DESC LIMIT :limit
), scan_end AS (
    SELECT * FROM scan_window ORDER BY created_at, id LIMIT 1
)
SELECT matches.*, true AS hit, (SELECT count(*) FROM scan_window) AS scanned FROM matches
UNION ALL
SELECT scan_end.*, false, (SELECT count(*) FROM scan_window) FROM scan_end""")

RUN_WAITS = Statement("When each question or form of a run was asked and answered (the timeline's waits).", """
SELECT node_id, created_at, answered_at FROM run_interrupts WHERE run_id = :id ORDER BY created_at""")

RUN_ANCESTRY = Statement("A run and its ancestors' workflows, from the top run down, with the run's depth.", """
WITH RECURSIVE chain AS (
    SELECT r.id, r.parent_run_id, r.workflow_id, r.depth, 0 AS up FROM runs r WHERE r.id = :run
    UNION ALL
    SELECT p.id, p.parent_run_id, p.workflow_id, p.depth, chain.up + 1 FROM runs p JOIN chain ON p.id = chain.parent_run_id
)
SELECT chain.id, chain.workflow_id, w.name, chain.depth FROM chain JOIN workflows w ON w.id = chain.workflow_id
 ORDER BY chain.up DESC""")

FIRST_CHILD_VERSION = Statement(
    "The workflow version of a node's first child run (a retry's child runs the version pinned by the first).", """
SELECT version_id FROM runs WHERE parent_run_id = :run AND parent_node_id = :node
 ORDER BY created_at, id LIMIT 1""")

CHILD_OUTCOMES = Statement(
    "Every child run of the composite-node attempt that started :child, in item order (gathered once, at the end).", """
SELECT c.item_index, c.id, c.status, c.outputs, c.error FROM runs c
 WHERE (c.parent_run_id, c.parent_node_id, c.parent_epoch) =
       (SELECT s.parent_run_id, s.parent_node_id, s.parent_epoch FROM runs s WHERE s.id = :child)
 ORDER BY c.item_index""")

# A loop node's attempt claims itself once per iteration (each claim a new epoch), and every epoch
# of a later attempt is higher: its iterations are the children from the attempt's first epoch on.
# The latest child of each index wins (a claim that crashed after inserting an iteration left one
# that never started). `marked`: a node among :marks (the body's `continue` nodes) succeeded in it.
LOOP_ITERATIONS = Statement(
    "The iterations of a loop node's attempt (children from epoch :first_epoch on), one per index, in order.", """
SELECT DISTINCT ON (c.item_index) c.item_index, c.id, c.status, c.outputs, c.error,
       EXISTS (SELECT 1 FROM node_runs nr WHERE nr.run_id = c.id AND nr.node_id = ANY(CAST(:marks AS text[]))
                  AND nr.status = 'succeeded') AS marked
  FROM runs c
 WHERE c.parent_run_id = :run AND c.parent_node_id = :node AND c.parent_epoch >= :first_epoch
 ORDER BY c.item_index, c.parent_epoch DESC""")

CHILD_EPOCH = Statement("The epoch of the parent node's attempt that started a child run.",
                        "SELECT parent_epoch FROM runs WHERE id = :child")

LIVE_STARTED_CHILDREN = Statement(
    "Live child runs of the attempt that started :child that have begun (a node of theirs left waiting).", """
SELECT c.id FROM runs c
 WHERE (c.parent_run_id, c.parent_node_id, c.parent_epoch) =
       (SELECT s.parent_run_id, s.parent_node_id, s.parent_epoch FROM runs s WHERE s.id = :child)
   AND c.status IN ('queued', 'running', 'interrupted')
   AND EXISTS (SELECT 1 FROM node_runs nr WHERE nr.run_id = c.id AND nr.status <> 'waiting')
 ORDER BY c.item_index""")

RUN_STATUS = Statement("Just a run's status (NULL space: any space).", """
SELECT status FROM runs WHERE id = :id AND (CAST(:space AS text) IS NULL OR space_id = :space)""")

EVENTS_AFTER = Statement("A run's events after an id, in order, paged.", """
SELECT id, type, node_id, data, created_at FROM run_events
 WHERE run_id = :run AND id > :after ORDER BY id LIMIT :limit""")

PENDING_INTERRUPTS = Statement("A run's unanswered interrupts, oldest first.", """
SELECT event_id, node_id, type, data, created_at FROM run_interrupts
 WHERE run_id = :run AND run_interrupts.status = 'pending' ORDER BY created_at, event_id""")

GET_INTERRUPT = Statement("One interrupt of a run, answered or not.", """
SELECT event_id, node_id, type, data, status, created_at FROM run_interrupts
 WHERE run_id = :run AND event_id = :event""")

LAST_EVENT_ID = Statement("The id of a run's newest event (0 if none).",
                          "SELECT coalesce(max(id), 0) FROM run_events WHERE run_id = :run")

PING = Statement("One round trip to prove the database answers.", "SELECT 1")

PENDING_COUNTS = Statement("In-flight nodes of live runs, counted by status (health).", """
SELECT n.status, count(*) AS n FROM runs r JOIN node_runs n ON n.run_id = r.id
 WHERE r.status IN ('queued', 'running', 'interrupted')
   AND n.status IN ('queued', 'retrying', 'running')
 GROUP BY n.status""")

RUN_STATUS_COUNTS = Statement(
    "Top-level runs of a space counted by status, optionally of one workflow and created in [:since, :until).", """
SELECT runs.status, count(*) AS n FROM runs
 WHERE space_id = :space AND parent_run_id IS NULL
   AND (CAST(:wf AS text) IS NULL OR workflow_id = :wf)
   AND (CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz))
   AND (CAST(:until AS timestamptz) IS NULL OR created_at < CAST(:until AS timestamptz))
 GROUP BY runs.status""")
