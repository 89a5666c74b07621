"""Findings in the formats CI systems read: SARIF 2.1.0, GitHub annotations, JUnit XML, GitLab Code Quality.

Each takes the findings (and the rule catalogue) and returns text; none needs TensorFlow. Paths are
written as given (relative to where bnaudit ran), which is what GitHub, GitLab and Jenkins resolve
against the checkout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Sequence
from urllib.parse import quote
from xml.etree import ElementTree

from bnaudit import __version__, faults
from bnaudit.findings import Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _uri(path: str) -> str:
    """A relative URI reference for a path (SARIF wants URIs, not file names)."""
    return quote(PurePath(path).as_posix(), safe="/._-~")


def _without_front_matter(document: str) -> str:
    if document.startswith("---\n"):
        end = document.find("\n---\n", 4)
        if end != -1:
            return document[end + 5:].lstrip()
    return document


def _sarif_level(severity: str) -> str:
    return "error" if severity == faults.ERROR else "warning"


def sarif(findings: Sequence[Finding], tool_name: str = "bnaudit", replacements: Sequence | None = None) -> str:
    """One run, with every rule of the catalogue (help text and document) and one result per finding.

    ``replacements`` (one per finding, or None) are the findings' fixes as text spans
    (``fixer.Replacement``): each becomes the result's ``fixes`` entry.
    """
    catalogue = list(faults.FAULTS.values())
    index = {fault.code: position for position, fault in enumerate(catalogue)}
    rules = [{
        "id": fault.code,
        "name": "".join(part.capitalize() for part in fault.name.split("-")),
        "shortDescription": {"text": fault.summary},
        "fullDescription": {"text": fault.summary},
        "help": {"text": fault.fix, "markdown": _without_front_matter(faults.document(fault.code))},
        "defaultConfiguration": {"level": _sarif_level(fault.severity)},
        "properties": {"tags": ["batch-normalization", *fault.detected_by], "bnaudit-name": fault.name},
    } for fault in catalogue]
    results = []
    for finding in findings:
        result = {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": _sarif_level(finding.severity),
            "message": {"text": finding.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(finding.path)}}}],
        }
        if finding.line:
            region = {"startLine": finding.line}
            if finding.column:
                region["startColumn"] = finding.column
            if finding.end_line and finding.end_line >= finding.line:
                region["endLine"] = finding.end_line
                if finding.end_column and (finding.end_line > finding.line or finding.end_column > (finding.column or 0)):
                    region["endColumn"] = finding.end_column
            result["locations"][0]["physicalLocation"]["region"] = region
        if finding.layer:
            result["properties"] = {"layer": finding.layer}
        change = replacements[len(results)] if replacements is not None else None
        if change is not None and finding.autofix is not None:
            result["fixes"] = [{
                "description": {"text": f"{finding.autofix.title} ({finding.autofix.applicability} fix)"},
                "artifactChanges": [{"artifactLocation": {"uri": _uri(finding.path)}, "replacements": [{
                    "deletedRegion": {"startLine": change.start_line, "startColumn": change.start_column,
                                      "endLine": change.end_line, "endColumn": change.end_column},
                    "insertedContent": {"text": change.text}}]}],
            }]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": tool_name, "version": __version__, "semanticVersion": __version__,
                                "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(log, indent=2)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands: each finding an annotation on its line of the pull request."""
    lines = []
    for finding in findings:
        command = "error" if finding.severity == faults.ERROR else "warning"
        props = [f"file={_escape_property(finding.path)}"]
        if finding.line:
            props.append(f"line={finding.line}")
            if finding.column:
                props.append(f"col={finding.column}")
            if finding.end_line:
                props.append(f"endLine={finding.end_line}")
            if finding.end_column and finding.end_line == finding.line:
                props.append(f"endColumn={finding.end_column}")
        props.append(f"title={_escape_property(f'{finding.code} {finding.name}')}")
        lines.append(f"::{command} {','.join(props)}::{_escape_data(finding.message)}")
    return "\n".join(lines)


def junit(findings: Sequence[Finding], checked: int) -> str:
    """JUnit XML (GitLab and Jenkins test reports): a failed test case per finding."""
    suite = ElementTree.Element("testsuite", name="bnaudit", tests=str(max(len(findings), 1)),
                                failures=str(len(findings)), errors="0", skipped="0")
    for finding in findings:
        where = f"{finding.path}:{finding.line}:{finding.column}" if finding.line else finding.path
        case = ElementTree.SubElement(suite, "testcase", classname=finding.path,
                                      name=f"{finding.code} {finding.name} at {where}"
                                           + (f" ({finding.layer})" if finding.layer else ""))
        failure = ElementTree.SubElement(case, "failure", message=finding.message, type=finding.code)
        failure.text = f"{where}: {finding.code} [{finding.severity}] {finding.message}\nfix: {finding.fix_hint}"
    if not findings:
        ElementTree.SubElement(suite, "testcase", classname="bnaudit",
                               name=f"no batch-norm faults in {checked} file{'' if checked == 1 else 's'}")
    root = ElementTree.Element("testsuites", name="bnaudit", tests=suite.get("tests"), failures=suite.get("failures"))
    root.append(suite)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def gitlab(findings: Sequence[Finding]) -> str:
    """GitLab Code Quality (Code Climate JSON): the merge request's code-quality widget."""
    issues = []
    for finding in findings:
        identity = f"{finding.path}\0{finding.code}\0{finding.line}\0{finding.layer}\0{finding.message}"
        issues.append({
            "type": "issue",
            "check_name": finding.code,
            "description": f"{finding.code} {finding.message}",
            "content": {"body": f"fix: {finding.fix_hint}"},
            "categories": ["Bug Risk"],
            "severity": "major" if finding.severity == faults.ERROR else "minor",
            "fingerprint": hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest(),
            "location": {"path": finding.path, "lines": {"begin": finding.line or 1}},
        })
    return json.dumps(issues, indent=2)


def statistics(findings: Sequence[Finding]) -> str:
    """Counts per code, most frequent first (``--statistics``)."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.code] = counts.get(finding.code, 0) + 1
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    width = max((len(str(count)) for _, count in rows), default=1)
    return "\n".join(f"{count:>{width}}  {code}  {faults.FAULTS[code].name}" for code, count in rows)
