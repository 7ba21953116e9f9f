"""SQL of the run lifecycle's hot path. Each statement is one round trip and atomic on its own.

Lock order, everywhere: the run's row first (`run_lock`, FOR UPDATE, materialised so it is taken
before anything else), then node rows. Every statement that inserts run events holds the run's
row lock, so event ids are monotonic per run in commit order (the SSE id).
"""
from __future__ import annotations

from engine.store.sql import Statement

# The run's row, locked, if the run is under way (statuses.UNDER_WAY_STATUSES). A run waiting for
# a person (`interrupted`) is still live: its other branches go on.
RUN_LOCK_UNDER_WAY = ("run_lock AS MATERIALIZED (SELECT id, space_id FROM runs WHERE id = :run "
                       "AND runs.status IN ('running', 'interrupted') FOR UPDATE)")

# Child runs (composite nodes). Lock order between runs: an ancestor's row before a descendant's,
# everywhere. A child's final statement locks its parent run's row first (`parent_lock`; the
# run's own lock waits for it through a one-time filter, so the order is fixed), and a statement
# that ends a run locks its live descendants after it, top-down (by depth, then id). No
# statement takes a parent's row while holding its child's, so ending runs cannot deadlock.
_PARENT_LOCK = """
parent_lock AS MATERIALIZED (
    SELECT r.id FROM runs r WHERE r.id = (SELECT c.parent_run_id FROM runs c WHERE c.id = :run)
       AND r.status IN ('running', 'interrupted') FOR UPDATE
)"""
_AFTER_PARENT = "(SELECT count(*) FROM parent_lock) >= 0"  # an InitPlan: parent_lock is taken first

# The child run `{ended}` ended: its parent node, if still delegated at the epoch that started
# the child, counts it (O(1): a counter). If children are left to start (a batch runs at most
# `concurrency` at once), the next one starts here: its root nodes, inserted `waiting`, become
# `queued` (`next_child_roots`; the caller sends them). `children_started` counts the turns
# given, and is where the search for the next child begins. When it was the last child, or the first
# that did not succeed under fail-fast, the parent goes back to the queue carrying :outcome (the
# child's outputs or error); its next claim is the same attempt and commits (or fails) like any
# node. A child of an older attempt, or of a parent run that ended, decides nothing. The parent's
# event is `node.progress` (done/total) or, when it wakes, `node.woken`.
_WAKE_PARENT = """
ended_child_started AS MATERIALIZED (
    -- (a run without a parent skips the lookup)
    SELECT EXISTS (SELECT 1 FROM node_runs d, {ended}
                    WHERE {ended}.parent_run_id IS NOT NULL AND d.run_id = {ended}.id AND d.status <> 'waiting') AS yes
), woken_parent AS (
    UPDATE node_runs n
       SET children_done = n.children_done + 1, queued_at = now(), cost = n.cost + {ended}.cost,
           -- a turn is given only for a child that had started (a child cancelled before its
           -- turn held no place)
           children_started = n.children_started + CASE
               WHEN n.children_done + 1 >= n.children_total
                    OR (n.children_fail_fast AND CAST(:child_failed AS boolean)) THEN 0
               WHEN n.children_started < n.children_total AND ended_child_started.yes THEN 1 ELSE 0 END,
           status = CASE WHEN n.children_done + 1 >= n.children_total
                              OR (n.children_fail_fast AND CAST(:child_failed AS boolean))
                         THEN 'queued' ELSE n.status END,
           -- merged into what the node kept while it waited (a loop's state; NULL for the others)
           resume = CASE WHEN n.children_done + 1 >= n.children_total
                              OR (n.children_fail_fast AND CAST(:child_failed AS boolean))
                         THEN coalesce(n.resume, '{{}}'::jsonb) || CAST(:outcome AS jsonb) ELSE n.resume END
      FROM {ended}, parent_lock, ended_child_started
     WHERE parent_lock.id = {ended}.parent_run_id AND n.run_id = {ended}.parent_run_id
       AND n.node_id = {ended}.parent_node_id AND n.epoch = {ended}.parent_epoch AND n.status = 'delegated'
    RETURNING n.run_id, n.node_id, n.status, n.epoch, n.children_started, n.children_done, n.children_total
), parent_cost AS (
    -- what the child spent counts in its parent run's cost too (its tokens stay its own)
    UPDATE runs SET cost = runs.cost + {ended}.cost
      FROM {ended}, woken_parent WHERE runs.id = woken_parent.run_id AND {ended}.cost > 0
), next_child AS (
    -- the lowest-numbered child not started yet (every node a `waiting` root), from the counter
    -- on (O(1): an index range scan that stops at the first hit), if the child that ended had
    -- started (one leaves, one comes: at most `concurrency` run; a child cancelled before it
    -- started frees no place). A child cancelled on its own before its turn is skipped.
    SELECT c.id, c.version_id, c.body FROM woken_parent, runs c
     WHERE woken_parent.status = 'delegated' AND c.parent_run_id = woken_parent.run_id
       AND c.parent_node_id = woken_parent.node_id AND c.parent_epoch = woken_parent.epoch
       AND c.item_index >= woken_parent.children_started - 1 AND c.status = 'queued'
       AND NOT EXISTS (SELECT 1 FROM node_runs d WHERE d.run_id = c.id AND d.status <> 'waiting')
       AND (SELECT ended_child_started.yes FROM ended_child_started)
     ORDER BY c.item_index LIMIT 1
), next_child_roots AS (
    UPDATE node_runs nr SET status = 'queued', queued_at = now()
      FROM next_child WHERE nr.run_id = next_child.id AND nr.status = 'waiting' AND nr.in_degree = 0
    RETURNING nr.run_id, nr.node_id, next_child.version_id, next_child.body
), parent_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT woken_parent.run_id, CASE WHEN woken_parent.status = 'queued' THEN 'node.woken' ELSE 'node.progress' END,
           woken_parent.node_id,
           CAST(:child_event AS jsonb) || jsonb_build_object('done', woken_parent.children_done,
                                                             'total', woken_parent.children_total)
      FROM woken_parent
)"""

