"""durable core schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 23:39:27.617409
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('spaces',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spaces'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('space_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_api_tokens_space_id_spaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_space_id'), 'api_tokens', ['space_id'], unique=False)
    op.create_table('workflows',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('space_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('published_version', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_workflows_space_id_spaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflows'))
    )
    op.create_index('ix_workflows_space_created', 'workflows', ['space_id', 'created_at'], unique=False)
    op.create_table('workflow_versions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflows.id'], name=op.f('fk_workflow_versions_workflow_id_workflows'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_versions')),
    sa.UniqueConstraint('workflow_id', 'version', name='uq_workflow_versions_workflow_version')
    )
    op.create_table('runs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('space_id', sa.String(length=64), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('inputs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('outputs', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('remaining', sa.Integer(), nullable=False),
    sa.Column('parent_run_id', sa.UUID(), nullable=True),
    sa.Column('parent_node_id', sa.String(length=64), nullable=True),
    sa.Column('input_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['parent_run_id'], ['runs.id'], name=op.f('fk_runs_parent_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_runs_space_id_spaces'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['workflow_versions.id'], name=op.f('fk_runs_version_id_workflow_versions')),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflows.id'], name=op.f('fk_runs_workflow_id_workflows'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('space_id', 'idempotency_key', name='uq_runs_space_idempotency')
    )
    op.create_index('ix_runs_active', 'runs', ['deadline_at'], unique=False, postgresql_where=sa.text("status IN ('queued','running')"))
    op.create_index('ix_runs_parent', 'runs', ['parent_run_id'], unique=False, postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.create_index('ix_runs_space_created', 'runs', ['space_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_runs_workflow_created', 'runs', ['workflow_id', 'created_at', 'id'], unique=False)
    op.create_table('workflow_nodes',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('deps', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('needs_inputs', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['workflow_versions.id'], name=op.f('fk_workflow_nodes_version_id_workflow_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'node_id', name=op.f('pk_workflow_nodes'))
    )
    op.create_table('node_runs',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('in_degree', sa.Integer(), nullable=False),
    sa.Column('join_any', sa.Boolean(), nullable=False),
    sa.Column('pending_in', sa.Integer(), nullable=False),
    sa.Column('active_in', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('crashes', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('port', sa.String(length=64), nullable=True),
    sa.Column('settled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('attempt_log', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_node_runs_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_runs')),
    sa.UniqueConstraint('run_id', 'node_id', name='uq_node_runs_run_node')
    )
    # Room on each page for HOT updates of node rows (two per attempt, no indexed column changes).
    op.execute("ALTER TABLE node_runs SET (fillfactor = 70)")
    op.execute("ALTER TABLE runs SET (fillfactor = 80)")
    op.create_table('run_events',
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_events_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'id', name=op.f('pk_run_events'))
    )


def downgrade() -> None:
    op.drop_table('run_events')
    op.drop_table('node_runs')
    op.drop_table('workflow_nodes')
    op.drop_index('ix_runs_workflow_created', table_name='runs')
    op.drop_index('ix_runs_space_created', table_name='runs')
    op.drop_index('ix_runs_parent', table_name='runs', postgresql_where=sa.text('parent_run_id IS NOT NULL'))
    op.drop_index('ix_runs_active', table_name='runs', postgresql_where=sa.text("status IN ('queued','running')"))
    op.drop_table('runs')
    op.drop_table('workflow_versions')
    op.drop_index('ix_workflows_space_created', table_name='workflows')
    op.drop_table('workflows')
    op.drop_index(op.f('ix_api_tokens_space_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('spaces')
