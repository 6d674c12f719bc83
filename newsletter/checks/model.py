"""What a check finds: findings with a severity, a code, and where in the sources they are."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing a check found, named by file and line where the sources allow it."""

    severity: Severity
    code: str
    message: str
    file: Path | None = None
    line: int | None = None
    url: str | None = None

    def where(self, root: Path | None = None) -> str:
        """`issues/2026-11/01-a.md:7`, relative to `root` when the file is inside it."""
        if self.file is None:
            return ""
        path = self.file
        if root is not None:
            with contextlib.suppress(ValueError):  # outside the project: shown in full
                path = self.file.relative_to(root)
        return f"{path}:{self.line}" if self.line is not None else str(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": str(self.file) if self.file is not None else None,
            "line": self.line,
            "url": self.url,
        }

    def sort_key(self) -> tuple[int, str, int, str, str]:
        return (
            SEVERITIES.index(self.severity),
            str(self.file or "~"),
            self.line or 0,
            self.code,
            self.message,
        )


@dataclass(frozen=True)
class CheckReport:
    """Every finding of one check run, errors first."""

    issue: str
    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, issue: str, findings: list[Finding]) -> CheckReport:
        unique = list(dict.fromkeys(findings))
        return cls(issue, tuple(sorted(unique, key=Finding.sort_key)))

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def infos(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "info")

    @property
    def ok(self) -> bool:
        """True when nothing stands in the way of sending (warnings allowed)."""
        return not self.errors

    def codes(self, severity: Severity | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    def to_json(self) -> str:
        return json.dumps(
            {
                "issue": self.issue,
                "ok": self.ok,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "findings": [finding.to_dict() for finding in self.findings],
            },
            indent=2,
            ensure_ascii=False,
        )
