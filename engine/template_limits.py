"""Bounds on template evaluation: sizes, integer growth, and a deadline, for untrusted authors.

Jinja's sandbox stops attribute escapes but not work: `9**20000000` or `'x' * 10**8` run
to the end, and Jinja even folds such constants while compiling, i.e. inside the API when a
definition is saved. The environment here intercepts the operators that grow values
(`**`, `*`, `%`, `+`, `//`), bounds every string a filter, a method or `~` builds, lowers
`range`, and checks a per-thread deadline in every hook and between output chunks. Limits
come from settings via `configure`; the deadline from `deadline()` (the executor sets it to
the node's timeout). No I/O.
"""
from __future__ import annotations

import functools
import math
import operator
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeGuard

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import NodeTimeout, PermanentNodeError

__all__ = ["Limits", "LimitedEnvironment", "TemplateLimitExceeded", "TemplateTimeout", "bounded_concat",
           "bounded_range", "check_deadline", "check_str_method", "configure", "deadline", "json_size", "limits"]


@dataclass(frozen=True)
class Limits:
    """What one template evaluation may build (defaults = the settings' defaults)."""

    max_chars: int = 1024 * 1024  # any string or list a template builds, and its rendered value
    max_int_bits: int = 4096  # an integer's size (about 1,233 decimal digits)
    max_range: int = 10_000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits an engine.settings.Settings sets."""
        return cls(settings.template_max_chars, settings.template_max_int_bits, settings.template_max_range)


_limits = Limits()
_local = threading.local()


def configure(new: Limits) -> None:
    """Set this process's template limits (called once with the settings)."""
    global _limits
    _limits = new


def limits() -> Limits:
    """This process's template limits."""
    return _limits


class TemplateLimitExceeded(Exception):
    """A template tried to build a value over a limit."""


class TemplateTimeout(NodeTimeout):
    """The template was still rendering at the node's timeout."""


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Templates rendered on this thread inside the block stop at monotonic time `at`."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = at
    try:
        yield
    finally:
        _local.deadline = previous


def check_deadline() -> None:
    """Raise TemplateTimeout when this thread's rendering deadline has passed."""
    at = getattr(_local, "deadline", None)
    if at is not None and time.monotonic() > at:
        raise TemplateTimeout("the template was still rendering at the node's timeout")


