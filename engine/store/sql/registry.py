"""SQL of the model registry's generations (the newest row is current)."""
from __future__ import annotations

from engine.store.sql import Statement

CURRENT_GENERATION_ID = Statement("The current generation's id (an index-only lookup), NULL before the first.",
                                  "SELECT max(id) FROM model_generations")

CURRENT_GENERATION = Statement("The current generation of the registry.", """
SELECT id, models, problems, created_at FROM model_generations ORDER BY id DESC LIMIT 1""")

INSERT_GENERATION = Statement("Store a new current generation.", """
INSERT INTO model_generations (models, problems)
SELECT CAST(:models AS jsonb), CAST(:problems AS jsonb)
RETURNING id, models, problems, created_at""")

INSERT_FIRST_GENERATION = Statement("Store a generation only if there is none yet (under FIRST_GENERATION_LOCK).", """
INSERT INTO model_generations (models, problems)
SELECT CAST(:models AS jsonb), CAST(:problems AS jsonb) WHERE NOT EXISTS (SELECT 1 FROM model_generations)
RETURNING id, models, problems, created_at""")

# Serialises concurrent first loads so that at most one stores its reading (session-level: taken
# and released on one autocommit connection around INSERT_FIRST_GENERATION).
FIRST_GENERATION_LOCK = Statement("Wait for the lock that serialises storing the first generation.",
                                  "SELECT pg_advisory_lock(hashtext('relayflow.model_generations'))")

FIRST_GENERATION_UNLOCK = Statement("Release FIRST_GENERATION_LOCK.",
                                    "SELECT pg_advisory_unlock(hashtext('relayflow.model_generations'))")
