"""human-in-the-loop interrupts, run mode, resume outputs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 19:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_interrupts',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('answer', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_interrupts_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_run_interrupts'))
    )
    op.create_index('ix_run_interrupts_run', 'run_interrupts', ['run_id', 'created_at'], unique=False)
    op.add_column('runs', sa.Column('run_mode', sa.String(length=16), server_default=sa.text("'async'"), nullable=False))
    op.add_column('node_runs', sa.Column('resume', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # Interrupted runs are still active for the reconciler (another branch may be running).
    op.drop_index('ix_runs_active', table_name='runs')
    op.create_index('ix_runs_active', 'runs', ['deadline_at'], unique=False,
                    postgresql_where=sa.text("status IN ('queued','running','interrupted')"))


def downgrade() -> None:
    op.drop_index('ix_runs_active', table_name='runs')
    op.create_index('ix_runs_active', 'runs', ['deadline_at'], unique=False,
                    postgresql_where=sa.text("status IN ('queued','running')"))
    op.drop_column('node_runs', 'resume')
    op.drop_column('runs', 'run_mode')
    op.drop_index('ix_run_interrupts_run', table_name='run_interrupts')
    op.drop_table('run_interrupts')
