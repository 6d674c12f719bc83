"""A `CheckReport` on the terminal, with rich: errors first, each with its file and line."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .model import CheckReport, Finding, Severity

_STYLE: dict[Severity, str] = {"error": "bold red", "warning": "yellow", "info": "dim"}


def print_report(
    report: CheckReport,
    console: Console,
    *,
    root: Path | None = None,
    show_info: bool = True,
) -> None:
    """Print every finding (infos unless `show_info` is False) and a one-line summary."""
    for finding in report.findings:
        if finding.severity == "info" and not show_info:
            continue
        console.print(format_finding(finding, root=root), highlight=False, soft_wrap=True)
    errors, warnings = len(report.errors), len(report.warnings)
    if errors:
        summary = f"[bold red]{_count(errors, 'error')}[/], {_count(warnings, 'warning')}"
        summary += f": {escape(report.issue)} must not be sent like this"
    elif warnings:
        summary = f"[green]no errors[/], [yellow]{_count(warnings, 'warning')}[/] in "
        summary += escape(report.issue)
    else:
        summary = f"[green]no errors, no warnings[/] in {escape(report.issue)}"
    console.print(summary, highlight=False)


def format_finding(finding: Finding, *, root: Path | None = None) -> str:
    """`error    issues/2026-11/01-a.md:7  message  [code]` as rich markup."""
    style = _STYLE[finding.severity]
    where = finding.where(root)
    location = f"[bold]{escape(where)}[/]  " if where else ""
    return (
        f"[{style}]{finding.severity:<7}[/] {location}{escape(finding.message)} "
        f"[dim]\\[{finding.code}][/]"
    )


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"