_WOKEN = ("(SELECT woken_parent.run_id FROM woken_parent WHERE woken_parent.status = 'queued') AS parent_run_id, "
          "(SELECT woken_parent.node_id FROM woken_parent WHERE woken_parent.status = 'queued') AS parent_node_id, "
          "(SELECT jsonb_agg(jsonb_build_array(next_child_roots.run_id, next_child_roots.node_id, "
          "next_child_roots.version_id, next_child_roots.body)) "
          "FROM next_child_roots) AS started, "
          # the parent run whose node counted this end (woken or not): its followers are told
          "(SELECT woken_parent.run_id FROM woken_parent) AS counted_run_id")

# The live descendants of the run `{ended}` are cancelled with it, in the same statement: locked
# top-down, their live nodes cancelled, their unreached nodes given a cancelled row, an event each.
_CANCEL_DESCENDANTS = """
descendant_tree AS (
    SELECT r.id, 1 AS depth FROM runs r, {ended} WHERE r.parent_run_id = {ended}.id
    UNION ALL
    SELECT r.id, descendant_tree.depth + 1 FROM runs r JOIN descendant_tree ON r.parent_run_id = descendant_tree.id
), descendant_lock AS MATERIALIZED (
    SELECT r.id FROM runs r JOIN descendant_tree t ON t.id = r.id
     WHERE r.status IN ('queued', 'running', 'interrupted') ORDER BY t.depth, r.id FOR UPDATE OF r
), cancelled_descendants AS (
    UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now()
      FROM descendant_lock WHERE runs.id = descendant_lock.id
    RETURNING runs.id, runs.version_id, runs.body
), cancelled_descendant_nodes AS (
    UPDATE node_runs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
      FROM cancelled_descendants WHERE node_runs.run_id = cancelled_descendants.id
       AND node_runs.status IN ('waiting', 'queued', 'retrying', 'running', 'interrupted', 'delegated')
    RETURNING 1
), descendant_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT cancelled_descendants.id, 'run.cancelled', NULL, NULL FROM cancelled_descendants
)"""

# A submit in one round trip: the idempotency check, the run, its roots and its event. :latest
# says the caller validated the inputs against what it cached as the workflow's latest version
# (:version): if another process stored a newer one since, nothing is inserted and `stale` says
# so (the caller re-reads the version and validates again). A key held by a run committed after
# this statement's snapshot is caught by ON CONFLICT: nothing comes back, RUN_BY_IDEMPOTENCY_KEY reads it.
INSERT_RUN = Statement(
    "Insert a run or a child run (unless its idempotency key is taken or its latest version moved), its root "
    "nodes as queued, and run.queued; or the run holding the key.", """
WITH key_holder AS (
    SELECT c.id, c.status, c.workflow_id FROM runs c
     WHERE c.space_id = :space AND c.idempotency_key = CAST(:key AS text)
), stale_version AS (
    SELECT w.latest_version FROM workflows w
     WHERE CAST(:latest AS boolean) AND w.id = :wf AND w.latest_version <> :version
), new_run AS (
    INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs,
                      idempotency_key, remaining, deadline_at, run_mode,
                      parent_run_id, parent_node_id, parent_epoch, depth, item_index)
    SELECT :id, :space, :wf, :vid, :version, 'queued', CAST(:inputs AS jsonb), :key, :remaining,
           CASE WHEN CAST(:deadline_s AS float8) IS NULL THEN NULL
                ELSE now() + make_interval(secs => CAST(:deadline_s AS float8)) END, :run_mode,
           CAST(:parent_run AS uuid), CAST(:parent_node AS text), CAST(:parent_epoch AS int), :depth,
           CAST(:item_index AS int)
     WHERE NOT EXISTS (SELECT 1 FROM key_holder) AND NOT EXISTS (SELECT 1 FROM stale_version)
    ON CONFLICT (space_id, idempotency_key) DO NOTHING
    RETURNING id
), root_nodes AS (
    -- a child run's roots wait until its parent node is parked (DELEGATE_NODE starts them)
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, queued_at)
    SELECT new_run.id, root.node_id, CASE WHEN CAST(:parent_run AS uuid) IS NULL THEN 'queued' ELSE 'waiting' END,
           0, root.join_any, 0, 0, now()
      FROM new_run, unnest(CAST(:roots AS text[]), CAST(:roots_any AS boolean[])) AS root(node_id, join_any)
), queued_event AS (
    INSERT INTO run_events (run_id, type, node_id, data) SELECT new_run.id, 'run.queued', NULL, NULL FROM new_run
)
SELECT (SELECT id FROM new_run) AS id, (SELECT id FROM key_holder) AS held_id,
       (SELECT status FROM key_holder) AS held_status, (SELECT workflow_id FROM key_holder) AS held_workflow_id,
       EXISTS (SELECT 1 FROM stale_version) AS stale
""")

