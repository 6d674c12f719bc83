"""The sandbox every editor-written template renders in: items, subject, preheader, introduction
and the project's theme overrides.

Item files may come from volunteers through a shared folder or a pull request, so a template must
not reach Python (Jinja's immutable sandbox: no `__globals__`, no underscore attributes, no
mutation of values), must not read files (no `include`, `import` or `extends` in content; the
theme's loader only looks in the theme folders), and must not take the machine's memory or time:

- one rendered value is at most `MAX_OUTPUT` characters; operators, method calls and filters
  that would build a larger value (`'A' * 10**9`, `'a'.ljust(10**9)`, `|replace` blow-ups,
  `%`-format widths) are refused *before* the work is done;
- one render takes at most `RENDER_SECONDS`: every loop step, call, filter and operator checks
  the clock, so an endless nest of loops stops with an error naming the file;
- a macro that calls itself without end is a clear error, not a traceback.

The only names a template sees are the documented ones passed in its context, plus `range`
(Jinja's, at most 100,000 steps) and `namespace` (whose values obey the size limit).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context

# One rendered value (an item, a subject, the whole theme output) in characters: a newsletter is
# a few tens of kilobytes, Gmail clips at 102 KB.
MAX_OUTPUT = 1_000_000
# One render of one template; the default theme and a long item take milliseconds.
RENDER_SECONDS = 5.0
# Width or precision in a format string (`%0999999999d`, `{:>999999999}`).
_MAX_WIDTH = 100_000
# Bits of an integer made by `**` (2 ** 65536 already has 19,729 digits).
_MAX_POWER_BITS = 65_536

_LOOP_FILTER = "_newsletter_loop"
_CONCAT_FILTER = "_newsletter_concat"
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")


class LimitError(SecurityError):
    """A template went over the size or time limit."""


def too_large(size: int) -> LimitError:
    return LimitError(
        f"a value would be too large ({size:,} characters; the limit is {MAX_OUTPUT:,})"
    )


class LimitedNamespace(Namespace):
    """`namespace()`: its values obey the size limit (they outlive a loop step)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(value)
        super().__setitem__(name, value)


class Sandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox with limits on size and time; see the module docstring."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.deadline: float | None = None
        self.globals.clear()
        self.globals["range"] = jinja2.sandbox.safe_range
        self.globals["namespace"] = LimitedNamespace

    def guard_filters(self) -> None:
        """Wrap every filter (call after adding your own) so each one checks size and time."""
        for name, function in list(self.filters.items()):
            if not getattr(function, "_newsletter_guarded", False):
                self.filters[name] = _guarded_filter(self, name, function)
        self.filters[_LOOP_FILTER] = _loop_filter(self)
        self.filters[_CONCAT_FILTER] = _concat_filter

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.deadline = None  # raised once; the error unwinds the render
            raise LimitError(
                f"the template took longer than {RENDER_SECONDS:g} s to render "
                "(a loop or macro that does not end?)"
            )

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Every loop steps through a filter that checks the clock; every `~` goes through one
        # that checks the size before joining.
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno
            )
        _replace_concats(tree)
        return tree

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `cycler.__init__` where `cycler` is not defined: say so, not "unsafe attribute".
        if isinstance(obj, jinja2.StrictUndefined):
            obj._fail_with_undefined_error()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, jinja2.StrictUndefined):
            obj._fail_with_undefined_error()
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.check_time()
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        result = super().call_binop(context, operator, left, right)
        _check_size(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.check_time()
        _check_arguments(args, kwargs)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_string_method(owner, getattr(obj, "__name__", ""), args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        _check_size(result)
        return result


def render_limited(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render `template` (from a `Sandbox`) within the size and time limits."""
    environment = template.environment
    if isinstance(environment, Sandbox):
        environment.deadline = time.monotonic() + RENDER_SECONDS
    try:
        size = 0
        chunks: list[str] = []
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise LimitError(
                    f"the rendered text is larger than 1 MB ({MAX_OUTPUT:,} characters)"
                )
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        if isinstance(environment, Sandbox):
            environment.deadline = None


# --- the checks ----------------------------------------------------------------------------------


def _measure(value: Any) -> int:
    """A cheap estimate of the characters `value` stands for (containers: their items)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(item) if isinstance(item, str | bytes) else 1 for item in value)
    return 0


def _check_size(value: Any) -> None:
    size = _measure(value)
    if size > MAX_OUTPUT:
        raise too_large(size)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(times, int) and isinstance(sequence, str | bytes | list | tuple):
        size = max(_measure(sequence), len(sequence)) * max(times, 0)
        if size > MAX_OUTPUT:
            raise too_large(size)


def _check_power(base: Any, exponent: Any) -> None:
    numbers = isinstance(base, int | float) and isinstance(exponent, int | float)
    if numbers and abs(base) > 1 and exponent > 0:
        bits = exponent * math.log2(abs(base))
        if bits > _MAX_POWER_BITS:
            raise LimitError(f"a number would be too large ({base!r} ** {exponent!r})")


def _check_width(number: str | None) -> None:
    if number and number.isdigit() and int(number) > _MAX_WIDTH:
        raise too_large(int(number))


def _check_percent_format(text: str) -> None:
    for match in _PERCENT_SPEC.finditer(text):
        _check_width(match.group(1))
        _check_width(match.group(2))


def _check_brace_format(text: str) -> None:
    for field in _BRACE_FIELD.findall(text):
        for number in re.findall(r"\d+", field.partition(":")[2]):
            _check_width(number)


def _check_arguments(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        _check_size(value)


def _check_widths(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """For padding (`ljust`, `center`, ...): a number argument is the width of the result."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT:
            raise too_large(value)


def _check_string_method(
    text: str, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...]:
    """Refuse str methods that would build a value over the limit; the (maybe listed) args."""
    if method in ("format", "format_map"):
        _check_brace_format(text)
    elif method in ("ljust", "rjust", "center", "zfill"):
        _check_widths(args, kwargs)
    elif method == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1])
    elif method == "expandtabs":
        size = text.count("\t") * (args[0] if args and isinstance(args[0], int) else 8)
        if size > MAX_OUTPUT:
            raise too_large(size)
    elif method == "join" and args:
        items = args[0] if isinstance(args[0], list | tuple) else list(args[0])
        _check_join(text, items)
        args = (items, *args[1:])
    return args


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = len(text) + 1 if not old else text.count(old)
        size = len(text) + count * max(0, len(new) - len(old))
        if size > MAX_OUTPUT:
            raise too_large(size)


def _check_join(separator: str, items: list[Any] | tuple[Any, ...]) -> None:
    size = _measure(items) + len(separator) * max(0, len(items) - 1)
    if size > MAX_OUTPUT:
        raise too_large(size)


# --- filters ---------------------------------------------------------------------------------


def _guarded_filter(
    environment: Sandbox, name: str, function: Callable[..., Any]
) -> Callable[..., Any]:
    """`function` with the clock, its arguments and its result checked.

    Jinja passes a context, eval context or environment first to some filters (marked on the
    function); the wrapper keeps that mark, so the value is then the second argument.
    """
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        environment.check_time()
        value, rest = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        _check_arguments(rest, kwargs)
        if name == "center":
            _check_widths(rest, kwargs)
        elif name == "replace" and len(rest) >= 2:
            _check_replace(str(value), rest[0], rest[1])
        elif name == "format" and isinstance(value, str):
            _check_percent_format(value)
        elif name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            step = len(width) if isinstance(width, str) else int(width)
            size = len(value) + (value.count("\n") + 1) * step
            if size > MAX_OUTPUT:
                raise too_large(size)
        elif name == "join" and value is not None:
            items = value if isinstance(value, list | tuple) else list(value)
            separator = rest[0] if rest else kwargs.get("d", "")
            _check_join(str(separator), items)
            args = (*args[:skip], items, *rest)
        result = function(*args, **kwargs)
        _check_size(result)
        return result

    guarded._newsletter_guarded = True  # type: ignore[attr-defined]
    return guarded


def _loop_filter(environment: Sandbox) -> Callable[[Iterable[Any]], Iterator[Any]]:
    def steps(iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            environment.check_time()
            yield item

    return steps


@pass_eval_context
def _concat_filter(eval_context: nodes.EvalContext, items: list[Any]) -> str:
    """Jinja's `~`, refused before joining when the result would be over the limit."""
    size = sum(len(str(item)) for item in items)
    if size > MAX_OUTPUT:
        raise too_large(size)
    return markup_join(items) if eval_context.autoescape else str_join(items)


def _concat_node(concat: nodes.Concat) -> nodes.Filter:
    # The same list object: a `~` nested inside this one is replaced in it afterwards.
    return nodes.Filter(
        nodes.List(concat.nodes, lineno=concat.lineno),
        _CONCAT_FILTER,
        [],
        [],
        None,
        None,
        lineno=concat.lineno,
    )


def _replace_concats(tree: nodes.Template) -> None:
    for parent in [tree, *tree.find_all(nodes.Node)]:
        for field, value in parent.iter_fields():
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _concat_node(value))
            elif isinstance(value, list):
                value[:] = [
                    _concat_node(child) if isinstance(child, nodes.Concat) else child
                    for child in value
                ]