def json_size(value: Any, limit: int) -> int:
    """About the UTF-8 size of `value` as JSON; stops counting once past `limit` (shared parts count each time)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += (len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += 2 + len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 16
        if total > limit:
            return total
    return total


def _too_big(what: str, size: int) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(f"{what} would be {size:,} long, over the template limit of "
                                 f"{_limits.max_chars:,} (RELAYFLOW_TEMPLATE_MAX_CHARS)")


def _check_len(what: str, size: int) -> None:
    if size > _limits.max_chars:
        raise _too_big(what, size)


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _limits.max_int_bits:
        raise TemplateLimitExceeded(f"an integer of {value.bit_length():,} bits is over the template limit of "
                                    f"{_limits.max_int_bits:,} bits (RELAYFLOW_TEMPLATE_MAX_INT_BITS)")
    return value


def _int_like(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _power(left: Any, right: Any) -> Any:
    if _int_like(left) and _int_like(right) and right > 0 and abs(left) > 1:
        bits = right * math.log2(abs(left))
        if bits > _limits.max_int_bits:
            raise TemplateLimitExceeded(f"{left} ** {right} has about {bits:,.0f} bits, over the template limit "
                                        f"of {_limits.max_int_bits:,} bits (RELAYFLOW_TEMPLATE_MAX_INT_BITS)")
    return _check_int(left ** right)


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _multiply(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        size = _sized(seq)
        if size is not None and _int_like(count):
            _check_len("a repeated value", size * max(count, 0))
            if isinstance(seq, (list, tuple)):
                _check_len("a repeated list's content", json_size(seq, _limits.max_chars) * max(count, 0))
    if _int_like(left) and _int_like(right):
        bits = left.bit_length() + right.bit_length()
        if bits > _limits.max_int_bits + 1:
            raise TemplateLimitExceeded(f"a product of about {bits:,} bits is over the template limit of "
                                        f"{_limits.max_int_bits:,} bits (RELAYFLOW_TEMPLATE_MAX_INT_BITS)")
    return left * right


def _add(left: Any, right: Any) -> Any:
    a, b = _sized(left), _sized(right)
    if a is not None and b is not None:
        _check_len("a concatenated value", a + b)
    return _check_int(left + right)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise TemplateLimitExceeded("'*' widths in % formatting are not allowed in templates")
            if part is not None and int(part) > _limits.max_chars:
                raise _too_big("a % format width", int(part))


def _check_format_spec(fmt: str, depth: int = 0) -> None:
    if depth > 2:
        return
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec:
            for number in _DIGITS.findall(spec):
                if len(number) > 9 or int(number) > _limits.max_chars:
                    raise _too_big("a format width", int(number) if len(number) < 30 else 10 ** 30)
            _check_format_spec(spec, depth + 1)


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_printf(left)
        args = right if isinstance(right, tuple) else (right,)
        _check_len("a formatted string", len(left) + sum(json_size(a, _limits.max_chars) for a in args))
    return _check_int(left % right)


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "**": _power, "*": _multiply, "%": _modulo, "+": _add,
    "//": lambda a, b: _check_int(a // b), "-": lambda a, b: _check_int(a - b),
}


def bounded_concat(parts: Iterable[Any]) -> str:
    """`a ~ b`, block bodies and macro results: joined, with the size and the deadline checked."""
    out: list[str] = []
    total = 0
    for part in parts:
        if not isinstance(part, str):
            _check_len("a joined value", total + json_size(part, _limits.max_chars))
            part = str(part)
        total += len(part)
        _check_len("a joined value", total)
        out.append(part)
    check_deadline()
    return "".join(out)


def bounded_range(*args: int) -> range:
    check_deadline()
    rng = range(*args)
    if len(rng) > _limits.max_range:
        raise TemplateLimitExceeded(f"range of {len(rng):,} items is over the template limit of "
                                    f"{_limits.max_range:,} (RELAYFLOW_TEMPLATE_MAX_RANGE)")
    return rng


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, except that `~` goes through the bounded `concat`."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def check_str_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse str methods whose result would pass the size limit, before they allocate it."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill") and _int_like(first):
        _check_len(f"str.{name}()", first)
    elif name == "expandtabs":
        size = first if _int_like(first) else kwargs.get("tabsize", 8)
        if _int_like(size):
            _check_len("str.expandtabs()", len(owner) + owner.count("\t") * max(size, 0))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = owner.count(args[0]) if args[0] else len(owner) + 1
        _check_len("str.replace()", len(owner) + hits * max(len(args[1]) - len(args[0]), 0))
    elif name == "join" and first is not None:
        items = list(first) if not isinstance(first, (list, tuple, str)) else first
        _check_len("str.join()", sum(json_size(i, _limits.max_chars) for i in items) + len(owner) * len(items))


def _filter_precheck(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Filters that take a size, or that serialise a value, are checked before they run."""
    value = args[0] if args else None
    rest = args[1:]
    if name == "center":
        width = rest[0] if rest else kwargs.get("width", 80)
        if _int_like(width):
            _check_len("the center filter", width)
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        pad = width if _int_like(width) else len(str(width))
        text = str(value) if isinstance(value, str) else ""
        _check_len("the indent filter", len(text) + (text.count("\n") + 1) * max(pad, 0))
    elif name == "format" and isinstance(value, str):
        _check_printf(value)
    elif name in ("tojson", "string", "pprint", "join", "list", "wordwrap", "replace", "urlize", "sum"):
        target = args[1] if name == "join" and len(args) > 1 and not isinstance(args[0], str) else value
        _check_len(f"the {name} filter's input", json_size(target, _limits.max_chars))
        if name == "replace" and len(rest) >= 2 and isinstance(value, str) and isinstance(rest[0], str):
            hits = value.count(rest[0]) if rest[0] else len(value) + 1
            _check_len("the replace filter", len(value) + hits * max(len(str(rest[1])) - len(rest[0]), 0))


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps Jinja's pass_context/pass_eval_context marks
    def run(*args: Any, **kwargs: Any) -> Any:
        check_deadline()
        # The first argument may be Jinja's context; the filtered value follows it.
        plain = args[1:] if args and getattr(func, "jinja_pass_arg", None) is not None else args
        _filter_precheck(name, plain, kwargs)
        result = func(*args, **kwargs)
        if isinstance(result, (str, list)):
            _check_len(f"the {name} filter's result", len(result))
        return _check_int(result)
    return run


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with bounded operators, filters, `~`, `range` and a deadline in every hook."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset(_BINOPS)
    intercepted_unops = frozenset({"-"})
    concat = staticmethod(bounded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.globals.pop("lipsum", None)  # builds up to any size asked; templates do not need it
        self.globals["range"] = bounded_range

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        """`**`, `*`, `%`, `+`, `//`, `-` with their results' sizes bounded."""
        check_deadline()
        return _BINOPS[operator_](left, right)

    def call_unop(self, context: Any, operator_: str, arg: Any) -> Any:
        """Unary minus, deadline checked."""
        check_deadline()
        return operator.neg(arg)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """A call from a template: deadline checked, str methods that grow strings bounded."""
        check_deadline()
        check_str_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access, deadline checked."""
        check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Item access, deadline checked."""
        check_deadline()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` with its width specifiers bounded."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            _check_format_spec(fmt)
            result = wrapped(*args, **kwargs)
            _check_len("a formatted string", len(result))
            return result
        return bounded


def limit_error(exc: TemplateLimitExceeded, where: str) -> PermanentNodeError:
    """A limit breach as the node's permanent error."""
    return PermanentNodeError(f"template limit{where}: {exc}")

