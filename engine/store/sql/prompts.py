"""SQL of the prompt library: prompts, their immutable versions, labels and audit events.

Every statement takes the space: a prompt of another space is never found (the API's 404).
"""
from __future__ import annotations

from engine.store.sql import Statement

_PROMPT_COLUMNS = ("p.id, p.space_id, p.key, p.name, p.description, p.tags, p.creator, p.latest_version, "
                   "p.created_at, p.updated_at, p.deleted_at")
_VERSION_COLUMNS = "v.id, v.version, v.text, v.messages, v.variables, v.model, v.message, v.author, v.created_at"

INSERT_PROMPT = Statement("Create a prompt at version 1 unless its key is taken in the space; its id.", """
INSERT INTO prompts (space_id, key, name, description, tags, creator, latest_version, search_text)
VALUES (:space, :key, :name, :description, :tags, :creator, 1, :search)
ON CONFLICT (space_id, key) DO NOTHING
RETURNING id""")

INSERT_VERSION = Statement("Store an immutable version of a prompt; its row.", f"""
INSERT INTO prompt_versions AS v (prompt_id, version, text, messages, variables, model, message, author)
VALUES (:prompt_id, :version, :text, CAST(:messages AS jsonb), CAST(:variables AS jsonb), CAST(:model AS jsonb),
        :message, :author)
RETURNING {_VERSION_COLUMNS}""")

ADVANCE_PROMPT = Statement(
    "Count a prompt's next version if it is still at the version the save was based on (optimistic lock).", """
UPDATE prompts SET latest_version = latest_version + 1, search_text = :search, updated_at = now(),
       name = COALESCE(:name, name), description = COALESCE(:description, description)
 WHERE id = :prompt_id AND latest_version = :base AND deleted_at IS NULL
RETURNING latest_version""")

CURRENT_VERSION = Statement("A prompt's latest version, its author and when it was saved.", """
SELECT p.latest_version AS version, v.author, v.created_at
  FROM prompts p JOIN prompt_versions v ON v.prompt_id = p.id AND v.version = p.latest_version
 WHERE p.id = :prompt_id""")

UPDATE_PROMPT_META = Statement("Change a prompt's name, description or tags (NULL: unchanged).", """
UPDATE prompts SET name = COALESCE(:name, name), description = COALESCE(:description, description),
       tags = COALESCE(:tags, tags), updated_at = now()
 WHERE id = :prompt_id AND deleted_at IS NULL""")

INSERT_EVENT = Statement("Record one change of a prompt in its audit history.", """
INSERT INTO prompt_events (prompt_id, action, actor, token_id, version, detail)
VALUES (:prompt_id, :action, :actor, :token_id, :version, CAST(:detail AS jsonb))""")

GET_PROMPT = Statement("A prompt of the space by key (deleted ones too).", f"""
SELECT {_PROMPT_COLUMNS} FROM prompts p WHERE p.space_id = :space AND p.key = :key""")

GET_PROMPT_BY_ID = Statement("A prompt of the space by id (deleted ones too).", f"""
SELECT {_PROMPT_COLUMNS} FROM prompts p WHERE p.space_id = :space AND p.id = :prompt_id""")

GET_VERSION = Statement("One version of a prompt.", f"""
SELECT {_VERSION_COLUMNS} FROM prompt_versions v WHERE v.prompt_id = :prompt_id AND v.version = :version""")

GET_VERSION_BY_ID = Statement("One version by its row id (a node's pinned version).", f"""
SELECT {_VERSION_COLUMNS} FROM prompt_versions v WHERE v.id = :version_id""")

LABELS = Statement("The labels of a prompt: label -> version.", """
SELECT label, version, updated_by, updated_at FROM prompt_labels WHERE prompt_id = :prompt_id ORDER BY label""")

SET_LABEL = Statement("Point a label at a version; returns the version it pointed at before (NULL: new).", """
WITH previous AS (
    SELECT version FROM prompt_labels WHERE prompt_id = :prompt_id AND label = :label
)
INSERT INTO prompt_labels (prompt_id, label, version, updated_by)
VALUES (:prompt_id, :label, :version, :actor)
ON CONFLICT (prompt_id, label) DO UPDATE SET version = EXCLUDED.version, updated_by = EXCLUDED.updated_by,
                                            updated_at = now()
RETURNING (SELECT version FROM previous) AS previous""")