# Items are numbered from :first_index (a batch: 0; a loop inserts one iteration at a time).
INSERT_ITEMS = Statement(
    "Insert a composite node's child runs of its inline body, one per item, their roots waiting; how many.", """
WITH numbered_items AS (
    SELECT (t.ord - 1 + :first_index)::int AS idx, t.value
      FROM jsonb_array_elements(CAST(:items AS jsonb)) WITH ORDINALITY AS t(value, ord)
), new_run AS (
    INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs, remaining, run_mode,
                      parent_run_id, parent_node_id, parent_epoch, depth, body, item_index)
    SELECT gen_random_uuid(), :space, :wf, :vid, :version, 'queued',
           CAST(:shared AS jsonb) || jsonb_build_object('item', numbered_items.value, 'index', numbered_items.idx),
           :remaining, 'async', :parent_run, :parent_node, :parent_epoch, :depth, :body, numbered_items.idx
      FROM numbered_items ORDER BY numbered_items.idx
    RETURNING id
), root_nodes AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, queued_at)
    SELECT new_run.id, root.node_id, 'waiting', 0, root.join_any, 0, 0, now()
      FROM new_run, unnest(CAST(:roots AS text[]), CAST(:roots_any AS boolean[])) AS root(node_id, join_any)
), queued_event AS (
    INSERT INTO run_events (run_id, type, node_id, data) SELECT new_run.id, 'run.queued', NULL, NULL FROM new_run
)
SELECT count(*) AS inserted FROM new_run
""")

RUN_BY_IDEMPOTENCY_KEY = Statement(
    "The run already holding a submit's idempotency key (INSERT_RUN lost a race for it).",
    "SELECT id, status, workflow_id FROM runs WHERE space_id = :space AND idempotency_key = :key")

