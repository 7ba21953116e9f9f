"""status columns accept only the statuses of engine/statuses.py (CHECK constraints)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:30:00

The lists were generated from engine/statuses.py's enums when this migration was written
(`', '.join(repr(s.value) for s in RunStatus)`, and likewise NodeStatus and InterruptStatus) and
are written out here, so this migration never changes when the code does:
tests/unit/test_statuses.py asserts they still equal the enums. A new status needs a new
migration that drops and re-adds the constraint.

Every row written so far has one of these statuses (the statements that write them are named in
engine/statuses.py's transition tables), so adding the constraints validates without a change.
"""
from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# (table, constraint, its CHECK): the names follow engine/schema.py's naming convention (ck_<table>_status).
CHECKS = (
    ('runs', 'ck_runs_status',
     "status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted', 'cancelled')"),
    ('node_runs', 'ck_node_runs_status',
     "status IN ('waiting', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'skipped', 'interrupted', 'cancelled')"),
    ('run_interrupts', 'ck_run_interrupts_status',
     "status IN ('pending', 'answered')"),
)


def upgrade() -> None:
    for table, name, condition in CHECKS:
        op.create_check_constraint(op.f(name), table, condition)


def downgrade() -> None:
    for table, name, _condition in reversed(CHECKS):
        op.drop_constraint(op.f(name), table, type_='check')
