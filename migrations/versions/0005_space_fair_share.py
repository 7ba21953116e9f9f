"""fair share between spaces: a cap on running nodes per space, a count kept by a trigger, a waitlist

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:30:00

`spaces.running_nodes` is the number of the space's nodes in status `running`. A trigger on
`node_runs` keeps it exact for every transition into or out of `running`, whichever statement
makes it (claim, commit, retry, interrupt, failure, cancel, crash re-queue), so no code path can
leak a slot. The claim reads it under the space row's lock and refuses a node over the cap
(`spaces.max_running_nodes`, or RELAYFLOW_SPACE_MAX_RUNNING_NODES when NULL); the refused node
stays queued and waits in `space_waiters` until a slot of its space frees.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

COUNT_FUNCTION = """
CREATE FUNCTION relayflow_count_running() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer;
    rid uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN
        delta := -1; rid := OLD.run_id;
    ELSIF NEW.status = 'running' THEN
        delta := 1; rid := NEW.run_id;
    ELSE
        delta := -1; rid := NEW.run_id;
    END IF;
    UPDATE spaces SET running_nodes = running_nodes + delta
     WHERE id = (SELECT space_id FROM runs WHERE id = rid);
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.add_column('spaces', sa.Column('max_running_nodes', sa.Integer(), nullable=True))
    op.add_column('spaces', sa.Column('running_nodes', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.create_table('space_waiters',
    sa.Column('node_row_id', sa.BigInteger(), nullable=False),
    sa.Column('space_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['node_row_id'], ['node_runs.id'], name=op.f('fk_space_waiters_node_row_id_node_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('node_row_id', name=op.f('pk_space_waiters'))
    )
    op.create_index('ix_space_waiters_line', 'space_waiters', ['space_id', 'queued_at', 'node_row_id'], unique=False)
    op.execute(COUNT_FUNCTION)
    # Only transitions into or out of `running` fire (the WHEN is checked before any function call).
    op.execute("""CREATE TRIGGER node_runs_running_update AFTER UPDATE OF status ON node_runs FOR EACH ROW
                  WHEN ((OLD.status = 'running') IS DISTINCT FROM (NEW.status = 'running'))
                  EXECUTE FUNCTION relayflow_count_running()""")
    op.execute("""CREATE TRIGGER node_runs_running_insert AFTER INSERT ON node_runs FOR EACH ROW
                  WHEN (NEW.status = 'running') EXECUTE FUNCTION relayflow_count_running()""")
    op.execute("""CREATE TRIGGER node_runs_running_delete AFTER DELETE ON node_runs FOR EACH ROW
                  WHEN (OLD.status = 'running') EXECUTE FUNCTION relayflow_count_running()""")
    op.execute("""UPDATE spaces s SET running_nodes = (
                      SELECT count(*) FROM runs r JOIN node_runs n ON n.run_id = r.id
                       WHERE r.space_id = s.id AND n.status = 'running')""")


def downgrade() -> None:
    for name in ('node_runs_running_update', 'node_runs_running_insert', 'node_runs_running_delete'):
        op.execute(f"DROP TRIGGER {name} ON node_runs")
    op.execute("DROP FUNCTION relayflow_count_running()")
    op.drop_index('ix_space_waiters_line', table_name='space_waiters')
    op.drop_table('space_waiters')
    op.drop_column('spaces', 'running_nodes')
    op.drop_column('spaces', 'max_running_nodes')
