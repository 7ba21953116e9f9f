"""The statuses in the SQL and in the schema are those of engine/statuses.py (no servers).

Like procrastinate's `Status` mirroring its `CREATE TYPE … AS ENUM`: the CHECK lists of migration
0006 (as 0007 replaced them) equal the enums, every status literal a statement compares or writes is a member of the enum
of that column's table, every `IN (…)` list is one of the named sets, and every status a statement
writes is a transition the tables of engine/statuses.py name for that statement.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest

from engine import statuses
from engine.statuses import InterruptStatus, NodeStatus, RunStatus
from engine.store.sql import all_statements

ROOT = Path(__file__).resolve().parents[2]
ENUM_OF_TABLE: dict[str, type[StrEnum]] = {"runs": RunStatus, "node_runs": NodeStatus,
                                           "run_interrupts": InterruptStatus}
# The names the statements give each table whose `status` they compare (a table alias or a CTE
# that returns the table's rows).
TABLE_OF_NAME = {"runs": "runs", "r": "runs", "run_lock": "runs", "c": "runs", "l": "runs",
                 "node_runs": "node_runs", "n": "node_runs", "nr": "node_runs", "d": "node_runs",
                 "signalled_successors": "node_runs", "woken_parent": "node_runs",
                 "run_interrupts": "run_interrupts", "i": "run_interrupts"}
NAMED_SETS: dict[str, list[frozenset[str]]] = {
    "runs": [statuses.LIVE_STATUSES, statuses.UNDER_WAY_STATUSES, statuses.FINAL_STATUSES,
             statuses.SETTLED_STATUSES],
    "node_runs": [statuses.NODE_LIVE_STATUSES, statuses.NODE_CLAIMABLE_STATUSES, statuses.NODE_IN_FLIGHT_STATUSES,
                  statuses.NODE_FINAL_STATUSES],
}
TRANSITIONS: dict[str, Mapping[Any, Mapping[Any, tuple[str, ...]]]] = {
    "runs": statuses.RUN_TRANSITIONS, "node_runs": statuses.NODE_TRANSITIONS,
    "run_interrupts": statuses.INTERRUPT_TRANSITIONS}
# Quoted literals of the SQL that are not statuses.
OTHER_LITERALS = {"synchronous_commit", "off", "{}", "1 minute", "relayflow.model_generations",
                  "attempt", "event_id", "type", "data", "node_id",
                  "child_run_id", "status", "outputs", "error",  # a child's outcome (WAKE_PARENT)
                  "item", "index", "done", "total", "async",  # a batch item's inputs; progress; run_mode
                  "key", "version", "version_id", "latest"}  # a node's pinned prompt (PIN_PROMPT)
# Where a statement writes the status a row already has (not a move, so not in the transitions):
# a resume leaves its run interrupted while another of its interrupts is still pending.
STAYS = {("RESUME_NODE", "runs", "interrupted")}
EVENT_TYPE = re.compile(r"^(run|node)\.[a-z]*$")  # `'run.' || :status` too

_LITERAL = re.compile(r"'([^']*)'")
_QUALIFIED = re.compile(r"\b(\w+)\.status\s*(?:=|<>|!=)\s*'(\w+)'")
_QUALIFIED_IN = re.compile(r"\b(\w+)\.status\s+IN\s*\(([^)]*)\)")
_UNQUALIFIED = re.compile(r"(?<![\w.])status\s*(?:=|<>|!=|\bIN\b)")
_UPDATE_SET = re.compile(r"\bUPDATE\s+(\w+)(?:\s+(?:AS\s+)?(?!SET\b)\w+)?\s+SET\b(.*?)(?=\bFROM\b|\bWHERE\b|\bRETURNING\b|$)",
                         re.DOTALL)
_UPSERT_SET = re.compile(r"\bINSERT\s+INTO\s+(\w+)\b(?:(?!\bINSERT\b).)*?\bDO\s+UPDATE\s+SET\b"
                         r"(.*?)(?=\bFROM\b|\bWHERE\b|\bRETURNING\b|$)", re.DOTALL)
_INSERT = re.compile(r"\bINSERT\s+INTO\s+(\w+)(?:\s+AS\s+\w+)?\s*\(([^)]*)\)\s*(VALUES\s*\(|SELECT\b)", re.DOTALL)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:at])
            start = at + 1
    parts.append(text[start:])
    return parts


def _until_closing(text: str) -> str:
    """The text up to the parenthesis that closes the one opened just before it."""
    depth = 1
    for at, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return text[:at]
    return text


def _select_list(text: str) -> str:
    """A SELECT's output list: the text up to its own FROM (outside parentheses) or its end."""
    depth = 0
    for match in re.finditer(r"[()]|\bFROM\b", text):
        if match.group() == "(":
            depth += 1
        elif match.group() == ")":
            depth -= 1
            if depth < 0:
                return text[:match.start()]
        elif depth == 0:
            return text[:match.start()]
    return text