LIST_PROMPTS = Statement(
    "A page of the space's live prompts, newest first, filtered by tag, creator, label and search text.", f"""
SELECT {_PROMPT_COLUMNS},
       (SELECT COALESCE(jsonb_object_agg(l.label, l.version), '{{}}'::jsonb)
          FROM prompt_labels l WHERE l.prompt_id = p.id) AS labels
  FROM prompts p
 WHERE p.space_id = :space AND p.deleted_at IS NULL
   AND (CAST(:before AS bigint) IS NULL OR p.id < :before)
   AND (CAST(:tag AS text) IS NULL OR :tag = ANY(p.tags))
   AND (CAST(:creator AS text) IS NULL OR p.creator = :creator)
   AND (CAST(:label AS text) IS NULL
        OR EXISTS (SELECT 1 FROM prompt_labels l WHERE l.prompt_id = p.id AND l.label = :label))
   AND (CAST(:pattern AS text) IS NULL OR p.search_text LIKE :pattern)
 ORDER BY p.id DESC
 LIMIT :limit""")

HISTORY = Statement("A page of a prompt's audit history, oldest first.", """
SELECT id, action, actor, token_id, version, detail, created_at FROM prompt_events
 WHERE prompt_id = :prompt_id AND id > :after
 ORDER BY id LIMIT :limit""")

SOFT_DELETE = Statement("Mark a live prompt deleted; when (no row: it already was).", """
UPDATE prompts SET deleted_at = now() WHERE id = :prompt_id AND deleted_at IS NULL RETURNING deleted_at""")

RESTORE = Statement("Bring back a prompt deleted less than :window_s seconds ago (no row: not restorable).", """
UPDATE prompts SET deleted_at = NULL, updated_at = now()
 WHERE id = :prompt_id AND deleted_at IS NOT NULL AND deleted_at > now() - make_interval(secs => :window_s)
RETURNING updated_at""")

REFERENCED = Statement("The live prompts of the space among these keys, with their versions and labels.", """
SELECT p.key, p.latest_version,
       (SELECT COALESCE(array_agg(l.label), '{}') FROM prompt_labels l WHERE l.prompt_id = p.id) AS labels
  FROM prompts p WHERE p.space_id = :space AND p.key = ANY(:keys) AND p.deleted_at IS NULL""")

CHANGE_COUNTER = Statement("The library's change counter: the newest audit event's id (an index-only lookup).",
                           "SELECT max(id) FROM prompt_events")

# One statement per node attempt: resolve the node's reference (a version, a label, or `latest`)
# and pin it on the node's row unless an earlier attempt did; answer the pin that holds (the
# earlier one wins: retries render the same text) and the change counter for the cache.
PIN_PROMPT = Statement("Resolve and pin a node's prompt unless pinned; the pin that holds and the counter.", """
WITH wanted AS (
    SELECT p.key, v.version, v.id AS version_id
      FROM prompts p
      LEFT JOIN prompt_labels l ON l.prompt_id = p.id AND l.label = :label
      JOIN prompt_versions v ON v.prompt_id = p.id
       AND v.version = COALESCE(CAST(:version AS integer), l.version,
                                CASE WHEN :label = 'latest' THEN p.latest_version END)
     WHERE p.space_id = :space AND p.key = :key AND p.deleted_at IS NULL
), earlier AS (
    SELECT prompt FROM node_runs WHERE id = :node_row_id
), pinned AS (
    UPDATE node_runs SET prompt = jsonb_build_object('key', wanted.key, 'version', wanted.version,
                                                     'version_id', wanted.version_id)
      FROM wanted
     WHERE node_runs.id = :node_row_id AND node_runs.prompt IS NULL
    RETURNING node_runs.prompt
)
SELECT COALESCE((SELECT prompt FROM earlier), (SELECT prompt FROM pinned)) AS prompt,
       (SELECT max(id) FROM prompt_events) AS counter""")