# The claim's own commit is asynchronous: a claim lost in a server crash leaves the node queued
# with its old epoch, so the worker's commit is fenced out and the reconciler re-sends the node.
# The node's commit (synchronous, and before any message is sent) flushes the claim's WAL too.
#
# Fair share: the space's row is locked after the run's (`capped_slot`); a locking read returns the
# latest committed `running_nodes` (kept exact by a trigger on node_runs, migrations 0005, 0016), so
# two claims of one space cannot both take its last slot. A space without a cap is not locked and
# its nodes are not counted. A node over the cap is not claimed: it stays
# queued, costs no attempt, and joins the space's waitlist (`waitlisted`); a freed slot wakes it.
# A refusal decided on the snapshot alone can miss a slot freed meanwhile; the releasing worker
# wakes a waiter if it sees one, else the reconciler's next sweep does.
CLAIM = Statement(
    "Take a queued node (or a due retry) of a live run if its space has a free slot, else waitlist it.", """
WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS v
), run_lock AS MATERIALIZED (
    SELECT id, status, version_id, body, deadline_at, inputs, space_id, rerun_from, overrides
      FROM runs WHERE id = :run FOR UPDATE
), capped_slot AS MATERIALIZED (
    -- a row only if the space has a cap and room: checked on the snapshot first (a full space is
    -- refused without taking its lock, so refusals run in parallel), then again on the latest
    -- committed row once locked (FOR ... re-checks the WHERE on a row updated since the snapshot)
    SELECT s.id FROM spaces s, run_lock
     WHERE s.id = run_lock.space_id
       AND coalesce(s.max_running_nodes, :cap) > 0 AND s.running_nodes < coalesce(s.max_running_nodes, :cap)
       FOR NO KEY UPDATE OF s
), space_slot AS MATERIALIZED (
    -- a space without a cap has room, and its row is neither locked nor counted into (migration
    -- 0016: `counted`), so its nodes do not queue on one row
    SELECT s.id, false AS counted FROM spaces s, run_lock
     WHERE s.id = run_lock.space_id AND coalesce(s.max_running_nodes, :cap) <= 0
    UNION ALL
    SELECT capped_slot.id, true FROM capped_slot
), refused_node AS (  -- read only when the space is full (`waitlisted`)
    SELECT n.id, n.queued_at FROM node_runs n, run_lock
     WHERE n.run_id = run_lock.id AND n.node_id = :node AND run_lock.status IN ('queued', 'running', 'interrupted')
       AND (n.status = 'queued'
            OR (n.status = 'retrying' AND n.next_attempt_at <= now() + make_interval(secs => :grace_s)))
), claimed_node AS (
    UPDATE node_runs n
       SET status = 'running', epoch = n.epoch + 1,
           -- a resumed node finishing with its answer is the same attempt, not a new one
           attempts = n.attempts + CASE WHEN n.resume IS NULL THEN 1 ELSE 0 END,
           lease_expires_at = now() + make_interval(secs => :lease_s),
           started_at = coalesce(n.started_at, now()), next_attempt_at = NULL,
           worker = CAST(:worker AS text),  -- the claiming worker process (diagnosis names it)
           counted = space_slot.counted     -- in the space's running_nodes (it has a cap)
      FROM run_lock, space_slot
     WHERE n.run_id = run_lock.id AND n.node_id = :node AND run_lock.status IN ('queued', 'running', 'interrupted')
       AND (n.status = 'queued'
            OR (n.status = 'retrying' AND n.next_attempt_at <= now() + make_interval(secs => :grace_s)))
    RETURNING n.id, n.epoch, n.attempts, n.resume
), waitlisted AS (
    INSERT INTO space_waiters (node_row_id, space_id, run_id, node_id, queued_at)
    SELECT refused_node.id, run_lock.space_id, :run, :node, coalesce(refused_node.queued_at, now())
      FROM refused_node, run_lock
     WHERE NOT EXISTS (SELECT 1 FROM space_slot)
    ON CONFLICT (node_row_id) DO NOTHING
), unwaitlisted AS (
    DELETE FROM space_waiters w USING claimed_node WHERE w.node_row_id = claimed_node.id
), started_run AS (
    UPDATE runs SET status = 'running', started_at = now(), updated_at = now()
      FROM claimed_node WHERE runs.id = :run AND runs.status = 'queued'
    RETURNING runs.id
), claim_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'run.started', NULL, NULL FROM started_run
    UNION ALL
    SELECT :run, CASE WHEN claimed_node.resume IS NULL THEN 'node.started' ELSE 'node.resumed' END, :node,
           jsonb_build_object('attempt', claimed_node.attempts) FROM claimed_node
)
SELECT claimed_node.id, claimed_node.epoch, claimed_node.attempts, claimed_node.resume, run_lock.version_id,
       run_lock.body, run_lock.deadline_at, run_lock.space_id, EXISTS (SELECT 1 FROM started_run) AS run_started,
       CASE WHEN wn.needs_inputs THEN run_lock.inputs END AS inputs,
       -- a rerun's overrides apply to the attempts of the node it reran from only
       CASE WHEN run_lock.rerun_from = :node THEN run_lock.overrides END AS overrides,
       (SELECT jsonb_object_agg(d.node_id, d.output) FROM node_runs d
         WHERE d.run_id = run_lock.id AND d.node_id = ANY(wn.deps)) AS deps
  FROM claimed_node CROSS JOIN run_lock CROSS JOIN async_commit
  LEFT JOIN workflow_nodes wn ON wn.version_id = run_lock.version_id AND wn.body = run_lock.body
                             AND wn.node_id = :node
""")

# Waiters whose node is no longer waiting (its run was cancelled) are skipped; `DROP_DEAD_WAITERS`
# removes them.
WAKE_WAITERS = Statement(
    "Take up to `limit` waiting nodes, oldest first, off the waitlist of a space with free slots (NULL: any).", """
WITH free_slots AS (
    SELECT s.id, CASE WHEN coalesce(s.max_running_nodes, :cap) <= 0 THEN :limit
                      ELSE least(:limit, coalesce(s.max_running_nodes, :cap) - s.running_nodes) END AS n
      FROM spaces s
     WHERE (CAST(:space AS text) IS NULL OR s.id = :space)
       AND EXISTS (SELECT 1 FROM space_waiters w WHERE w.space_id = s.id)
), woken_waiters AS (
    SELECT p.node_row_id FROM free_slots CROSS JOIN LATERAL (
        SELECT w.node_row_id FROM space_waiters w JOIN node_runs n ON n.id = w.node_row_id
         WHERE w.space_id = free_slots.id AND n.status IN ('queued', 'retrying')
         ORDER BY w.queued_at, w.node_row_id LIMIT greatest(free_slots.n, 0) FOR UPDATE OF w SKIP LOCKED) p
)
DELETE FROM space_waiters w USING woken_waiters WHERE w.node_row_id = woken_waiters.node_row_id
RETURNING w.run_id, w.node_id
""")

DROP_DEAD_WAITERS = Statement(
    "Remove waitlist rows whose node no longer waits (its run ended or it was claimed).", """
DELETE FROM space_waiters w
 WHERE NOT EXISTS (SELECT 1 FROM node_runs n JOIN runs r ON r.id = n.run_id
                    WHERE n.id = w.node_row_id AND n.status IN ('queued', 'retrying')
                      AND r.status IN ('queued', 'running', 'interrupted'))
""")

