"""The `selector` node (Coze Studio's If node): picks the first branch whose conditions hold.

Pure: no I/O. The engine renders `left`/`right` templates before `run`, so here they are values.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from engine.nodes.base import NodeConfig, NodeContext, NodeType

ELSE = "else"
RESERVED_PORTS = frozenset({ELSE, "error"})
Operator = Literal["=", "!=", ">", ">=", "<", "<=", "contains", "not_contains",
                   "empty", "not_empty", "is_true", "is_false"]
_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


class Condition(NodeConfig):
    """One comparison `left op right` (`right` is unused by the unary operators)."""

    left: Any = None
    op: Operator
    right: Any = None


class Branch(NodeConfig):
    """A named port chosen when its conditions hold (all of them for `and`, one for `or`)."""

    name: str
    logic: Literal["and", "or"] = "and"
    conditions: list[Condition] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_is_a_port(cls, name: str) -> str:
        if not name.isidentifier():
            raise ValueError(f"branch name {name!r} must be an identifier (letters, digits, _)")
        if name in RESERVED_PORTS:
            raise ValueError(f"branch name {name!r} is reserved; choose another")
        return name


class SelectorConfig(NodeConfig):
    """Config of a `selector` node: branches evaluated in order, else the `else` port."""

    branches: list[Branch] = Field(min_length=1)

    @field_validator("branches")
    @classmethod
    def _unique_names(cls, branches: list[Branch]) -> list[Branch]:
        seen: set[str] = set()
        for branch in branches:
            if branch.name in seen:
                raise ValueError(f"branch name {branch.name!r} is used twice")
            seen.add(branch.name)
        return branches


class SelectorNode(NodeType[SelectorConfig]):
    """Outputs `{"branch": name}` of the first matching branch, or `"else"`."""

    type_name = "selector"
    pure = True
    Config = SelectorConfig
    port_output: ClassVar[str | None] = "branch"

    @classmethod
    def ports(cls, config: NodeConfig) -> frozenset[str]:
        """The branch names plus `else`."""
        assert isinstance(config, SelectorConfig)
        return frozenset(b.name for b in config.branches) | {ELSE}

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `branch`."""
        return frozenset({"branch"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Choose the branch."""
        return {"branch": choose_branch(self.config)}


def choose_branch(config: SelectorConfig) -> str:
    """Name of the first branch whose conditions hold, else `"else"`."""
    for branch in config.branches:
        results = (evaluate(c.op, c.left, c.right) for c in branch.conditions)
        if all(results) if branch.logic == "and" else any(results):
            return branch.name
    return ELSE


def evaluate(op: str, left: Any, right: Any) -> bool:
    """Whether `left op right` holds; type mismatches make a condition false, never an error."""
    if op == "=":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in (">", ">=", "<", "<="):
        return _order(op, left, right)
    if op == "contains":
        return _contains(left, right)
    if op == "not_contains":
        return not _contains(left, right)
    if op == "empty":
        return _is_empty(left)
    if op == "not_empty":
        return not _is_empty(left)
    if op == "is_true":
        return _boolean(left) is True
    if op == "is_false":
        return _boolean(left) is False
    raise ValueError(f"unknown operator {op!r}")


def _number(value: Any) -> float | None:
    """The value as a number if it is one or a numeric string; bools are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    return None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _equal(left: Any, right: Any) -> bool:
    left_n, right_n = _number(left), _number(right)
    if left_n is not None and right_n is not None:
        return left_n == right_n
    if isinstance(left, bool) or isinstance(right, bool):
        left_b, right_b = _boolean(left), _boolean(right)
        return left_b is not None and left_b == right_b
    return bool(left == right)


def _order(op: str, left: Any, right: Any) -> bool:
    left_n, right_n = _number(left), _number(right)
    if left_n is not None and right_n is not None:
        a: Any = left_n
        b: Any = right_n
    elif isinstance(left, str) and isinstance(right, str):
        a, b = left, right
    else:
        return False
    return bool({">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op])


def _contains(left: Any, right: Any) -> bool:
    if isinstance(left, str):
        if right is None or isinstance(right, (list, dict)):
            return False
        needle = _scalar_text(right)
        return needle in left
    if isinstance(left, list):
        return any(_equal(item, right) for item in left)
    if isinstance(left, dict):
        return right is not None and not isinstance(right, (list, dict)) and _scalar_text(right) in left
    return False


def _scalar_text(value: Any) -> str:
    # JSON spelling, so that `True` is looked up as "true" like a rendered template would be.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}
