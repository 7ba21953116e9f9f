"""SQL of spaces, tokens, workflows and their immutable versions."""
from __future__ import annotations

from engine.store.sql import Statement

# -- schema ---------------------------------------------------------------------------------------
SCHEMA_REVISION = Statement("The migration the database is at (Alembic's own table).",
                            "SELECT version_num FROM alembic_version")

# -- spaces ---------------------------------------------------------------------------------------
INSERT_SPACE = Statement("Create a space unless it exists.",
                         "INSERT INTO spaces (id, name) VALUES (:id, :name) ON CONFLICT (id) DO NOTHING")

INSERT_SPACE_NAMED_BY_ID = Statement("Create a space named by its id unless it exists (a token's first space).",
                                     "INSERT INTO spaces (id, name) VALUES (:id, :id) ON CONFLICT (id) DO NOTHING")

SET_SPACE_CAP = Statement("Set a space's cap on running nodes (NULL: the deployment's default).",
                          "UPDATE spaces SET max_running_nodes = :cap WHERE id = :id")

# `running_nodes` counts only the nodes claimed while their space had a cap (migration 0016); the
# others running are counted from their rows (an operator's command, off the hot path).
SPACE_LOADS = Statement("Every space with its cap, its running nodes and its nodes waiting for a slot.", """
SELECT s.id, s.max_running_nodes,
       s.running_nodes + (SELECT count(*) FROM runs r JOIN node_runs n ON n.run_id = r.id
                           WHERE r.space_id = s.id AND r.status IN ('queued', 'running', 'interrupted')
                             AND n.status = 'running' AND NOT n.counted) AS running_nodes,
       (SELECT count(*) FROM space_waiters w WHERE w.space_id = s.id) AS waiting
  FROM spaces s ORDER BY s.id""")

# -- tokens ---------------------------------------------------------------------------------------
INSERT_TOKEN = Statement("Store a token's hash; returns its id.", """
INSERT INTO api_tokens (space_id, name, owner, token_hash, scopes, expires_at)
VALUES (:space, :name, :owner, :hash, :scopes, :expires) RETURNING id""")

LIST_TOKENS = Statement("Tokens of a space (NULL: of every space), oldest first, without their hashes.", """
SELECT id, space_id, name, owner, scopes, created_at, expires_at, revoked_at, last_used_at
  FROM api_tokens WHERE CAST(:space AS text) IS NULL OR space_id = :space
 ORDER BY id""")

REVOKE_TOKEN = Statement(
    "Revoke a token of a space (NULL: any) unless it already is: (found, revoked_at now or NULL).", """
WITH token AS (
    SELECT id FROM api_tokens
     WHERE id = :id AND (CAST(:space AS text) IS NULL OR space_id = :space)
), revoked AS (
    UPDATE api_tokens SET revoked_at = now() FROM token
     WHERE api_tokens.id = token.id AND api_tokens.revoked_at IS NULL
    RETURNING api_tokens.revoked_at
)
SELECT (SELECT count(*) FROM token) AS found, (SELECT revoked_at FROM revoked) AS revoked_at""")

USE_TOKEN = Statement("Look a token up by hash and record its use (at most once a minute).", """
WITH token AS (
    SELECT id, space_id, name, owner, scopes, expires_at, revoked_at, last_used_at
      FROM api_tokens WHERE token_hash = :hash
), recorded_use AS (
    UPDATE api_tokens SET last_used_at = now() FROM token
     WHERE api_tokens.id = token.id
       AND (token.last_used_at IS NULL OR token.last_used_at < now() - interval '1 minute')
)
SELECT id, space_id, name, owner, scopes, expires_at, revoked_at FROM token""")

# What a web process's token cache (engine/token_cache.py) compares once a second: any revocation
# raises `revoked` (revoked_at is never cleared), a new token raises `newest`, a removed one lowers
# `tokens`. A change drops every cached token of the process.
TOKEN_GENERATION = Statement("The token table's generation: (tokens, revoked, newest id); a change drops cached tokens.", """
SELECT count(*) AS tokens, count(revoked_at) AS revoked, coalesce(max(id), 0) AS newest FROM api_tokens""")

