"""model generations stored before secret hygiene: blank their literal secrets

Generations used to keep a key written literally in a model file (and custom header values).
Each process now reads those from its own model files, so the stored copies are blanked in
place (engine/models/secrets.py's marker); the registry's history is kept otherwise.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:45:00
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from engine.models.secrets import redact

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.text("SELECT id, models FROM model_generations")).all():
        blanked = redact(row.models)
        if blanked != row.models:
            conn.execute(sa.text("UPDATE model_generations SET models = CAST(:models AS jsonb) WHERE id = :id"),
                         {"models": json.dumps(blanked), "id": row.id})


def downgrade() -> None:
    pass  # a blanked secret cannot be brought back; each process reads it from its files anyway
