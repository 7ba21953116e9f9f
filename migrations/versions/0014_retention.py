"""retention: spaces.retention_days and the index of ended top-level runs by when they ended

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 07:30:00

- spaces.retention_days: how many days (a float: 0.5 is twelve hours) a space's ended runs are
  kept; NULL: RELAYFLOW_RETENTION_DAYS; 0: forever.
- ix_runs_expired: the ended top-level runs of each space by `finished_at`, the only runs the
  retention sweep picks (engine/store/sql/retention.py). Keyed by space first because each space
  has its own cutoff: the sweep reads the oldest few of each space (one short index range per
  space) instead of every ended run older than the smallest cutoff. Partial, so it holds no
  live run and no child run: the hot path's inserts and status updates of live runs never
  touch it, and a run enters it once, when it ends.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

ENDED_TOP_LEVEL = "parent_run_id IS NULL AND status IN ('succeeded','failed','cancelled')"


def upgrade() -> None:
    op.add_column('spaces', sa.Column('retention_days', sa.Float(), nullable=True))
    op.create_index('ix_runs_expired', 'runs', ['space_id', 'finished_at'], unique=False,
                    postgresql_where=sa.text(ENDED_TOP_LEVEL))


def downgrade() -> None:
    op.drop_index('ix_runs_expired', table_name='runs', postgresql_where=sa.text(ENDED_TOP_LEVEL))
    op.drop_column('spaces', 'retention_days')
