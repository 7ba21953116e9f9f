"""child runs of composite nodes: the `delegated` node status, the parent's attempt, depth, counters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:30:00

- node_runs.status accepts `delegated` (a node waiting for its child runs); the CHECK list is
  written out, as in 0006, so this migration never changes with the code.
- runs.parent_epoch: the epoch of the parent node's attempt that started the child. A child of an
  older attempt (the parent was retried or re-queued since) cannot decide the newer one.
- runs.depth: 0 for a run a client submitted, the parent's depth + 1 for a child
  (RELAYFLOW_MAX_RUN_DEPTH bounds it).
- node_runs.children_total / children_done: a composite node's O(1) state per finished child
  (a counter, never a JSON array rewritten per child).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

NODE_STATUSES_0006 = ("status IN ('waiting', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'skipped', "
                      "'interrupted', 'cancelled')")
NODE_STATUSES = ("status IN ('waiting', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'skipped', "
                 "'interrupted', 'cancelled', 'delegated')")

# The constraints this migration replaces, as 0006's CHECKS (tests/unit/test_statuses.py reads both).
CHECKS = (('node_runs', 'ck_node_runs_status', NODE_STATUSES),)


def upgrade() -> None:
    op.drop_constraint(op.f('ck_node_runs_status'), 'node_runs', type_='check')
    op.create_check_constraint(op.f('ck_node_runs_status'), 'node_runs', NODE_STATUSES)
    op.add_column('runs', sa.Column('parent_epoch', sa.Integer(), nullable=True))
    op.add_column('runs', sa.Column('depth', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('node_runs', sa.Column('children_total', sa.Integer(), server_default=sa.text('0'),
                                         nullable=False))
    op.add_column('node_runs', sa.Column('children_done', sa.Integer(), server_default=sa.text('0'),
                                         nullable=False))


def downgrade() -> None:
    op.drop_column('node_runs', 'children_done')
    op.drop_column('node_runs', 'children_total')
    op.drop_column('runs', 'depth')
    op.drop_column('runs', 'parent_epoch')
    op.drop_constraint(op.f('ck_node_runs_status'), 'node_runs', type_='check')
    op.create_check_constraint(op.f('ck_node_runs_status'), 'node_runs', NODE_STATUSES_0006)
