"""Source rules: small classes that judge the whole program's facts.

A rule declares its code, its own valid and invalid examples (run by the test
suite, as in Fixit), and a ``check`` that reports through ``Report``.  The
framework does the parsing, the linking, the positions and the output.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import ClassVar

from bnaudit import faults
from bnaudit.fixes import Fix
from bnaudit.source.facts import ModuleFacts
from bnaudit.source.program import Program


@dataclass(frozen=True)
class RawFinding:
    """A finding before positions: the node is named by its pre-order index in its file.

    ``related`` are other nodes whose ``path:line`` fill the ``{0}``, ``{1}``... of the message.
    """
    code: str
    path: str
    loc: int
    message: str
    related: tuple[tuple[str, int], ...] = ()
    fix: str | None = None
    severity: str | None = None
    autofix: Fix | None = None


class Report:
    """Where a run's findings collect: one finding per code and node, however many instantiations
    of a function reach it."""

    def __init__(self) -> None:
        self.findings: list[RawFinding] = []
        self._seen: set[tuple[str, str, int]] = set()

    def add(self, finding: RawFinding) -> None:
        key = (finding.code, finding.path, finding.loc)
        if key not in self._seen:
            self._seen.add(key)
            self.findings.append(finding)


class Rule:
    """Subclass with ``code``, ``valid`` and ``invalid`` examples, and ``check``; report with ``self.report``.

    ``fixes`` pairs code the rule reports with the code ``--fix --unsafe-fixes`` makes of it (a
    display-only fix: what ``--diff`` suggests), as Fixit's examples carry their expected result.
    The message says what is wrong here, in one line; why it matters is the fault's document, and
    what to do is the fix's title (or the document's ``fix``).
    """

    code: ClassVar[str]
    valid: ClassVar[tuple[str, ...]] = ()
    invalid: ClassVar[tuple[str, ...]] = ()
    fixes: ClassVar[tuple[tuple[str, str], ...]] = ()
    registry: ClassVar[list[type["Rule"]]] = []

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "code", None):
            assert cls.code in faults.FAULTS, cls.code
            Rule.registry.append(cls)

    def __init__(self, sink: Report) -> None:
        self._sink = sink

    def report(self, module: ModuleFacts, loc: int, message: str, *, related: tuple[tuple[str, int], ...] = (),
               fix: str | None = None, severity: str | None = None, autofix: Fix | None = None) -> None:
        """Report this rule's fault at node ``loc`` of ``module``; ``related`` nodes fill ``{0}``... of
        the message with their ``path:line``; ``fix`` overrides the action, ``autofix`` gives the edits."""
        self._sink.add(RawFinding(self.code, module.path, loc, message, related, fix, severity, autofix))

    def check(self, program: Program) -> None:
        raise NotImplementedError


def load_rules() -> list[type[Rule]]:
    """Import every module of this package (importing a module registers its rules), in code order."""
    global _LOADED
    if not _LOADED:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        Rule.registry.sort(key=lambda rule: rule.code)
        _LOADED = True
    return Rule.registry


_LOADED = False


def run_all(program: Program, codes: set[str] | None = None,
            errors: list[str] | None = None) -> list[RawFinding]:
    """Every selected rule over the program; a rule that fails is reported in ``errors``, not fatal."""
    load_rules()
    report = Report()
    for rule in Rule.registry:
        if codes is None or rule.code in codes:
            try:
                rule(report).check(program)
            except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
                if os.environ.get("BNAUDIT_DEBUG"):
                    raise
                if errors is not None:
                    errors.append(f"internal error in rule {rule.code} ({type(exc).__name__}: {exc}); its "
                                  f"findings are missing; set BNAUDIT_DEBUG=1 for a traceback")
    return report.findings
