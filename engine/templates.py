"""Jinja2 templates in definitions: a sandboxed environment, precompiled values, reference scanning.

This module does no I/O. A string that is exactly one `{{ expr }}` keeps the type of the
expression's result; any other string holding `{{` or `{%` renders to text; everything else is
a literal. References to skipped nodes or missing fields render as "" in text and None in an
expression (`ChainableUndefined`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined, nodes

from engine.errors import DefinitionError, NodeTimeout, PermanentNodeError
from engine.template_fold import check_constants
from engine.template_limits import (
    LimitedEnvironment,
    TemplateLimitExceeded,
    check_deadline,
    json_size,
    limit_error,
    limits,
)

__all__ = [
    "RESERVED_NAMES", "CompiledValue", "TemplateError", "compile_value", "find_references",
    "is_template", "render_text", "template_strings",
]

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
# Tags that need a template loader; the sandbox has none, so they could only fail at run time.
_UNSUPPORTED = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Block)


class TemplateError(DefinitionError):
    """A template in the definition is invalid."""


def _finalize(value: Any) -> Any:
    # In text, a missing value reads as nothing and structured values as JSON, not Python repr.
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        size = json_size(value, limits().max_chars)
        if size > limits().max_chars:
            raise TemplateLimitExceeded(f"a value of about {size:,} characters is over the template limit of "
                                        f"{limits().max_chars:,} (RELAYFLOW_TEMPLATE_MAX_CHARS)")
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


class _Environment(LimitedEnvironment):
    """The bounded sandbox, except that `a.b` on a dict prefers the key `b` over a dict method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Output fields named `items`, `values` or `keys` must not resolve to dict methods.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


# optimized=False: Jinja would otherwise fold constant expressions (and call filters on
# literals) while compiling, i.e. in the API when a definition is saved.
ENV = _Environment(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True,
                   finalize=_finalize, optimized=False)

_KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "if", "else", "elif", "endif", "for", "endfor", "set",
    "endset", "block", "endblock", "macro", "endmacro", "call", "endcall", "filter",
    "endfilter", "with", "endwith", "raw", "endraw", "import", "include", "from", "extends",
    "as", "recursive", "ignore", "missing", "context", "without", "scoped", "required",
    "true", "false", "none", "True", "False", "None",
})
# Names a node id or input may not take: they mean something else inside a template.
RESERVED_NAMES: frozenset[str] = frozenset(ENV.globals) | _KEYWORDS | frozenset(
    {"inputs", "loop", "self", "caller", "varargs", "kwargs"})


def is_template(text: str) -> bool:
    """Whether a string is a template (holds `{{` or `{%`) rather than a literal."""
    return "{{" in text or "{%" in text


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(text)
    if match is None:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in expr or "{#" in expr:
        return None
    # `{{- x -}}` whitespace control markers are not part of the expression.
    if expr[:1] in "-+":
        expr = expr[1:]
    if expr[-1:] in "-+":
        expr = expr[:-1]
    return expr


def _parse(text: str) -> nodes.Template:
    try:
        tree = ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error (line {exc.lineno}): {exc.message}") from exc
    except RecursionError:
        raise TemplateError("template nested too deeply") from None
    for node in tree.find_all(_UNSUPPORTED):
        raise TemplateError(f"template tag '{type(node).__name__.lower()}' is not supported")
    try:
        check_constants(ENV, tree)
    except TemplateLimitExceeded as exc:
        raise TemplateError(f"template limit: {exc}") from None
    return tree


def _plain(value: Any) -> Any:
    # Results must stay JSON-like: undefined parts become None, tuples lists. The size is
    # checked first: a value built from shared parts may be small in memory, huge as JSON.
    size = json_size(value, limits().max_chars)
    if size > limits().max_chars:
        raise TemplateLimitExceeded(f"the value is about {size:,} characters, over the template limit of "
                                    f"{limits().max_chars:,} (RELAYFLOW_TEMPLATE_MAX_CHARS)")
    return _plain_copy(value)


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(v) for v in value]
    return value


def _render_stream(template: Any, context: dict[str, Any]) -> str:
    """Render chunk by chunk, counting: stops at the size limit or the deadline, not after."""
    cap = limits().max_chars
    parts: list[str] = []
    total = 0
    for chunk in template.generate(context):
        total += len(chunk)
        if total > cap:
            raise TemplateLimitExceeded(f"the rendered text passed the template limit of {cap:,} characters "
                                        "(RELAYFLOW_TEMPLATE_MAX_CHARS)")
        parts.append(chunk)
        check_deadline()
    return "".join(parts)


_Renderer = Callable[[dict[str, Any]], Any]


def _guarded(render: _Renderer, path: str) -> _Renderer:
    def run(context: dict[str, Any]) -> Any:
        where = f" in {path}" if path else ""
        try:
            return render(context)
        except NodeTimeout as exc:
            raise type(exc)(f"{exc.message}{where}") from exc
        except TemplateLimitExceeded as exc:
            raise limit_error(exc, where) from exc
        except RecursionError as exc:
            raise PermanentNodeError(f"template error{where}: nested too deeply") from exc
        except Exception as exc:  # user expressions may raise anything; retrying will not help
            raise PermanentNodeError(f"template error{where}: {exc}") from exc
    return run


def _compile_string(text: str, path: str) -> _Renderer | None:
    if not is_template(text):
        return None
    try:
        return _compile_template(text, path)
    except TemplateError as exc:
        raise TemplateError(exc.message, field=path or None) from exc


