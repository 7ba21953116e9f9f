"""rerun lineage: runs.source_run_id, runs.rerun_from, runs.overrides, ix_runs_source

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 07:30:00

A rerun (POST /v1/runs/{id}/rerun) is a new run of the source's version that reuses the recorded
outcomes of the nodes not downstream of `rerun_from`. `source_run_id` has no foreign key on
purpose: retention deletes old runs, and a rerun outlives its source (the id then names a run that
is gone). `overrides` holds what the rerun changed for `rerun_from`'s attempts (rendered inputs,
model, prompt version). The partial index lists a source's reruns newest first, and is empty
for every run that is not a rerun.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

IS_RERUN = "source_run_id IS NOT NULL"


def upgrade() -> None:
    op.add_column('runs', sa.Column("source_run_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column('runs', sa.Column('rerun_from', sa.Text(), nullable=True))
    op.add_column('runs', sa.Column('overrides', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index('ix_runs_source', 'runs', ['source_run_id', 'created_at', 'id'], unique=False,
                    postgresql_where=sa.text(IS_RERUN))


def downgrade() -> None:
    op.drop_index('ix_runs_source', table_name='runs', postgresql_where=sa.text(IS_RERUN))
    op.drop_column('runs', 'overrides')
    op.drop_column('runs', 'rerun_from')
    op.drop_column('runs', 'source_run_id')