def written_statuses(sql: str) -> Iterator[tuple[str, set[str]]]:
    """(table, the status literals a SET or an INSERT writes into its `status`)."""
    for pattern in (_UPDATE_SET, _UPSERT_SET):
        for match in pattern.finditer(sql):
            for assignment in _split_top_level(match.group(2)):
                column, _, value = assignment.partition("=")
                if column.strip() == "status":
                    yield match.group(1), set(_LITERAL.findall(value))
    for match in _INSERT.finditer(sql):
        columns = [c.strip() for c in match.group(2).split(",")]
        if "status" not in columns:
            continue
        rest = sql[match.end():]
        values = _until_closing(rest) if match.group(3).startswith("VALUES") else _select_list(rest)
        yield match.group(1), set(_LITERAL.findall(_split_top_level(values)[columns.index("status")]))


def compared_statuses(sql: str) -> Iterator[tuple[str, list[str], bool]]:
    """(table, the status literals compared with its `status`, whether they form an IN list)."""
    for name, literal in _QUALIFIED.findall(sql):
        assert name in TABLE_OF_NAME, f"`{name}.status`: which table is {name}? (add it to TABLE_OF_NAME)"
        yield TABLE_OF_NAME[name], [literal], False
    for name, listed in _QUALIFIED_IN.findall(sql):
        assert name in TABLE_OF_NAME, f"`{name}.status`: which table is {name}? (add it to TABLE_OF_NAME)"
        yield TABLE_OF_NAME[name], _LITERAL.findall(listed), True


def _without_set_lists(sql: str) -> str:
    for pattern in (_UPDATE_SET, _UPSERT_SET):
        sql = pattern.sub(lambda m: m.group(0)[:m.start(2) - m.start(0)], sql)
    return sql


_COMMENT = re.compile(r"--[^\n]*")
# Statement texts without their comments (a comment's apostrophe is not a quote).
STATEMENTS = {name: _COMMENT.sub("", statement.sql) for name, statement in all_statements().items()}


def _migration(name: str) -> ModuleType:
    path = ROOT / "migrations" / "versions" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_check_lists_equal_the_enums() -> None:
    # Given the CHECK constraints migration 0006 wrote out, as later migrations replaced them
    checks = {table: _LITERAL.findall(condition)
              for module in ("0006_status_checks.py", "0007_child_runs.py")
              for table, _name, condition in _migration(module).CHECKS}
    # Then each lists exactly its table's enum, in the enum's order
    assert checks == {table: [s.value for s in enum] for table, enum in ENUM_OF_TABLE.items()}


