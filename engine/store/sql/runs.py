"""SQL of the run lifecycle's hot path. Each statement is one round trip and atomic on its own.

Lock order, everywhere: the run's row first (`lk`, FOR UPDATE, materialised so it is taken
before anything else), then node rows. Every statement that inserts run events holds the run's
row lock, so event ids are monotonic per run in commit order (the SSE id).
"""
from __future__ import annotations

# A run waiting for a person (`interrupted`) is still live: its other branches go on.
LOCK_RUNNING = ("lk AS MATERIALIZED (SELECT id, space_id FROM runs WHERE id = :run "
                "AND status IN ('running', 'interrupted') FOR UPDATE)")

INSERT_RUN = """
WITH r AS (
    INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs,
                      idempotency_key, remaining, deadline_at, run_mode)
    VALUES (:id, :space, :wf, :vid, :version, 'queued', CAST(:inputs AS jsonb), :key, :remaining,
            CASE WHEN CAST(:deadline_s AS float8) IS NULL THEN NULL
                 ELSE now() + make_interval(secs => CAST(:deadline_s AS float8)) END, :run_mode)
    ON CONFLICT (space_id, idempotency_key) DO NOTHING
    RETURNING id
), roots AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, queued_at)
    SELECT r.id, root.node_id, 'queued', 0, root.join_any, 0, 0, now()
      FROM r, unnest(CAST(:roots AS text[]), CAST(:roots_any AS boolean[])) AS root(node_id, join_any)
), ev AS (
    INSERT INTO run_events (run_id, type, node_id, data) SELECT r.id, 'run.queued', NULL, NULL FROM r
)
SELECT id FROM r
"""

# The run already holding a submit's idempotency key (INSERT_RUN inserted nothing).
RUN_BY_IDEMPOTENCY_KEY = "SELECT id, status, workflow_id FROM runs WHERE space_id = :space AND idempotency_key = :key"

# The claim's own commit is asynchronous: a claim lost in a server crash leaves the node queued
# with its old epoch, so the worker's commit is fenced out and the reconciler re-sends the node.
# The node's commit (synchronous, and before any message is sent) flushes the claim's WAL too.
#
# Fair share: the space's row is locked after the run's (`sp`); a locking read returns the latest
# committed `running_nodes` (kept exact by a trigger on node_runs, migration 0004), so two claims
# of one space cannot both take its last slot. A node over the cap is not claimed: it stays
# queued, costs no attempt, and joins the space's waitlist (`parked`); a freed slot wakes it.
# A refusal decided on the snapshot alone can miss a slot freed meanwhile; the releasing worker
# wakes a waiter if it sees one, else the reconciler's next sweep does.
CLAIM = """
WITH cfg AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS v
), lk AS MATERIALIZED (
    SELECT id, status, version_id, deadline_at, inputs, space_id FROM runs WHERE id = :run FOR UPDATE
), sp AS MATERIALIZED (
    -- a row only if the space has room: checked on the snapshot first (a full space is refused
    -- without taking its lock, so refusals run in parallel), then again on the latest committed
    -- row once locked (FOR ... re-checks the WHERE on a row updated since the snapshot)
    SELECT s.id FROM spaces s, lk
     WHERE s.id = lk.space_id
       AND (coalesce(s.max_running_nodes, :cap) <= 0 OR s.running_nodes < coalesce(s.max_running_nodes, :cap))
       FOR NO KEY UPDATE OF s
), cand AS (  -- read only when the space is full (`parked`)
    SELECT n.id, n.queued_at FROM node_runs n, lk
     WHERE n.run_id = lk.id AND n.node_id = :node AND lk.status IN ('queued', 'running', 'interrupted')
       AND (n.status = 'queued'
            OR (n.status = 'retrying' AND n.next_attempt_at <= now() + make_interval(secs => :grace_s)))
), c AS (
    UPDATE node_runs n
       SET status = 'running', epoch = n.epoch + 1,
           -- a resumed node finishing with its answer is the same attempt, not a new one
           attempts = n.attempts + CASE WHEN n.resume IS NULL THEN 1 ELSE 0 END,
           lease_expires_at = now() + make_interval(secs => :lease_s),
           started_at = coalesce(n.started_at, now()), next_attempt_at = NULL
      FROM lk, sp
     WHERE n.run_id = lk.id AND n.node_id = :node AND lk.status IN ('queued', 'running', 'interrupted')
       AND (n.status = 'queued'
            OR (n.status = 'retrying' AND n.next_attempt_at <= now() + make_interval(secs => :grace_s)))
    RETURNING n.id, n.epoch, n.attempts, n.resume
), parked AS (
    INSERT INTO space_waiters (node_row_id, space_id, run_id, node_id, queued_at)
    SELECT cand.id, lk.space_id, :run, :node, coalesce(cand.queued_at, now()) FROM cand, lk
     WHERE NOT EXISTS (SELECT 1 FROM sp)
    ON CONFLICT (node_row_id) DO NOTHING
), unparked AS (
    DELETE FROM space_waiters w USING c WHERE w.node_row_id = c.id
), r AS (
    UPDATE runs SET status = 'running', started_at = now(), updated_at = now()
      FROM c WHERE runs.id = :run AND runs.status = 'queued'
    RETURNING runs.id
), ev AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'run.started', NULL, NULL FROM r
    UNION ALL
    SELECT :run, CASE WHEN c.resume IS NULL THEN 'node.started' ELSE 'node.resumed' END, :node,
           jsonb_build_object('attempt', c.attempts) FROM c
)
SELECT c.id, c.epoch, c.attempts, c.resume, lk.version_id, lk.deadline_at, lk.space_id,
       CASE WHEN wn.needs_inputs THEN lk.inputs END AS inputs,
       (SELECT jsonb_object_agg(d.node_id, d.output) FROM node_runs d
         WHERE d.run_id = lk.id AND d.node_id = ANY(wn.deps)) AS deps
  FROM c CROSS JOIN lk CROSS JOIN cfg
  LEFT JOIN workflow_nodes wn ON wn.version_id = lk.version_id AND wn.node_id = :node
"""

