"""prompt library: prompts, versions, labels, audit events; token owners; node_runs.prompt

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:00:00

- api_tokens.owner: the person a token acts for (existing tokens: their name), so a prompt's
  creator is a person and not one of their tokens.
- prompts (unique key per space, soft delete), prompt_versions (immutable), prompt_labels
  (movable pointers; `latest` is prompts.latest_version), prompt_events (the audit; its newest
  id is the change counter every process compares its prompt cache with).
- node_runs.prompt: the {key, version, version_id} a node pinned at its first attempt.
- Search: when this Postgres has pg_trgm, a GIN trigram index on prompts.search_text serves
  `ILIKE '%…%'` for any substring, CJK and emoji included (full-text parsers do not segment
  CJK text, so a word index would not find a substring of a sentence). Without the extension
  the same query runs as a scan of the space's prompts: the answers are the same.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('api_tokens', sa.Column('owner', sa.String(length=200), nullable=True))
    op.execute("UPDATE api_tokens SET owner = name")
    op.alter_column('api_tokens', 'owner', nullable=False)
    op.add_column('node_runs', sa.Column('prompt', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_table('prompts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('space_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('tags', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('creator', sa.String(length=200), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('search_text', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_prompts_space_id_spaces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompts')),
    sa.UniqueConstraint('space_id', 'key', name='uq_prompts_space_key')
    )
    op.create_index('ix_prompts_space_id', 'prompts', ['space_id', 'id'], unique=False)
    op.create_table('prompt_versions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('prompt_id', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('messages', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('variables', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('model', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('message', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('(text IS NULL) <> (messages IS NULL)', name=op.f('ck_prompt_versions_text_or_messages')),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_prompt_versions_prompt_id_prompts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_versions')),
    sa.UniqueConstraint('prompt_id', 'version', name='uq_prompt_versions_prompt_version')
    )
    op.create_table('prompt_labels',
    sa.Column('prompt_id', sa.BigInteger(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_prompt_labels_prompt_id_prompts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('prompt_id', 'label', name=op.f('pk_prompt_labels'))
    )
    op.create_table('prompt_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('prompt_id', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('token_id', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_prompt_events_prompt_id_prompts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_events'))
    )
    op.create_index('ix_prompt_events_prompt', 'prompt_events', ['prompt_id', 'id'], unique=False)
    bind = op.get_bind()
    has_trgm = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    if has_trgm:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        # not in engine.schema (it exists only where the extension does): migrations/env.py
        # leaves indexes named *_trgm out of `alembic check`
        op.execute("CREATE INDEX ix_prompts_search_trgm ON prompts USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_prompts_search_trgm")
    op.drop_index('ix_prompt_events_prompt', table_name='prompt_events')
    op.drop_table('prompt_events')
    op.drop_table('prompt_labels')
    op.drop_table('prompt_versions')
    op.drop_index('ix_prompts_space_id', table_name='prompts')
    op.drop_table('prompts')
    op.drop_column('node_runs', 'prompt')
    op.drop_column('api_tokens', 'owner')
