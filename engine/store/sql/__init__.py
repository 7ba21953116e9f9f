"""Every SQL statement the project runs, by name, with a one-line description.

The modules of this package hold nothing but statements: `runs` (the run lifecycle's hot path:
submit, claim, commit, retry, fail, cancel, interrupt), `unclaimed` (a pure node's read and commit
without a claim), `repairs` (leases and the reconciler's
sweep), `catalog` (spaces, tokens, workflows and versions), `reads` (runs and events as clients
see them), `registry` (model registry generations), `prompts` (the prompt library), `reruns` (a
rerun's insert and lineage), `diagnosis` (the worker registry, why a run is stuck), `retention`
(deleting ended runs past their retention) and `traces` (read only when traces are exported),
`gauges` (what /metrics reads at scrape time). The
store classes in engine/store/
execute them; nothing else in the project writes SQL (tests/unit/test_sql_convention.py checks
it, and tests/integration/test_sql_prepared.py prepares every statement against the migrated
schema). Alembic (migrations/) alone defines the schema.

Why Python constants rather than one `queries.sql` file (procrastinate's way): several statements
share a fragment (the run's row lock, the successor upsert, cancelling the nodes a run never
reached) that is written once here and composed at import time, where a .sql file would repeat
it in each statement; a misspelt name is an import error that ruff and mypy see, not a KeyError
at run time; and there is no package data to ship in the wheel. Each constant is a `Statement`:
its description, then its text with `:name` parameters.

Conventions: CTEs are named for what they hold (`run_lock`, `claimed_node`,
`signalled_successors`); lock order everywhere is the run's row first (`run_lock`, FOR UPDATE,
materialised so it is taken before anything else), then node rows, then the space's row. Status
literals are members of engine/statuses.py's enums.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import TextClause, text

MODULES = ("runs", "unclaimed", "repairs", "catalog", "reads", "registry", "prompts", "reruns", "diagnosis", "retention",
           "traces", "gauges")
_NAMED_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Statement:
    """One SQL statement: what it does (one line), and its text with `:name` parameters."""

    description: str
    sql: str

    @cached_property
    def clause(self) -> TextClause:
        """The statement for SQLAlchemy's `Connection.execute` (built once)."""
        return text(self.sql)

    @cached_property
    def pyformat(self) -> str:
        """The text in psycopg's `%(name)s` style, for the store's raw-connection hot path (built once)."""
        return _NAMED_PARAM.sub(r"%(\1)s", self.sql.replace("%", "%%"))

    @property
    def params(self) -> list[str]:
        """Its parameter names, in order of first use."""
        return list(dict.fromkeys(_NAMED_PARAM.findall(self.sql)))


def all_statements() -> dict[str, Statement]:
    """Every statement of the package by `module.NAME` (the tests prepare each one)."""
    found: dict[str, Statement] = {}
    for module_name in MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for name, value in vars(module).items():
            if isinstance(value, Statement):
                found[f"{module_name}.{name}"] = value
    return found