# Wakes up to `:limit` waiting nodes of a space (every space if `:space` is NULL) that has free
# slots now, oldest first; their rows leave the waitlist and the caller sends their messages.
# Waiters whose node is no longer waiting (its run was cancelled) are skipped; `DROP_DEAD_WAITERS`
# removes them.
WAKE_WAITERS = """
WITH free AS (
    SELECT s.id, CASE WHEN coalesce(s.max_running_nodes, :cap) <= 0 THEN :limit
                      ELSE least(:limit, coalesce(s.max_running_nodes, :cap) - s.running_nodes) END AS n
      FROM spaces s
     WHERE (CAST(:space AS text) IS NULL OR s.id = :space)
       AND EXISTS (SELECT 1 FROM space_waiters w WHERE w.space_id = s.id)
), pick AS (
    SELECT p.node_row_id FROM free CROSS JOIN LATERAL (
        SELECT w.node_row_id FROM space_waiters w JOIN node_runs n ON n.id = w.node_row_id
         WHERE w.space_id = free.id AND n.status IN ('queued', 'retrying')
         ORDER BY w.queued_at, w.node_row_id LIMIT greatest(free.n, 0) FOR UPDATE OF w SKIP LOCKED) p
)
DELETE FROM space_waiters w USING pick WHERE w.node_row_id = pick.node_row_id
RETURNING w.run_id, w.node_id
"""

DROP_DEAD_WAITERS = """
DELETE FROM space_waiters w
 WHERE NOT EXISTS (SELECT 1 FROM node_runs n JOIN runs r ON r.id = n.run_id
                    WHERE n.id = w.node_row_id AND n.status IN ('queued', 'retrying')
                      AND r.status IN ('queued', 'running', 'interrupted'))
"""

# Successor signals, aggregated per successor: `cnt` decided predecessors, `act` of them active.
_SIGNALS = """
sig AS (
    SELECT * FROM unnest(CAST(:s_ids AS text[]), CAST(:s_deg AS int[]), CAST(:s_cnt AS int[]),
                         CAST(:s_act AS int[]), CAST(:s_any AS boolean[]))
           AS s(node_id, deg, cnt, act, join_any)
)"""

_RUNS_WHEN_DECIDED = "CASE WHEN {any} THEN {act} > 0 ELSE {act} = {deg} END"

