"""Command-line values converted without importing pydantic, where the result is certain.

Typer (0.2x) converts every value through a pydantic `TypeAdapter` built for the parameter when
the command runs; the first one imports pydantic (a quarter of `newsletter status`'s start-up,
measured in bench/bench_startup.py). Most of our values are plain text, flags, whole numbers and
paths, whose conversion is known: those are converted here. Anything else (a number with a sign,
a value out of range, a choice...) goes to Typer's own conversion, built on first need, so every
accepted value and every error message is Typer's.

This reaches into Typer's internals (`_runtime_param`, `typer._coercion`): when they are not
there (another Typer version), nothing is changed and Typer converts as usual.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:  # internal to Typer: see the module's docstring
    from typer._coercion import build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - another Typer version: leave conversion to Typer
    build_runtime_param = None  # type: ignore[assignment]
    coerce_cli_path = None  # type: ignore[assignment]

_NOT_SURE = object()
# Whole numbers written plainly; signs, spaces, underscores and the like go to Typer.
_PLAIN_NUMBER = re.compile(r"0|[1-9][0-9]{0,17}")


def skip_pydantic(command: Any) -> None:
    """Give every parameter of `command` (and its subcommands) the quick conversion."""
    if build_runtime_param is None:  # pragma: no cover - another Typer version
        return
    for sub in getattr(command, "commands", {}).values():
        skip_pydantic(sub)
    for param in getattr(command, "params", []):
        _quicken(param)
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None:
        # `--help` is made anew for each run of the command.
        def quick_help(ctx: Any, original: Any = help_option) -> Any:
            option = original(ctx)
            if option is not None:
                _quicken(option)
            return option

        setattr(command, "get_help_option", quick_help)  # noqa: B010 - per instance


def _quicken(param: Any) -> None:
    if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
        param._runtime_param = QuickConversion(param.type_descriptor)


class QuickConversion:
    """A parameter's conversion: known cases here, the rest by Typer's own (built on need)."""

    def __init__(self, descriptor: Any) -> None:
        self._descriptor = descriptor
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        quick = self._quick(value, param, ctx)
        if quick is not _NOT_SURE:
            return quick
        if self._typer is None:
            self._typer = build_runtime_param(self._descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)

    def _quick(self, value: Any, param: Any, ctx: Any) -> Any:
        descriptor = self._descriptor
        info = descriptor.parameter_info
        many = param.multiple or param.nargs == -1
        if value is None:  # as Typer: an absent value
            return () if many else None
        if info.parser is not None or descriptor.file_annotation is not None:
            return _NOT_SURE
        annotation = descriptor.annotation
        if many:
            if (
                annotation == list[str]
                and isinstance(value, (list, tuple))
                and all(isinstance(item, str) for item in value)
            ):
                return [str(item) for item in value]
            return _NOT_SURE
        if annotation is str and isinstance(value, str):
            return str(value)
        if annotation is bool and isinstance(value, bool):
            return value
        if annotation is int and isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value):
            number = int(value)
            if (info.min is not None and number < info.min) or (
                info.max is not None and number > info.max
            ):
                return _NOT_SURE  # Typer words the error (or clamps)
            return number
        if (
            annotation is Path
            and info.path_type is None
            and isinstance(value, str)
            and value
            and "\0" not in value
        ):
            # Typer's checks (exists, file or folder...) run on the Path as they would.
            return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
        return _NOT_SURE
