"""live child runs by parent attempt: ix_runs_live_children

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 19:00:00

The reconciler looks for live child runs whose parent node's attempt is over (ORPHANED_CHILDREN).
Read child by child, that cost grows with the live children: a batch of 10,000 items has ~10,000
queued children for most of its life, and every sweep (5 s) joined each of them to its parent
node (~0.2 s a sweep on the benchmark machine, for one batch). This partial index holds only
live children, keyed by their parent attempt, so the sweep visits each attempt once (a skip scan
of the index) and each of its children only if that attempt is over.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

LIVE_CHILD = "parent_run_id IS NOT NULL AND status IN ('queued', 'running', 'interrupted')"


def upgrade() -> None:
    op.create_index('ix_runs_live_children', 'runs', ['parent_run_id', 'parent_node_id', 'parent_epoch'],
                    unique=False, postgresql_where=sa.text(LIVE_CHILD))


def downgrade() -> None:
    op.drop_index('ix_runs_live_children', table_name='runs', postgresql_where=sa.text(LIVE_CHILD))