_UPSERT_SUCCESSORS = """
succ AS (
    INSERT INTO node_runs AS n (run_id, node_id, status, in_degree, join_any, pending_in, active_in, queued_at)
    SELECT :run, sig.node_id,
           CASE WHEN sig.deg > sig.cnt THEN 'waiting'
                WHEN {decide_new} THEN 'queued' ELSE 'skipped' END,
           sig.deg, sig.join_any, sig.deg - sig.cnt, sig.act, now()
      FROM sig {gate}
     ORDER BY sig.node_id
    ON CONFLICT (run_id, node_id) DO UPDATE
       SET pending_in = n.pending_in - EXCLUDED.in_degree + EXCLUDED.pending_in,
           active_in = n.active_in + EXCLUDED.active_in,
           queued_at = now(),
           status = CASE WHEN n.pending_in - (EXCLUDED.in_degree - EXCLUDED.pending_in) > 0 THEN n.status
                         WHEN {decide_old} THEN 'queued' ELSE 'skipped' END
     WHERE n.status = 'waiting'
    RETURNING n.node_id, n.status
)""".format(
    decide_new=_RUNS_WHEN_DECIDED.format(any="sig.join_any", act="sig.act", deg="sig.deg"),
    decide_old=_RUNS_WHEN_DECIDED.format(any="n.join_any", act="(n.active_in + EXCLUDED.active_in)", deg="n.in_degree"),
    gate="{gate}",
)

_RESULT = """
SELECT (SELECT remaining FROM upd) AS remaining,
       (SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') FROM succ WHERE status = 'queued') AS queued,
       (SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') FROM succ WHERE status = 'skipped') AS skipped
"""

# A claimed node is decided (succeeded, or failed with on_error default/branch): store its
# outcome if our epoch still holds, signal its successors, count it, record events.
COMMIT_NODE = f"""
WITH {LOCK_RUNNING}, done AS (
    UPDATE node_runs n
       SET status = :status, output = CAST(:output AS jsonb), error = CAST(:error AS jsonb),
           port = :port, finished_at = now(), lease_expires_at = NULL, settled = true,
           model = coalesce(CAST(:model AS text), n.model), usage = coalesce(CAST(:usage AS jsonb), n.usage),
           attempt_log = CASE WHEN CAST(:log AS jsonb) IS NULL THEN n.attempt_log
                              ELSE n.attempt_log || CAST(:log AS jsonb) END
      FROM lk WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), {_SIGNALS}, {_UPSERT_SUCCESSORS.format(gate=", done")}, ev AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, :event_type, :node, CAST(:event_data AS jsonb) FROM done
    UNION ALL
    SELECT :run, 'node.skipped', succ.node_id, NULL FROM succ WHERE succ.status = 'skipped'
), upd AS (
    UPDATE runs SET remaining = runs.remaining - 1 - (SELECT count(*) FROM succ WHERE succ.status = 'skipped'),
                    input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens,
                    updated_at = now()
      FROM done WHERE runs.id = :run
    RETURNING runs.remaining
){_RESULT},
       -- the node's slot is free now: does a node of its space wait for one?
       EXISTS (SELECT 1 FROM space_waiters w, lk WHERE w.space_id = lk.space_id) AS wake
"""

# A skipped node is decided too: signal its successors (all its edges are inactive), once.
PROPAGATE_SKIP = f"""
WITH {LOCK_RUNNING}, src AS (
    UPDATE node_runs n SET settled = true
      FROM lk WHERE n.run_id = :run AND n.node_id = :source AND n.status = 'skipped' AND NOT n.settled
    RETURNING n.node_id
), {_SIGNALS}, {_UPSERT_SUCCESSORS.format(gate=", src")}, ev AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'node.skipped', succ.node_id, NULL FROM succ WHERE succ.status = 'skipped'
), upd AS (
    UPDATE runs SET remaining = runs.remaining - (SELECT count(*) FROM succ WHERE succ.status = 'skipped'),
                    updated_at = now()
      FROM src WHERE runs.id = :run
    RETURNING runs.remaining
){_RESULT}
"""

FINISH_RUN = """
WITH u AS (
    UPDATE runs SET status = 'succeeded', outputs = CAST(:outputs AS jsonb), finished_at = now(), updated_at = now()
     WHERE id = :run AND status = 'running' AND remaining <= 0
    RETURNING id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT u.id, 'run.succeeded', NULL, NULL FROM u
RETURNING id
"""