# Successor signals, aggregated per successor: `cnt` decided predecessors, `act` of them active.
SIGNALS = """
signals AS (
    SELECT * FROM unnest(CAST(:s_ids AS text[]), CAST(:s_deg AS int[]), CAST(:s_cnt AS int[]),
                         CAST(:s_act AS int[]), CAST(:s_any AS boolean[]))
           AS s(node_id, deg, cnt, act, join_any)
)"""

_RUNS_WHEN_DECIDED = "CASE WHEN {any} THEN {act} > 0 ELSE {act} = {deg} END"

# Inserts each signalled successor (`waiting` while some predecessor is undecided, then `queued`
# or `skipped`), or counts the signal into its `waiting` row.
UPSERT_SUCCESSORS = """
signalled_successors AS (
    INSERT INTO node_runs AS n (run_id, node_id, status, in_degree, join_any, pending_in, active_in, queued_at)
    SELECT :run, signals.node_id,
           CASE WHEN signals.deg > signals.cnt THEN 'waiting'
                WHEN {decide_new} THEN 'queued' ELSE 'skipped' END,
           signals.deg, signals.join_any, signals.deg - signals.cnt, signals.act, now()
      FROM signals {gate}
     ORDER BY signals.node_id
    ON CONFLICT (run_id, node_id) DO UPDATE
       SET pending_in = n.pending_in - EXCLUDED.in_degree + EXCLUDED.pending_in,
           active_in = n.active_in + EXCLUDED.active_in,
           queued_at = now(),
           status = CASE WHEN n.pending_in - (EXCLUDED.in_degree - EXCLUDED.pending_in) > 0 THEN n.status
                         WHEN {decide_old} THEN 'queued' ELSE 'skipped' END
     WHERE n.status = 'waiting'
    RETURNING n.node_id, n.status
)""".format(
    decide_new=_RUNS_WHEN_DECIDED.format(any="signals.join_any", act="signals.act", deg="signals.deg"),
    decide_old=_RUNS_WHEN_DECIDED.format(any="n.join_any", act="(n.active_in + EXCLUDED.active_in)", deg="n.in_degree"),
    gate="{gate}",
)

DECISION = """
SELECT (SELECT remaining FROM run_progress) AS remaining,
       (SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') FROM signalled_successors
         WHERE signalled_successors.status = 'queued') AS queued,
       (SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') FROM signalled_successors
         WHERE signalled_successors.status = 'skipped') AS skipped
"""

# A claimed node is decided (succeeded, or failed with on_error default/branch).
COMMIT_NODE = Statement(
    "Store a decided node's outcome if its epoch holds, signal its successors, count it, record events.", f"""
WITH {RUN_LOCK_UNDER_WAY}, decided_node AS (
    UPDATE node_runs n
       SET status = :status, output = CAST(:output AS jsonb), error = CAST(:error AS jsonb),
           port = :port, finished_at = now(), lease_expires_at = NULL, settled = true,
           model = coalesce(CAST(:model AS text), n.model), usage = coalesce(CAST(:usage AS jsonb), n.usage),
           cost = n.cost + CAST(:cost AS numeric),
           attempt_log = CASE WHEN CAST(:log AS jsonb) IS NULL THEN n.attempt_log
                              ELSE n.attempt_log || CAST(:log AS jsonb) END
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), {SIGNALS}, {UPSERT_SUCCESSORS.format(gate=", decided_node")}, node_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, :event_type, :node, CAST(:event_data AS jsonb) FROM decided_node
    UNION ALL
    SELECT :run, 'node.skipped', signalled_successors.node_id, NULL FROM signalled_successors
     WHERE signalled_successors.status = 'skipped'
), run_progress AS (
    UPDATE runs SET remaining = runs.remaining - 1
                                - (SELECT count(*) FROM signalled_successors WHERE signalled_successors.status = 'skipped'),
                    input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens,
                    cost = runs.cost + CAST(:cost AS numeric), updated_at = now()
      FROM decided_node WHERE runs.id = :run
    RETURNING runs.remaining
){DECISION},
       -- the node's slot is free now: does a node of its space wait for one?
       EXISTS (SELECT 1 FROM space_waiters w, run_lock WHERE w.space_id = run_lock.space_id) AS wake
""")

# All a skipped node's edges are inactive.
PROPAGATE_SKIP = Statement("Signal a skipped node's successors, once (it becomes settled).", f"""
WITH {RUN_LOCK_UNDER_WAY}, settled_skip AS (
    UPDATE node_runs n SET settled = true
      FROM run_lock WHERE n.run_id = :run AND n.node_id = :source AND n.status = 'skipped' AND NOT n.settled
    RETURNING n.node_id
), {SIGNALS}, {UPSERT_SUCCESSORS.format(gate=", settled_skip")}, node_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'node.skipped', signalled_successors.node_id, NULL FROM signalled_successors
     WHERE signalled_successors.status = 'skipped'
), run_progress AS (
    UPDATE runs SET remaining = runs.remaining
                                - (SELECT count(*) FROM signalled_successors WHERE signalled_successors.status = 'skipped'),
                    updated_at = now()
      FROM settled_skip WHERE runs.id = :run
    RETURNING runs.remaining
){DECISION}
""")