USE_TOKEN_CACHED = Statement(
    "Look a token up by hash, record its use (at most once a minute), with the token table's generation.", """
WITH token AS (
    SELECT id, space_id, name, owner, scopes, expires_at, revoked_at, last_used_at
      FROM api_tokens WHERE token_hash = :hash
), recorded_use AS (
    UPDATE api_tokens SET last_used_at = now() FROM token
     WHERE api_tokens.id = token.id
       AND (token.last_used_at IS NULL OR token.last_used_at < now() - interval '1 minute')
), token_generation AS (
    SELECT count(*) AS tokens, count(revoked_at) AS revoked, coalesce(max(id), 0) AS newest FROM api_tokens
)
SELECT token.id, token.space_id, token.name, token.owner, token.scopes, token.expires_at, token.revoked_at,
       token_generation.tokens, token_generation.revoked, token_generation.newest
  FROM token_generation LEFT JOIN token ON true""")

TOKEN_STATES = Statement("(revoked_at, expires_at) of each of the given tokens that still exists.",
                         "SELECT id, revoked_at, expires_at FROM api_tokens WHERE id = ANY(:ids)")

# -- workflows ------------------------------------------------------------------------------------
INSERT_WORKFLOW = Statement("Create a workflow whose latest version is 1.", """
INSERT INTO workflows (id, space_id, name, description, latest_version)
VALUES (:id, :space, :name, :description, 1)""")

NEXT_WORKFLOW_VERSION = Statement("Count a workflow's next version (and rename it if asked); returns the number.", """
UPDATE workflows SET latest_version = latest_version + 1, updated_at = now(),
       name = coalesce(:name, name), description = coalesce(:description, description)
 WHERE id = :id AND space_id = :space RETURNING latest_version""")

INSERT_VERSION = Statement("Store an immutable workflow version's definition; returns its row id.", """
INSERT INTO workflow_versions (workflow_id, version, definition)
VALUES (:wf, :version, CAST(:definition AS jsonb)) RETURNING id""")

INSERT_VERSION_NODE = Statement("Store a version's per-node facts the claim reads (executed once per node).", """
INSERT INTO workflow_nodes (version_id, body, node_id, deps, needs_inputs)
VALUES (:vid, :body, :node, :deps, :needs)""")

LOCK_WORKFLOW = Statement("A workflow's latest version number, its row locked until the transaction ends.",
                          "SELECT latest_version FROM workflows WHERE id = :id AND space_id = :space FOR UPDATE")

SET_PUBLISHED_VERSION = Statement("Mark a version of a workflow as published.",
                                  "UPDATE workflows SET published_version = :v, updated_at = now() WHERE id = :id")

GET_WORKFLOW = Statement("A workflow of a space.", """
SELECT id, name, description, latest_version, published_version, created_at, updated_at
  FROM workflows WHERE id = :id AND space_id = :space""")

WORKFLOW_VERSIONS = Statement("A workflow's version numbers and their times, in order.", """
SELECT version, created_at FROM workflow_versions WHERE workflow_id = :id ORDER BY version""")

LIST_WORKFLOWS = Statement("Workflows of a space, newest first, paged.", """
SELECT id, name, description, latest_version, published_version, created_at, updated_at
  FROM workflows WHERE space_id = :space ORDER BY created_at DESC, id LIMIT :limit OFFSET :offset""")

GET_VERSION = Statement("A version of a workflow of a space (NULL version: the latest).", """
SELECT v.id, v.workflow_id, v.version, v.definition FROM workflows w
  JOIN workflow_versions v ON v.workflow_id = w.id
   AND v.version = coalesce(CAST(:version AS int), w.latest_version)
 WHERE w.id = :id AND w.space_id = :space""")

WORKFLOW_BY_REF = Statement(
    "A workflow of a space by id or by name (the newest of that name), with its published and latest versions.", """
SELECT id, name, latest_version, published_version FROM workflows
 WHERE space_id = :space AND (id = :ref OR name = :ref)
 ORDER BY (id = :ref) DESC, created_at DESC LIMIT 1""")

GET_VERSION_BY_ID = Statement("A workflow version by its row id.",
                              "SELECT id, workflow_id, version, definition FROM workflow_versions WHERE id = :id")