SCHEDULE_RETRY = f"""
WITH {LOCK_RUNNING}, done AS (
    UPDATE node_runs n
       SET status = 'retrying', error = CAST(:error AS jsonb), lease_expires_at = NULL,
           next_attempt_at = now() + make_interval(secs => :delay_s),
           queued_at = now() + make_interval(secs => :delay_s),
           attempt_log = n.attempt_log || CAST(:log AS jsonb)
      FROM lk WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), spent AS (
    -- a failed attempt's tokens were spent too (an LLM answer that broke its JSON format)
    UPDATE runs SET input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens
      FROM done WHERE runs.id = :run AND (:in_tokens > 0 OR :out_tokens > 0)
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.retrying', :node, CAST(:event_data AS jsonb) FROM done
RETURNING id
"""

# A run that ends failed or cancelled gives a final row to every node that never got one (a
# successor's row is created only when a predecessor signals it), so no node of a final run
# reads `waiting`. `cancelled`, like the pending rows the same statement cancels: the run stopped
# before the node ran (`skipped` stays the graph's own choice, dead-path elimination). Paid only
# when a run fails or is cancelled; the counters are moot in a final run.
_CANCEL_UNREACHED = """
unreached AS (
    INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, finished_at)
    SELECT {ended}.id, wn.node_id, 'cancelled', 0, false, 0, 0, now()
      FROM {ended} JOIN workflow_nodes wn ON wn.version_id = {ended}.version_id
     WHERE NOT EXISTS (SELECT 1 FROM node_runs nr WHERE nr.run_id = {ended}.id AND nr.node_id = wn.node_id)
     ORDER BY wn.node_id
    ON CONFLICT (run_id, node_id) DO NOTHING
)"""

# The node failed for good and the run fails with it; everything still pending is cancelled.
FAIL_RUN_AT_NODE = f"""
WITH {LOCK_RUNNING}, done AS (
    UPDATE node_runs n
       SET status = 'failed', error = CAST(:error AS jsonb), finished_at = now(), lease_expires_at = NULL,
           attempt_log = n.attempt_log || CAST(:log AS jsonb)
      FROM lk WHERE n.id = :nid AND n.epoch = :epoch AND n.status = ANY(CAST(:from_status AS text[]))
    RETURNING n.id
), others AS (
    UPDATE node_runs n SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
      FROM done WHERE n.run_id = :run AND n.id <> done.id
       AND n.status IN ('waiting', 'queued', 'retrying', 'running', 'interrupted')
    RETURNING n.id
), upd AS (
    UPDATE runs SET status = 'failed', error = CAST(:run_error AS jsonb), finished_at = now(), updated_at = now(),
                    input_tokens = runs.input_tokens + :in_tokens, output_tokens = runs.output_tokens + :out_tokens
      FROM done WHERE runs.id = :run
    RETURNING runs.id, runs.version_id
), {_CANCEL_UNREACHED.format(ended="upd")}
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.failed', :node, CAST(:error AS jsonb) FROM done
UNION ALL
SELECT :run, 'run.failed', NULL, CAST(:run_error AS jsonb) FROM upd
RETURNING id
"""

# Ends a run that is not finished: cancel by a user, or fail on its deadline.
END_RUN = f"""
WITH lk AS MATERIALIZED (
    SELECT id, status FROM runs WHERE id = :run AND (CAST(:space AS text) IS NULL OR space_id = :space) FOR UPDATE
), u AS (
    UPDATE runs SET status = :status, error = CAST(:run_error AS jsonb), finished_at = now(), updated_at = now()
      FROM lk WHERE runs.id = lk.id AND lk.status IN ('queued', 'running', 'interrupted')
    RETURNING runs.id, runs.version_id
), n AS (
    UPDATE node_runs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
      FROM u WHERE node_runs.run_id = u.id
       AND node_runs.status IN ('waiting', 'queued', 'retrying', 'running', 'interrupted')
    RETURNING 1
), {_CANCEL_UNREACHED.format(ended="u")}, ev AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT u.id, 'run.' || :status, NULL, CAST(:run_error AS jsonb) FROM u
)
SELECT (SELECT count(*) FROM lk) AS found, (SELECT count(*) FROM u) AS changed
"""

