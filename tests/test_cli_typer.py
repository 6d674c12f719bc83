"""cli/_typer.py: values converted without pydantic are converted exactly as Typer does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer._coercion import build_runtime_param

from newsletter.cli._typer import QuickConversion
from newsletter.cli.commands import cli_command

VALUES: tuple[Any, ...] = (
    None,
    "",
    "x",
    "2026-11",
    " 7",
    "7",
    "0",
    "-1",
    "+3",
    "007",
    "1_000",
    "5.0",
    "99999999999999999999999",
    "abc",
    "dist/out",
    "a\0b",
    ("a", "b"),
    (),
    True,
    False,
)


def _parameters(command: Any) -> list[Any]:
    found = list(getattr(command, "params", []))
    for sub in getattr(command, "commands", {}).values():
        found += _parameters(sub)
    return found


def _outcome(conversion: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        return "value", conversion.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as err:
        return "error", err.format_message()


def test_every_parameter_converts_every_value_as_typer_does(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "out").write_text("a file")
    parameters = _parameters(cli_command(["--help"]))
    kinds = {repr(param.type_descriptor.annotation) for param in parameters}
    assert {"<class 'str'>", "<class 'int'>", "<class 'pathlib.Path'>", "list[str]"} <= kinds
    ctx = typer.Context(cli_command(["--help"]))
    compared = 0
    for param in parameters:
        descriptor = param.type_descriptor
        for value in VALUES:
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(tmp_path)
                quick = _outcome(QuickConversion(descriptor), value, param, ctx)
                typers = _outcome(build_runtime_param(descriptor), value, param, ctx)
            assert quick == typers, (param.name, descriptor.annotation, value)
            compared += 1
    assert compared > 500


def test_a_bad_number_gets_typers_message() -> None:
    command = cli_command(["serve", "--workers", "0"])
    with pytest.raises(typer.BadParameter) as raised:
        command(["serve", "--workers", "0"], standalone_mode=False)
    assert raised.value.format_message() == (
        "Invalid value for '--workers': Input should be greater than or equal to 1"
    )