LOAD_OUTPUTS = Statement("The run's inputs (if asked) and the outputs of the given nodes.", """
SELECT CASE WHEN :with_inputs THEN r.inputs END AS inputs,
       (SELECT jsonb_object_agg(d.node_id, d.output) FROM node_runs d
         WHERE d.run_id = r.id AND d.node_id = ANY(CAST(:ids AS text[]))) AS outputs
  FROM runs r WHERE r.id = :run""")

FINISH_RUN = Statement(
    "Mark a running run whose nodes are all decided succeeded; a child run's end queues its parent node.", f"""
WITH {_PARENT_LOCK}, succeeded_run AS (
    UPDATE runs SET status = 'succeeded', outputs = CAST(:outputs AS jsonb), finished_at = now(), updated_at = now()
     WHERE id = :run AND runs.status = 'running' AND remaining <= 0 AND {_AFTER_PARENT}
    RETURNING runs.id, runs.parent_run_id, runs.parent_node_id, runs.parent_epoch, runs.cost
), run_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT succeeded_run.id, 'run.succeeded', NULL, NULL FROM succeeded_run
), {_WAKE_PARENT.format(ended="succeeded_run")}
SELECT succeeded_run.id, succeeded_run.parent_run_id IS NULL AS top_level, {_WOKEN} FROM succeeded_run
""")

SCHEDULE_RETRY = Statement(
    "Record a failed attempt (fenced by epoch) and make the node due again after :delay_s.", f"""
WITH {RUN_LOCK_UNDER_WAY}, retried_node AS (
    UPDATE node_runs n
       SET status = 'retrying', error = CAST(:error AS jsonb), lease_expires_at = NULL,
           -- a composite node's retry is a new attempt with new children: forget the old ones'
           -- outcome (a person's answer, by contrast, stays for the retry of a resumed node)
           resume = CASE WHEN n.children_total > 0 THEN NULL ELSE n.resume END,
           children_total = 0, children_done = 0, children_started = 0,
           next_attempt_at = now() + make_interval(secs => :delay_s),
           queued_at = now() + make_interval(secs => :delay_s),
           attempt_log = n.attempt_log || CAST(:log AS jsonb), cost = n.cost + CAST(:cost AS numeric)
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), spent_tokens AS (
    -- a failed attempt's tokens were spent too (an LLM answer that broke its JSON format)
    UPDATE runs SET input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens,
                    cost = runs.cost + CAST(:cost AS numeric)
      FROM retried_node WHERE runs.id = :run AND (:in_tokens > 0 OR :out_tokens > 0 OR CAST(:cost AS numeric) > 0)
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.retrying', :node, CAST(:event_data AS jsonb) FROM retried_node
RETURNING id
""")

# A run that ends failed or cancelled gives a final row to every node that never got one (a
# successor's row is created only when a predecessor signals it), so no node of a final run
# reads `waiting`. `cancelled`, like the pending rows the same statement cancels: the run stopped
# before the node ran (`skipped` stays the graph's own choice, dead-path elimination). Paid only
# when a run fails or is cancelled; the counters are moot in a final run.
_CANCEL_UNREACHED = """
{name} AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, finished_at)
    SELECT {ended}.id, wn.node_id, 'cancelled', 0, false, 0, 0, now()
      FROM {ended} JOIN workflow_nodes wn ON wn.version_id = {ended}.version_id AND wn.body = {ended}.body
     WHERE NOT EXISTS (SELECT 1 FROM node_runs nr WHERE nr.run_id = {ended}.id AND nr.node_id = wn.node_id)
     ORDER BY wn.node_id
    ON CONFLICT (run_id, node_id) DO NOTHING
)"""

