"""One SQL convention: every statement lives in engine/store/sql/, named, described in one line,
its CTEs named for their purpose (no servers; the statements are prepared against the schema
in tests/integration/test_sql_prepared.py)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from engine.store.sql import Statement, all_statements

ROOT = Path(__file__).resolve().parents[2]
SQL_PACKAGE = ROOT / "engine" / "store" / "sql"
# Not the application's statements: the schema's own text (server defaults and index predicates
# of the models Alembic compares) and the local stack's server bootstrap (CREATE DATABASE on the
# maintenance database, before any migration).
NOT_STATEMENTS = {ROOT / "engine" / "schema.py", ROOT / "api" / "localstack" / "embedded.py"}
_SQL_START = re.compile(r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s.*\bSET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\b)", re.DOTALL)
_CTE = re.compile(r"(?:\bWITH|,)\s*(\w+)\s+AS\s+(?:MATERIALIZED\s+)?\(")


def test_every_statement_is_named_and_described_in_one_line() -> None:
    statements = all_statements()
    for name, statement in statements.items():
        _module, _, constant = name.partition(".")
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", constant), name
        assert statement.description.strip() and "\n" not in statement.description, name
        assert statement.description.endswith("."), name
    # every module of the package holds statements
    assert {name.partition(".")[0] for name in statements} == {"runs", "unclaimed", "repairs", "catalog", "reads", "registry",
                                                               "prompts", "reruns", "diagnosis", "retention",
                                                               "traces", "gauges"}


def test_every_cte_is_named_for_its_purpose() -> None:
    short = {(name, cte) for name, statement in all_statements().items() for cte in _CTE.findall(statement.sql)
             if len(cte) < 5}
    assert short == set()


def test_the_parameters_are_read_as_the_database_driver_sends_them() -> None:
    claim = all_statements()["runs.CLAIM"]
    assert claim.params[:3] == ["run", "cap", "node"]
    assert "%(run)s" in claim.pyformat and ":run" not in claim.pyformat
    cast = Statement("A cast.", "SELECT CAST(:a AS int), 5 % 2, x::text")
    assert cast.pyformat == "SELECT CAST(%(a)s AS int), 5 %% 2, x::text"


def _sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string in the source that reads as an SQL statement, and of each `text(...)` call."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL_START.match(node.value):
            found.append((node.lineno, node.value.strip()[:60]))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "text":
            found.append((node.lineno, "text(...)"))  # SQLAlchemy's, whatever it holds
    return found


def test_no_sql_is_written_outside_the_sql_package() -> None:
    # Given every module of the application (not the tests, benchmarks or migrations)
    modules = [p for folder in ("engine", "api", "workers") for p in sorted((ROOT / folder).rglob("*.py"))
               if SQL_PACKAGE not in p.parents and p not in NOT_STATEMENTS]
    assert len(modules) > 40
    # Then none of them holds a statement of its own
    strays = {f"{p.relative_to(ROOT)}:{line}: {what}" for p in modules
              for line, what in _sql_literals(p.read_text(encoding="utf-8"))}
    assert strays == set()


def test_the_stray_finder_finds_strays() -> None:
    # Guards against a test that cannot fail.
    source = ("rows = conn.execute(text(QUERY))\n"
              "done = cur.execute('UPDATE runs SET status = %s WHERE id = %s', ['x', 1])\n"
              "sent = f'WITH run_lock AS (SELECT 1) DELETE FROM t'\n"
              "word = 'SELECTED nodes'\n")
    assert [line for line, _what in _sql_literals(source)] == [1, 2, 3]
