"""The one finding type that every detector produces and every format renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bnaudit import faults
from bnaudit.fixes import Fix


@dataclass(frozen=True, order=True)
class Finding:
    """A fault found in a source file (``line`` set) or in an artifact (``layer`` set).

    Lines and columns are 1-based, as editors and CI annotations expect.
    """

    path: str
    line: int | None
    column: int | None
    code: str
    message: str
    end_line: int | None = None
    end_column: int | None = None
    fix: str | None = None
    layer: str | None = None
    details: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # Some findings are milder than their fault's default (BN008 when the two layers share variables).
    level: str | None = None
    # The edits that remove the fault, when a rule can say them (see ``bnaudit.fixes``).
    autofix: Fix | None = field(default=None, compare=False)

    @property
    def fault(self) -> faults.Fault:
        return faults.FAULTS[self.code]

    @property
    def name(self) -> str:
        return self.fault.name

    @property
    def severity(self) -> str:
        return self.level or self.fault.severity

    @property
    def fix_hint(self) -> str:
        if self.fix is not None:
            return self.fix
        return self.autofix.title if self.autofix is not None else self.fault.fix

    def to_check_json(self) -> dict[str, Any]:
        """The stable JSON shape of ``bnaudit check --format json``."""
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "message": self.message,
            "fix": self.fix_hint,
            "autofix": self.autofix.to_json() if self.autofix is not None else None,
        }

    def to_graph_json(self) -> dict[str, Any]:
        """The stable JSON shape of ``bnaudit graph --format json``."""
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "path": self.path,
            "layer": self.layer,
            "message": self.message,
            "fix": self.fix_hint,
            "details": self.details or {},
        }