# Everything still pending in the run is cancelled (statuses.NODE_LIVE_STATUSES).
FAIL_RUN_AT_NODE = Statement(
    "Fail a node for good (fenced by epoch) and its run; cancel its other live nodes and descendants; wake a parent.", f"""
WITH RECURSIVE {_PARENT_LOCK}, run_lock AS MATERIALIZED (
    SELECT id, space_id FROM runs WHERE id = :run AND runs.status IN ('running', 'interrupted') AND {_AFTER_PARENT}
       FOR UPDATE
), failed_node AS (
    UPDATE node_runs n
       SET status = 'failed', error = CAST(:error AS jsonb), finished_at = now(), lease_expires_at = NULL,
           attempt_log = n.attempt_log || CAST(:log AS jsonb), cost = n.cost + CAST(:cost AS numeric)
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = ANY(CAST(:from_status AS text[]))
    RETURNING n.id
), cancelled_nodes AS (
    UPDATE node_runs n SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
      FROM failed_node WHERE n.run_id = :run AND n.id <> failed_node.id
       AND n.status IN ('waiting', 'queued', 'retrying', 'running', 'interrupted', 'delegated')
    RETURNING n.id
), failed_run AS (
    UPDATE runs SET status = 'failed', error = CAST(:run_error AS jsonb), finished_at = now(), updated_at = now(),
                    input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens,
                    cost = runs.cost + CAST(:cost AS numeric)
      FROM failed_node WHERE runs.id = :run
    RETURNING runs.id, runs.version_id, runs.body, runs.parent_run_id, runs.parent_node_id, runs.parent_epoch,
              runs.cost
), {_CANCEL_DESCENDANTS.format(ended="failed_run")}, {_WAKE_PARENT.format(ended="failed_run")}, failed_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'node.failed', :node, CAST(:error AS jsonb) FROM failed_node
    UNION ALL
    SELECT :run, 'run.failed', NULL, CAST(:run_error AS jsonb) FROM failed_run
), {_CANCEL_UNREACHED.format(name="unreached_nodes", ended="failed_run")},
{_CANCEL_UNREACHED.format(name="unreached_descendant_nodes", ended="cancelled_descendants")}
SELECT failed_run.id, failed_run.parent_run_id IS NULL AS top_level, {_WOKEN} FROM failed_run
""")

END_RUN = Statement(
    "End a live run as :status (cancel, deadline): cancel its live nodes and descendants; wake a parent.", f"""
WITH RECURSIVE {_PARENT_LOCK}, run_lock AS MATERIALIZED (
    SELECT id, status FROM runs WHERE id = :run AND (CAST(:space AS text) IS NULL OR space_id = :space)
       AND {_AFTER_PARENT} FOR UPDATE
), ended_run AS (
    UPDATE runs SET status = :status, error = CAST(:run_error AS jsonb), finished_at = now(), updated_at = now()
      FROM run_lock WHERE runs.id = run_lock.id AND run_lock.status IN ('queued', 'running', 'interrupted')
    RETURNING runs.id, runs.version_id, runs.body, runs.parent_run_id, runs.parent_node_id, runs.parent_epoch,
              runs.cost
), cancelled_nodes AS (
    UPDATE node_runs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
      FROM ended_run WHERE node_runs.run_id = ended_run.id
       AND node_runs.status IN ('waiting', 'queued', 'retrying', 'running', 'interrupted', 'delegated')
    RETURNING 1
), {_CANCEL_UNREACHED.format(name="unreached_nodes", ended="ended_run")}, run_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT ended_run.id, 'run.' || :status, NULL, CAST(:run_error AS jsonb) FROM ended_run
), {_CANCEL_DESCENDANTS.format(ended="ended_run")},
{_CANCEL_UNREACHED.format(name="unreached_descendant_nodes", ended="cancelled_descendants")},
{_WAKE_PARENT.format(ended="ended_run")}
SELECT (SELECT count(*) FROM run_lock) AS found, (SELECT count(*) FROM ended_run) AS changed,
       (SELECT ended_run.parent_run_id IS NULL FROM ended_run) AS top_level, {_WOKEN}
""")

# A composite node inserted its child runs (`queued`, their roots `waiting`): it waits holding no
# worker, lease or space slot, and its first :started children (from item :first_index: a loop's
# iteration k is item k) start now (their roots `queued`; the caller sends them). Starting them
# only here means no child can end before its parent waits. :state is what the node keeps while
# it waits (a loop: its counters and variables; NULL for the others); the child's end adds its
# outcome to it. The counters count from :first_index, so a loop's progress counts iterations.
DELEGATE_NODE = Statement(
    "Park a running node (fenced by epoch) as delegated to its :children child runs; start the first :started.", f"""
WITH {RUN_LOCK_UNDER_WAY}, delegated_node AS (
    UPDATE node_runs n SET status = 'delegated', lease_expires_at = NULL, resume = CAST(:state AS jsonb),
                           -- counted from :first_index: a loop's iteration k shows k done of k + 1
                           children_total = CAST(:first_index AS int) + :children, children_done = :first_index,
                           children_started = CAST(:first_index AS int) + :started, children_fail_fast = :fail_fast
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), started_roots AS (
    UPDATE node_runs nr SET status = 'queued', queued_at = now()
      FROM delegated_node, runs c
     WHERE c.parent_run_id = :run AND c.parent_node_id = :node AND c.parent_epoch = :epoch
       AND c.item_index >= :first_index AND c.item_index < CAST(:first_index AS int) + :started
       AND nr.run_id = c.id AND nr.status = 'waiting' AND nr.in_degree = 0
    RETURNING nr.run_id, nr.node_id, c.version_id, c.body
), delegated_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'node.delegated', :node, CAST(:event_data AS jsonb) FROM delegated_node
)
SELECT delegated_node.id,
       -- the node's slot is free now: does a node of its space wait for one?
       EXISTS (SELECT 1 FROM space_waiters w, run_lock WHERE w.space_id = run_lock.space_id) AS wake,
       (SELECT jsonb_agg(jsonb_build_array(started_roots.run_id, started_roots.node_id, started_roots.version_id,
                                           started_roots.body)) FROM started_roots) AS started
  FROM delegated_node
""")

