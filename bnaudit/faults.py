"""The catalogue of batch-norm faults: one code, one name, one document each.

Both halves of bnaudit (the source analyzer and the graph inspector) report
under these codes, so a user reads one explanation whatever found the fault.
Each fault is one document, ``bnaudit/rules/BNxxx-name.md``: its front matter is the fault's
code, name, severity, detectors, summary and fix title, loaded here, and its sections are
what ``bnaudit explain`` prints.  Adding a fault starts with adding its document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

ERROR = "error"
WARNING = "warning"

SOURCE = "source"     # a rule of the static analyzer (bnaudit.source.rules)
GRAPH = "graph"       # a check of the artifact inspector (bnaudit.graph.checks)
PARSER = "parser"     # the static analyzer's reading of the file itself


@dataclass(frozen=True)
class Fault:
    code: str
    name: str
    severity: str
    detected_by: tuple[str, ...]
    summary: str
    fix: str

    @property
    def document_name(self) -> str:
        return f"{self.code}-{self.name}.md"


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_KEYS = ("code", "name", "severity", "detected-by", "summary", "fix")


def parse_front_matter(text: str, where: str = "document") -> dict[str, str]:
    """The ``key: value`` lines between the document's opening ``---`` lines."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise ValueError(f"{where}: a rule document starts with a --- front matter block")
    meta = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            raise ValueError(f"{where}: front matter line {line!r} is not `key: value`")
        meta[key.strip()] = value.strip()
    return meta


def _load() -> tuple[Fault, ...]:
    """The catalogue, read from the rule documents shipped as package data in ``bnaudit/rules/``."""
    loaded = []
    for entry in resources.files("bnaudit.rules").iterdir():
        if not (entry.name.startswith("BN") and entry.name.endswith(".md")):
            continue
        meta = parse_front_matter(entry.read_text(encoding="utf-8"), entry.name)
        missing = [key for key in _KEYS if key not in meta]
        if missing:
            raise ValueError(f"{entry.name}: front matter lacks {', '.join(missing)}")
        fault = Fault(meta["code"], meta["name"], meta["severity"],
                      tuple(part.strip() for part in meta["detected-by"].split(",")), meta["summary"], meta["fix"])
        if fault.severity not in (ERROR, WARNING) or not set(fault.detected_by) <= {SOURCE, GRAPH, PARSER}:
            raise ValueError(f"{entry.name}: severity is error or warning; detected-by, source, graph or parser")
        if entry.name != fault.document_name:
            raise ValueError(f"{entry.name}: a document is named {fault.document_name} by its front matter")
        loaded.append(fault)
    return tuple(sorted(loaded, key=lambda fault: fault.code))


_FAULTS = _load()

FAULTS: dict[str, Fault] = {fault.code: fault for fault in _FAULTS}
_BY_NAME = {fault.name: fault for fault in _FAULTS}

_CODE_RE = re.compile(r"^BN\d{3}$")


def get(code_or_name: str) -> Fault:
    """Look a fault up by code (``BN001``, case-insensitive) or by name."""
    key = code_or_name.strip()
    if _CODE_RE.match(key.upper()) and key.upper() in FAULTS:
        return FAULTS[key.upper()]
    if key.lower() in _BY_NAME:
        return _BY_NAME[key.lower()]
    raise KeyError(code_or_name)


def is_code(text: str) -> bool:
    return bool(_CODE_RE.match(text.strip().upper()))


def document(code_or_name: str) -> str:
    """The rule document shipped in the package."""
    fault = get(code_or_name)
    return resources.files("bnaudit.rules").joinpath(fault.document_name).read_text(encoding="utf-8")


def expand_selection(selectors: list[str] | None) -> set[str] | None:
    """Turn ``--select``/``--ignore`` values into codes; prefixes like ``BN00`` select a range.

    Raises ``ValueError`` naming a selector that matches nothing.
    """
    if selectors is None:
        return None
    codes: set[str] = set()
    for selector in selectors:
        for item in selector.split(","):
            item = item.strip()
            if not item:
                continue
            if item.upper() == "ALL":
                codes.update(FAULTS)
                continue
            matched = {code for code in FAULTS if code.startswith(item.upper())}
            if not matched and item.lower() in _BY_NAME:
                matched = {_BY_NAME[item.lower()].code}
            if not matched:
                raise ValueError(f"unknown rule code or name: {item!r}")
            codes.update(matched)
    return codes
