"""Save-time check of templates: what a template computes from literals alone, evaluated with the limits.

`{{ (9**20000000) % 7 }}` or `{{ 'x' * 10**8 }}` breaks a limit without any input, so the
definition is refused when saved (a 422 naming the field) rather than failing every run.
Anything that depends on a variable is left to run time. No I/O.
"""
from __future__ import annotations

import time
from typing import Any

from jinja2 import nodes

from engine.template_limits import (
    LimitedEnvironment,
    TemplateLimitExceeded,
    TemplateTimeout,
    bounded_concat,
    bounded_range,
    check_str_method,
    deadline,
)

__all__ = ["check_constants"]


class _NotConstant(Exception):
    pass


_BIN_NODES: dict[type, str] = {nodes.Pow: "**", nodes.Mul: "*", nodes.Mod: "%", nodes.Add: "+",
                               nodes.FloorDiv: "//", nodes.Sub: "-"}
_FOLD_BUDGET_S = 1.0


def check_constants(env: LimitedEnvironment, tree: nodes.Node) -> None:
    """Evaluate, with the limits, what the template computes from literals alone; raise TemplateLimitExceeded.

    Run when a definition is saved: `{{ (9**20000000) % 7 }}` or `{{ 'x' * 10**8 }}` is known
    to break a limit without any input, so it is refused then (a 422 naming the field), not at
    every run. Anything that depends on a variable is left to run time.
    """
    with deadline(time.monotonic() + _FOLD_BUDGET_S):
        for expr in tree.find_all(nodes.Expr):
            try:
                _fold(env, expr)
            except (_NotConstant, TemplateTimeout):
                continue
            except TemplateLimitExceeded:
                raise
            except Exception:  # e.g. 1/0 in a literal: a run-time error like any other  # noqa: S112
                continue


def _fold(env: LimitedEnvironment, node: nodes.Node) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return [_fold(env, item) for item in node.items]
    if type(node) in _BIN_NODES:
        assert isinstance(node, nodes.BinExpr)
        return env.call_binop(None, _BIN_NODES[type(node)], _fold(env, node.left), _fold(env, node.right))
    if isinstance(node, nodes.Neg):
        return env.call_unop(None, "-", _fold(env, node.node))
    if isinstance(node, nodes.Concat):
        return bounded_concat(_fold(env, part) for part in node.nodes)
    if isinstance(node, nodes.Filter) and node.node is not None and not (node.dyn_args or node.dyn_kwargs):
        func = env.filters.get(node.name)
        if func is None or getattr(func, "jinja_pass_arg", None) is not None:
            raise _NotConstant
        args = [_fold(env, node.node), *(_fold(env, a) for a in node.args)]
        return func(*args, **{str(kw.key): _fold(env, kw.value) for kw in node.kwargs})
    if isinstance(node, nodes.Call) and not (node.dyn_args or node.dyn_kwargs or node.kwargs):
        args = [_fold(env, a) for a in node.args]
        if isinstance(node.node, nodes.Name) and node.node.name == "range":
            return bounded_range(*args)
        if isinstance(node.node, nodes.Getattr) and isinstance(node.node.node, nodes.Const):
            owner = node.node.node.value
            if isinstance(owner, str):
                method = env.getattr(owner, node.node.attr)
                if callable(method):
                    check_str_method(method, tuple(args), {})
                    return method(*args)
    raise _NotConstant