# Never-started children (every node still a `waiting` root) have no descendants and no node that
# ran: they are cancelled in bulk. Started ones are ended one by one (END_RUN cascades).
CANCEL_UNSTARTED_CHILDREN = Statement(
    "Cancel the never-started child runs of a composite node's attempt in bulk; returns how many.", """
WITH unstarted AS MATERIALIZED (
    SELECT c.id FROM runs c
     WHERE c.parent_run_id = :run AND c.parent_node_id = :node AND c.parent_epoch = :epoch AND c.status = 'queued'
       AND NOT EXISTS (SELECT 1 FROM node_runs nr WHERE nr.run_id = c.id AND nr.status <> 'waiting')
     ORDER BY c.id FOR UPDATE OF c SKIP LOCKED
), cancelled_runs AS (
    UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now()
      FROM unstarted WHERE runs.id = unstarted.id
    RETURNING runs.id
), cancelled_nodes AS (
    UPDATE node_runs SET status = 'cancelled', finished_at = now()
      FROM cancelled_runs WHERE node_runs.run_id = cancelled_runs.id
), cancelled_events AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT cancelled_runs.id, 'run.cancelled', NULL, NULL FROM cancelled_runs
)
SELECT count(*) AS cancelled FROM cancelled_runs
""")

# The run is `interrupted` while any of its interrupts is pending.
INTERRUPT_NODE = Statement(
    "Park a running node (fenced by epoch) as interrupted with a pending question or form.", f"""
WITH {RUN_LOCK_UNDER_WAY}, interrupted_node AS (
    UPDATE node_runs n SET status = 'interrupted', lease_expires_at = NULL, resume = NULL
      FROM run_lock WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), new_interrupt AS (
    INSERT INTO run_interrupts (event_id, run_id, node_id, type, data)
    SELECT :event_id, :run, :node, :kind, CAST(:data AS jsonb) FROM interrupted_node
    RETURNING event_id
), interrupted_run AS (
    UPDATE runs SET status = 'interrupted', updated_at = now()
      FROM new_interrupt WHERE runs.id = :run AND runs.status = 'running'
    RETURNING runs.id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.interrupted', :node,
       jsonb_build_object('event_id', :event_id, 'type', :kind, 'data', CAST(:data AS jsonb)) FROM new_interrupt
UNION ALL
SELECT :run, 'run.interrupted', NULL, jsonb_build_object('event_id', :event_id, 'node_id', :node) FROM interrupted_run
RETURNING id
""")

# The interrupt row moves pending → answered under the run's lock, and its node goes back to the
# queue carrying the outputs the answer gives. No row back: not interrupted, not that event, or
# already answered.
RESUME_NODE = Statement("Answer the run's oldest pending interrupt exactly once and queue its node again.", """
WITH run_lock AS MATERIALIZED (
    SELECT id FROM runs WHERE id = :run AND space_id = :space AND runs.status = 'interrupted' FOR UPDATE
), oldest_interrupt AS (
    SELECT i.event_id, i.node_id FROM run_interrupts i, run_lock
     WHERE i.run_id = run_lock.id AND i.status = 'pending' ORDER BY i.created_at, i.event_id LIMIT 1
), answered_interrupt AS (
    UPDATE run_interrupts i SET status = 'answered', answer = CAST(:answer AS jsonb), answered_at = now()
      FROM oldest_interrupt
     WHERE i.event_id = oldest_interrupt.event_id AND i.event_id = :event_id AND i.status = 'pending'
    RETURNING i.node_id
), resumed_node AS (
    UPDATE node_runs n SET status = 'queued', resume = CAST(:outputs AS jsonb), queued_at = now()
      FROM answered_interrupt
     WHERE n.run_id = :run AND n.node_id = answered_interrupt.node_id AND n.status = 'interrupted'
    RETURNING n.node_id
), still_pending AS (
    SELECT count(*) AS pending FROM run_interrupts i, resumed_node
     WHERE i.run_id = :run AND i.status = 'pending' AND i.event_id <> :event_id
), resumed_run AS (
    UPDATE runs SET status = CASE WHEN still_pending.pending = 0 THEN 'running' ELSE 'interrupted' END,
                    updated_at = now()
      FROM still_pending, resumed_node WHERE runs.id = :run
    RETURNING runs.status
), resume_event AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'run.resumed', resumed_node.node_id, jsonb_build_object('event_id', :event_id) FROM resumed_node
)
SELECT resumed_node.node_id, (SELECT status FROM resumed_run) AS run_status FROM resumed_node
""")

# Under the run's lock, like every event, so ids stay monotonic per run.
APPEND_EVENT = Statement("Record an event of a run under way (an LLM token chunk); no row if the run has ended.", f"""
WITH {RUN_LOCK_UNDER_WAY}
INSERT INTO run_events (run_id, type, node_id, data)
SELECT run_lock.id, :type, :node, CAST(:data AS jsonb) FROM run_lock
RETURNING id
""")