def test_the_api_type_lists_exactly_the_run_statuses() -> None:
    assert get_args(statuses.RunStatusName) == tuple(s.value for s in RunStatus)


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_status_a_statement_compares_is_a_member_of_its_table_enum(name: str) -> None:
    sql = STATEMENTS[name]
    # Every status comparison names its table (a SET target cannot be qualified, so it is read apart)
    assert not _UNQUALIFIED.search(_without_set_lists(sql)), f"{name}: qualify `status` with its table"
    for table, literals, is_list in compared_statuses(sql):
        enum = ENUM_OF_TABLE[table]
        assert {s.value for s in enum} >= set(literals), f"{name}: {literals} on {table}"
        if is_list:  # an IN list is one of the sets engine/statuses.py names
            assert frozenset(literals) in NAMED_SETS[table], f"{name}: {literals} is not a named set of {table}"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_status_a_statement_writes_is_a_transition_it_is_named_for(name: str) -> None:
    short = name.split(".", 1)[1]
    for table, literals in written_statuses(STATEMENTS[name]):
        enum, transitions = ENUM_OF_TABLE[table], TRANSITIONS[table]
        for literal in literals:
            target = enum(literal)  # a ValueError names a status that is not one
            moves_into = {s for moves in transitions.values() for s in moves.get(target, ())}
            assert short in moves_into or (short, table, literal) in STAYS, \
                f"{name} writes {table}.status = {literal!r}: not in its transitions"


def test_every_literal_in_the_sql_is_a_status_or_a_known_other_word() -> None:
    # A misspelt status anywhere (a CASE, a VALUES list, a cast) is neither.
    vocabulary = {s.value for enum in ENUM_OF_TABLE.values() for s in enum} | OTHER_LITERALS
    strays = {(name, literal) for name, statement in STATEMENTS.items() for literal in _LITERAL.findall(statement)
              if literal not in vocabulary and not EVENT_TYPE.match(literal)}
    assert strays == set()


def test_the_parsers_of_this_test_see_what_they_must() -> None:
    # Guards against a test that cannot fail: the readers find the writes and comparisons they exist for.
    claim = STATEMENTS["runs.CLAIM"]
    assert dict(written_statuses(claim)) == {"node_runs": {"running"}, "runs": {"running"}}
    assert ("runs", ["queued", "running", "interrupted"], True) in list(compared_statuses(claim))
    commit = dict(written_statuses(STATEMENTS["runs.COMMIT_NODE"]))
    assert commit["node_runs"] == {"waiting", "queued", "skipped"}
    assert dict(written_statuses(STATEMENTS["runs.INSERT_RUN"])) == {"runs": {"queued"},
                                                                         "node_runs": {"queued", "waiting"}}


def test_every_statement_the_transitions_name_exists() -> None:
    names = {name.split(".", 1)[1] for name in STATEMENTS}
    for transitions in TRANSITIONS.values():
        for moves in transitions.values():
            for target, movers in moves.items():
                assert set(movers) <= names, f"{target}: {movers}"


def test_final_statuses_go_nowhere_and_live_ones_can_end() -> None:
    assert all(not statuses.RUN_TRANSITIONS[s] for s in statuses.FINAL_STATUSES)
    assert all(not statuses.NODE_TRANSITIONS[s] for s in statuses.NODE_FINAL_STATUSES)
    assert all(RunStatus.CANCELLED in statuses.RUN_TRANSITIONS[s] for s in statuses.LIVE_STATUSES)
    assert all(NodeStatus.CANCELLED in statuses.NODE_TRANSITIONS[s] for s in statuses.NODE_LIVE_STATUSES)
    assert statuses.run_may_move("interrupted", "running") and not statuses.run_may_move("succeeded", "running")
    assert statuses.node_may_move("retrying", "running") and not statuses.node_may_move("waiting", "running")


def test_the_migrations_compare_status_only_with_statuses() -> None:
    every = {s.value for enum in ENUM_OF_TABLE.values() for s in enum}
    for path in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"status\s*(?:=\s*'(\w+)'|IN\s*\(([^)]*)\))", text):
            found = {match.group(1)} if match.group(1) else set(_LITERAL.findall(match.group(2)))
            assert found <= every, f"{path.name}: {found - every}"
