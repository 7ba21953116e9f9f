"""model registry generations; model and token usage per node

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_generations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('models', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('problems', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_generations'))
    )
    op.add_column('node_runs', sa.Column('model', sa.String(length=128), nullable=True))
    op.add_column('node_runs', sa.Column('usage', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('node_runs', 'usage')
    op.drop_column('node_runs', 'model')
    op.drop_table('model_generations')