REQUEUE_CRASHED = f"""
WITH {LOCK_RUNNING}, u AS (
    UPDATE node_runs n
       SET status = 'queued', crashes = n.crashes + 1, queued_at = now(), lease_expires_at = NULL,
           attempt_log = n.attempt_log || CAST(:log AS jsonb)
      FROM lk WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running' AND n.lease_expires_at < now()
    RETURNING n.id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.crashed', :node, CAST(:log AS jsonb) -> 0 FROM u
RETURNING id
"""

RENEW_LEASES = """
UPDATE node_runs SET lease_expires_at = now() + make_interval(secs => :lease_s)
 WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'running'
"""

# The node asks a person (question, input form): it waits without a worker; the run is
# `interrupted` while any of its interrupts is pending.
INTERRUPT_NODE = f"""
WITH {LOCK_RUNNING}, done AS (
    UPDATE node_runs n SET status = 'interrupted', lease_expires_at = NULL, resume = NULL
      FROM lk WHERE n.id = :nid AND n.epoch = :epoch AND n.status = 'running'
    RETURNING n.id
), ir AS (
    INSERT INTO run_interrupts (event_id, run_id, node_id, type, data)
    SELECT :event_id, :run, :node, :kind, CAST(:data AS jsonb) FROM done
    RETURNING event_id
), upd AS (
    UPDATE runs SET status = 'interrupted', updated_at = now()
      FROM ir WHERE runs.id = :run AND runs.status = 'running'
    RETURNING runs.id
)
INSERT INTO run_events (run_id, type, node_id, data)
SELECT :run, 'node.interrupted', :node,
       jsonb_build_object('event_id', :event_id, 'type', :kind, 'data', CAST(:data AS jsonb)) FROM ir
UNION ALL
SELECT :run, 'run.interrupted', NULL, jsonb_build_object('event_id', :event_id, 'node_id', :node) FROM upd
RETURNING id
"""

# Answers the run's oldest pending interrupt, exactly once: the interrupt row moves
# pending → answered under the run's lock, and its node goes back to the queue carrying the
# outputs the answer gives. No row back: not interrupted, not that event, or already answered.
RESUME_NODE = """
WITH lk AS MATERIALIZED (
    SELECT id FROM runs WHERE id = :run AND space_id = :space AND status = 'interrupted' FOR UPDATE
), first AS (
    SELECT i.event_id, i.node_id FROM run_interrupts i, lk
     WHERE i.run_id = lk.id AND i.status = 'pending' ORDER BY i.created_at, i.event_id LIMIT 1
), ans AS (
    UPDATE run_interrupts i SET status = 'answered', answer = CAST(:answer AS jsonb), answered_at = now()
      FROM first WHERE i.event_id = first.event_id AND i.event_id = :event_id AND i.status = 'pending'
    RETURNING i.node_id
), n AS (
    UPDATE node_runs n SET status = 'queued', resume = CAST(:outputs AS jsonb), queued_at = now()
      FROM ans WHERE n.run_id = :run AND n.node_id = ans.node_id AND n.status = 'interrupted'
    RETURNING n.node_id
), still AS (
    SELECT count(*) AS pending FROM run_interrupts i, n
     WHERE i.run_id = :run AND i.status = 'pending' AND i.event_id <> :event_id
), upd AS (
    UPDATE runs SET status = CASE WHEN still.pending = 0 THEN 'running' ELSE 'interrupted' END, updated_at = now()
      FROM still, n WHERE runs.id = :run
    RETURNING runs.status
), ev AS (
    INSERT INTO run_events (run_id, type, node_id, data)
    SELECT :run, 'run.resumed', n.node_id, jsonb_build_object('event_id', :event_id) FROM n
)
SELECT n.node_id, (SELECT status FROM upd) AS run_status FROM n
"""

# A run event recorded while a node runs (LLM token chunks): under the run's lock, like every
# event, so ids stay monotonic per run.
APPEND_EVENT = f"""
WITH {LOCK_RUNNING}
INSERT INTO run_events (run_id, type, node_id, data)
SELECT lk.id, :type, :node, CAST(:data AS jsonb) FROM lk
RETURNING id
"""
