"""The static analyzer behind ``bnaudit check``: libcst facts per file, rules over the whole program."""

from bnaudit.source.engine import CheckResult, analyze

__all__ = ["CheckResult", "analyze"]
