"""hot path: a space without a cap does not count its running nodes (node_runs.counted)

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-03 08:35:00

Migration 0005's trigger kept `spaces.running_nodes` exact by updating the space's row on every
node's claim and on every node's end. Every node of a space then updated one row, and the
node's commit held that row's lock until its WAL was flushed: the nodes of a space committed one
at a time (bench: row-lock waits on every commit under load), and each node wrote a lock and two
updates of that row (~220 bytes of WAL) and ran the trigger function twice.

The count is needed only to enforce a cap. The claim now records in `node_runs.counted` whether
it counted the node (its space had a cap: its own `max_running_nodes`, else the workers'
RELAYFLOW_SPACE_MAX_RUNNING_NODES); the trigger counts only such nodes, and the node's end
uncounts it only if it was counted, so a capped space's count stays exact. Existing rows default
to counted (every running node was counted before this migration).

Cost: a node claimed while its space had no cap is not in the count while it runs; if a cap is
set meanwhile, the space may run that many nodes over the cap until they end.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0014'
branch_labels = None
depends_on = None

COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION relayflow_count_running() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer;
    rid uuid;
BEGIN
    -- fired only when a counted node enters or leaves `running` (the triggers' WHEN)
    IF TG_OP = 'DELETE' THEN
        delta := -1; rid := OLD.run_id;
    ELSIF NEW.status = 'running' AND NEW.counted THEN
        delta := 1; rid := NEW.run_id;
    ELSE
        delta := -1; rid := NEW.run_id;
    END IF;
    UPDATE spaces SET running_nodes = running_nodes + delta
     WHERE id = (SELECT space_id FROM runs WHERE id = rid);
    RETURN NULL;
END $$
"""

OLD_COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION relayflow_count_running() RETURNS trigger LANGUAGE plpgsql AS $$
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


def _triggers(counted: str) -> None:
    for name in ("node_runs_running_update", "node_runs_running_insert", "node_runs_running_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON node_runs")
    new, old = f"(NEW.status = 'running'{counted.format(row='NEW')})", f"(OLD.status = 'running'{counted.format(row='OLD')})"
    op.execute(f"""CREATE TRIGGER node_runs_running_update AFTER UPDATE OF status ON node_runs FOR EACH ROW
                   WHEN ({old} IS DISTINCT FROM {new}) EXECUTE FUNCTION relayflow_count_running()""")
    op.execute(f"""CREATE TRIGGER node_runs_running_insert AFTER INSERT ON node_runs FOR EACH ROW
                   WHEN {new} EXECUTE FUNCTION relayflow_count_running()""")
    op.execute(f"""CREATE TRIGGER node_runs_running_delete AFTER DELETE ON node_runs FOR EACH ROW
                   WHEN {old} EXECUTE FUNCTION relayflow_count_running()""")


def upgrade() -> None:
    op.add_column('node_runs', sa.Column('counted', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.execute(COUNT_FUNCTION)
    _triggers(" AND {row}.counted")


def downgrade() -> None:
    op.execute(OLD_COUNT_FUNCTION)
    _triggers("")
    # every running node counts again
    op.execute("""UPDATE spaces s SET running_nodes = (
                      SELECT count(*) FROM runs r JOIN node_runs n ON n.run_id = r.id
                       WHERE r.space_id = s.id AND n.status = 'running')""")
    op.drop_column('node_runs', 'counted')
