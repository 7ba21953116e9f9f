"""worker registry: workers (heartbeats); node_runs.worker (who claimed the attempt)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:30:00

- workers: one row per worker process (`<hostname>:<pid>:<6 hex>`), the queues it consumes and
  its heartbeat; diagnosis counts the live ones per queue and names a dead lease holder.
- node_runs.worker: set by the claim. No index: the claim's update stays HOT.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('queues', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    op.add_column('node_runs', sa.Column('worker', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('node_runs', 'worker')
    op.drop_table('workers')
