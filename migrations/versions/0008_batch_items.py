"""inline bodies and batch items: runs.body, runs.item_index, workflow_nodes.body, started/fail-fast counters

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:40:00

- runs.body: '' for a run of a whole workflow; for a child run of a composite node with an
  inline body (batch, loop), the path of that node in its version (`outer/inner` when nested).
  The child runs the same version as its parent: a run is still pinned to one version.
- runs.item_index: which item (batch) or iteration (loop) of its parent node a child run is; a
  sub-workflow's child is item 0. The parent's children are found by (parent run, node, epoch,
  index), so the index replaces ix_runs_parent.
- workflow_nodes.body: the per-node facts the claim reads exist for body nodes too; the key
  becomes (version_id, body, node_id).
- node_runs.children_started: how many of a composite node's children were started (a batch
  starts at most `concurrency` at once; each child's end starts the next, in its own
  transaction). node_runs.children_fail_fast: the first child that does not succeed wakes the
  node at once (a batch's `on_item_error: fail`, a sub-workflow) instead of waiting for the rest.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('body', sa.Text(), server_default=sa.text("''"), nullable=False))
    op.add_column('runs', sa.Column('item_index', sa.Integer(), nullable=True))
    op.drop_index('ix_runs_parent', table_name='runs', postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.create_index('ix_runs_parent', 'runs', ['parent_run_id', 'parent_node_id', 'parent_epoch', 'item_index'],
                    unique=False, postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.add_column('workflow_nodes', sa.Column('body', sa.Text(), server_default=sa.text("''"), nullable=False))
    op.drop_constraint('pk_workflow_nodes', 'workflow_nodes', type_='primary')
    op.create_primary_key('pk_workflow_nodes', 'workflow_nodes', ['version_id', 'body', 'node_id'])
    op.add_column('node_runs', sa.Column('children_started', sa.Integer(), server_default=sa.text('0'),
                                         nullable=False))
    op.add_column('node_runs', sa.Column('children_fail_fast', sa.Boolean(), server_default=sa.text('true'),
                                         nullable=False))


def downgrade() -> None:
    op.drop_column('node_runs', 'children_fail_fast')
    op.drop_column('node_runs', 'children_started')
    op.execute("DELETE FROM workflow_nodes WHERE body <> ''")
    op.drop_constraint('pk_workflow_nodes', 'workflow_nodes', type_='primary')
    op.create_primary_key('pk_workflow_nodes', 'workflow_nodes', ['version_id', 'node_id'])
    op.drop_column('workflow_nodes', 'body')
    op.drop_index('ix_runs_parent', table_name='runs', postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.create_index('ix_runs_parent', 'runs', ['parent_run_id'], unique=False,
                    postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.drop_column('runs', 'item_index')
    op.drop_column('runs', 'body')
