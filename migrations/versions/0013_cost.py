"""cost: node_runs.cost and runs.cost (USD, numeric)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 07:30:00

Each LLM attempt's cost (its usage times the answering model's declared prices, failed attempts
included) is added to its node and its run in the statement that records the attempt; a child
run's cost is added to its parent node and run when it ends. Existing rows read 0.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a constant default: no table rewrite on PostgreSQL 11+
    op.add_column('runs', sa.Column('cost', sa.Numeric(), server_default=sa.text('0'), nullable=False))
    op.add_column('node_runs', sa.Column('cost', sa.Numeric(), server_default=sa.text('0'), nullable=False))


def downgrade() -> None:
    op.drop_column('node_runs', 'cost')
    op.drop_column('runs', 'cost')