def _compile_template(text: str, path: str) -> _Renderer:
    expr = _single_expression(text)
    if expr is not None:
        _parse(text)
        try:
            compiled = ENV.compile_expression(expr, undefined_to_none=True)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}") from exc
        except RecursionError:
            raise TemplateError("template nested too deeply") from None
        return _guarded(lambda context: _plain(compiled(context)), path)
    template = ENV.from_string(_parse(text))
    return _guarded(lambda context: _render_stream(template, context), path)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _compile(value: Any, path: str) -> _Renderer | None:
    """A renderer for `value`, or None when the value holds no template at all."""
    if isinstance(value, str):
        return _compile_string(value, path)
    if isinstance(value, dict):
        parts = {k: _compile(v, _join(path, k)) for k, v in value.items()}
        if all(p is None for p in parts.values()):
            return None
        items = [(k, p, value[k]) for k, p in parts.items()]
        return lambda ctx: {k: (p(ctx) if p is not None else _copy(v)) for k, p, v in items}
    if isinstance(value, list):
        parts_l = [(_compile(v, _join(path, i)), v) for i, v in enumerate(value)]
        if all(p is None for p, _ in parts_l):
            return None
        return lambda ctx: [p(ctx) if p is not None else _copy(v) for p, v in parts_l]
    return None


def _copy(value: Any) -> Any:
    # Renders hand out fresh containers so a node mutating its inputs cannot alter the definition.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class CompiledValue:
    """A JSON-like value whose template strings are compiled once and rendered many times."""

    __slots__ = ("source", "_render")

    def __init__(self, source: Any, render: _Renderer | None) -> None:
        self.source = source
        self._render = render

    @property
    def is_static(self) -> bool:
        """Whether the value holds no template (rendering returns a copy of the source)."""
        return self._render is None

    def render(self, context: dict[str, Any]) -> Any:
        """Render against `context`; raises PermanentNodeError when an expression fails."""
        if self._render is None:
            return _copy(self.source)
        return self._render(context)

    def __repr__(self) -> str:
        return f"CompiledValue({self.source!r})"


def compile_value(value: Any, path: str = "") -> CompiledValue:
    """Compile every template string in a JSON-like value; raises TemplateError (field = its path)."""
    return CompiledValue(value, _compile(value, path))


@lru_cache(maxsize=4096)
def _text_template(source: str) -> Any:
    return ENV.from_string(_parse(source))


def render_text(source: str, context: dict[str, Any]) -> str:
    """Render `source` as a text template (compiled templates are cached)."""
    if not is_template(source):
        return source
    template = _text_template(source)
    return str(_guarded(lambda ctx: _render_stream(template, ctx), "")(context))


def find_references(value: Any) -> set[tuple[str, str | None]]:
    """Every (root name, first attribute or None) that template strings in `value` reference."""
    found: set[tuple[str, str | None]] = set()
    for _, text in template_strings(value):
        _visit_body(_parse(text).body, set(), found)
    return found


def template_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, text) of a template string inside a JSON-like value, e.g. ("body.items[0]", "{{ x }}")."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, _join(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, _join(path, index))


def _stored_names(target: nodes.Node) -> set[str]:
    return {n.name for n in target.find_all(nodes.Name) if n.ctx in ("store", "param")} | (
        {target.name} if isinstance(target, nodes.Name) else set())


def _visit_body(body: list[nodes.Node], bound: set[str], found: set[tuple[str, str | None]]) -> None:
    """Visit statements in order; `set` and `macro` bind names for the statements after them."""
    for node in body:
        _visit(node, bound, found)
        if isinstance(node, (nodes.Assign, nodes.AssignBlock)):
            bound |= _stored_names(node.target)
        elif isinstance(node, (nodes.Macro,)):
            bound.add(node.name)


def _visit(node: nodes.Node, bound: set[str], found: set[tuple[str, str | None]]) -> None:
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name not in bound and node.name not in ENV.globals:
            found.add((node.name, None))
        return
    if isinstance(node, (nodes.Getattr, nodes.Getitem)) and isinstance(node.node, nodes.Name):
        root = node.node
        key = node.attr if isinstance(node, nodes.Getattr) else _const_key(node.arg)
        if root.ctx == "load" and root.name not in bound and root.name not in ENV.globals:
            found.add((root.name, key))
        if isinstance(node, nodes.Getitem):
            _visit(node.arg, bound, found)
        return
    if isinstance(node, nodes.For):
        _visit(node.iter, bound, found)
        inner = bound | _stored_names(node.target) | {"loop"}
        if node.test is not None:
            _visit(node.test, inner, found)
        _visit_body(node.body, set(inner), found)
        _visit_body(node.else_, bound, found)
        return
    if isinstance(node, (nodes.Macro, nodes.CallBlock)):
        if isinstance(node, nodes.CallBlock):
            _visit(node.call, bound, found)
        for default in node.defaults:
            _visit(default, bound, found)
        inner = bound | {a.name for a in node.args} | {"varargs", "kwargs", "caller"}
        _visit_body(node.body, set(inner), found)
        return
    if isinstance(node, nodes.With):
        for expr in node.values:
            _visit(expr, bound, found)
        inner = bound | set().union(*(_stored_names(t) for t in node.targets))
        _visit_body(node.body, set(inner), found)
        return
    if isinstance(node, nodes.If):
        _visit(node.test, bound, found)
        # Like Jinja, a `set` inside an `if` is visible after it: share the scope.
        _visit_body(node.body, bound, found)
        for elif_ in node.elif_:
            _visit(elif_, bound, found)
        _visit_body(node.else_, bound, found)
        return
    if isinstance(node, (nodes.Assign, nodes.AssignBlock)):
        if isinstance(node, nodes.Assign):
            _visit(node.node, bound, found)
        else:
            _visit_body(node.body, set(bound), found)
        return
    for child in node.iter_child_nodes():
        _visit(child, bound, found)


def _const_key(arg: nodes.Node) -> str | None:
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return arg.value
    return None
