"""Every output format: text for people, JSON for CI, tables for the catalogue."""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from tabulate import tabulate

from bnaudit import faults
from bnaudit.findings import Finding


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _location(finding: Finding, source_lines: dict[str, list[str]]) -> str:
    """``path:line:col``, or ``nb.ipynb:cell 3:line 5:col`` in a notebook."""
    if finding.path.endswith(".ipynb") and finding.line:
        from bnaudit.source.notebooks import cell_position

        position = cell_position(source_lines.get(finding.path, []), finding.line)
        if position is not None:
            return f"{finding.path}:cell {position[0]}:line {position[1]}:{finding.column}"
    return f"{finding.path}:{finding.line}:{finding.column}"


_COLORS = {"error": "\033[1;31m", "warning": "\033[1;33m", "path": "\033[1m", "reset": "\033[0m"}


def check_text(findings: Sequence[Finding], files_checked: int, source_lines: dict[str, list[str]],
               quiet: bool = False, color: bool = False, fixed: int | None = None, unsafe: bool = False) -> str:
    """``path:line:col: CODE [severity] message``, the source line with a caret, the fix, a summary.

    ``quiet`` keeps the first line of each finding only; ``color`` marks the location and the code
    with ANSI colours (a terminal that asked for them).  ``fixed`` is how many findings ``--fix``
    fixed (the summary then says so); ``unsafe``, whether unsafe fixes were applied.
    """
    def paint(text: str, kind: str) -> str:
        return f"{_COLORS[kind]}{text}{_COLORS['reset']}" if color else text

    out: list[str] = []
    for finding in findings:
        where = paint(f"{_location(finding, source_lines)}:", "path")
        code = paint(f"{finding.code} [{finding.severity}]", "error" if finding.severity == "error" else "warning")
        out.append(f"{where} {code} {finding.message}")
        if quiet:
            continue
        lines = source_lines.get(finding.path)
        if lines and finding.line and 0 < finding.line <= len(lines):
            text = lines[finding.line - 1].rstrip("\r\n").expandtabs(1)
            col = max(1, finding.column or 1)
            width = 1
            if finding.end_line == finding.line and finding.end_column and finding.end_column > col:
                width = finding.end_column - col
            out.append(f"    {text}")
            out.append("    " + " " * (col - 1) + "^" * max(1, min(width, len(text) - col + 1)))
        out.append(f"    fix: {finding.fix_hint}{_how_fixed(finding)}")
    if not quiet:
        paths = {finding.path for finding in findings}
        where = f"in {_plural(len(paths), 'file')} ({_plural(files_checked, 'file')} checked)"
        summary = f"{_plural(len(findings), 'finding')} {where}"
        if fixed is not None:
            summary = f"{_plural(fixed, 'finding')} fixed, {len(findings)} remaining {where}"
        out.append(summary + _fixable(findings, unsafe))
    return "\n".join(out)


_HOW = {"safe": " [fixable with --fix]", "unsafe": " [fixable with --fix --unsafe-fixes]",
        "display-only": " [suggestion: see --diff]"}


def _how_fixed(finding: Finding) -> str:
    return _HOW[str(finding.autofix.applicability)] if finding.autofix is not None else ""


def _fixable(findings: Sequence[Finding], unsafe: bool) -> str:
    """`; 2 fixable with --fix (1 more with --unsafe-fixes)`, as ruff counts them."""
    safe = sum(1 for f in findings if f.autofix is not None and f.autofix.applies(unsafe))
    more = sum(1 for f in findings if f.autofix is not None and not f.autofix.applies(unsafe)
               and f.autofix.applies(True))
    if not safe and not more:
        return ""
    text = f"; {safe} fixable with --fix"
    return text + (f" ({more} more with --unsafe-fixes)" if more else "")


def check_json(findings: Iterable[Finding]) -> str:
    return json.dumps([finding.to_check_json() for finding in findings], indent=2)


def graph_json(findings: Iterable[Finding]) -> str:
    return json.dumps([finding.to_graph_json() for finding in findings], indent=2)


def rules_table() -> str:
    rows = [
        (fault.code, fault.name, fault.severity, ", ".join(fault.detected_by), fault.summary)
        for fault in faults.FAULTS.values()
    ]
    return tabulate(rows, headers=("code", "name", "severity", "detected by", "what it catches"),
                    tablefmt="simple", maxcolwidths=[None, None, None, None, 70])


_COMMANDS = {faults.SOURCE: "check", faults.PARSER: "check", faults.GRAPH: "graph"}


def rules_markdown() -> str:
    """The catalogue as the README's table (``bnaudit rules --format markdown``; a test keeps the
    README's copy current)."""
    rows = ["| code | name | severity | what goes wrong | found by |", "| --- | --- | --- | --- | --- |"]
    for fault in faults.FAULTS.values():
        found = ", ".join(_COMMANDS[where] for where in fault.detected_by)
        rows.append(f"| {fault.code} | {fault.name} | {fault.severity} | {fault.summary} | {found} |")
    return "\n".join(rows)


def graph_json_report(artifacts: Sequence[dict], unreadable: Sequence[str] = ()) -> str:
    """``--format json-report``: every artifact with its layers and its findings, and the counts.

    The findings keep the shape of ``--format json``; each layer says what was saved and the
    finite range of every saved value, with how many channels are NaN or infinite.
    """
    items = []
    for item in artifacts:
        items.append({
            "path": item["path"], "kind": item["kind"], "step": item["step"], "step_from": item["step_from"],
            "has_values": item["has_values"], "layers": item["rows"], "notes": item["notes"],
            "damage": item["damage"],
            "findings": [finding.to_graph_json() for finding in item["findings"]],
        })
    counts: dict[str, int] = {}
    for item in artifacts:
        for finding in item["findings"]:
            counts[finding.code] = counts.get(finding.code, 0) + 1
    return json.dumps({"artifacts": items, "unreadable": list(unreadable),
                       "summary": {"artifacts": len(items), "unreadable": len(unreadable),
                                   "damaged": sum(bool(item["damage"]) for item in artifacts),
                                   "findings": sum(counts.values()), "by_code": dict(sorted(counts.items()))}},
                      indent=2)


def _fmt_range(found, single: bool = False) -> str:
    """``[low, high]`` of the finite channels (``low / high`` for a min/max column), and how many
    channels are NaN or infinite: one bad channel must not hide the range of the others."""
    if found is None:
        return "-"
    low, high, bad = found["min"], found["max"], found["nonfinite"]
    if low is None:  # every channel is NaN or infinite
        return f"all {bad} NaN/Inf"
    if single or low == high:
        text = f"{low:.4g}" if low == high else f"{low:.4g} / {high:.4g}"
    else:
        text = f"[{low:.4g}, {high:.4g}]"
    return f"{text} +{bad} NaN/Inf" if bad else text


def _grouped(findings: Sequence[Finding]) -> list[list[Finding]]:
    """Findings of one code with one fix, in order of first appearance: one block each."""
    groups: dict[tuple, list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.code, finding.fix_hint), []).append(finding)
    return list(groups.values())


def graph_text(artifacts: Sequence[dict], unreadable: int = 0) -> str:
    """Per artifact: a header, one table row per batch-norm layer, then its findings with fix hints.

    Findings of one code on several layers are one block: a line per layer and the fix once.
    Each item is the plain dict ``bnaudit.graph.command.summary`` builds (path, facts, rows,
    notes, findings), so this module stays free of TensorFlow.
    """
    out: list[str] = []
    total = 0
    flagged = 0
    for item in artifacts:
        findings = item["findings"]
        total += len(findings)
        flagged += bool(findings)
        out.append(f"{item['path']}  ({', '.join(item['facts'])})")
        rows = []
        for row in item["rows"]:
            status = ", ".join(row["codes"]) if row["codes"] else "ok"
            if item.get("has_values") and not row["saved"]:
                status += " (no saved values)"
            values = row["values"]
            rows.append((row["layer"], row["channels"] if row["channels"] is not None else "-",
                         _fmt_range(values.get("moving_mean")), _fmt_range(values.get("moving_variance"), single=True),
                         _fmt_range(values.get("gamma")), status))
        if rows:
            out.append(tabulate(rows, headers=("layer", "channels", "moving mean", "moving var min / max",
                                               "gamma", "status"), tablefmt="simple"))
        else:
            out.append("no batch-norm layers found")
        for group in _grouped(findings):
            first = group[0]
            if len(group) == 1:
                where = f" {first.layer}:" if first.layer else ""
                out.append(f"{first.code} [{first.severity}]{where} {first.message}")
            else:
                out.append(f"{first.code} [{first.severity}] {first.name}, {len(group)} layers:")
                for finding in group:
                    out.append(f"  {finding.layer or '-'}: {finding.message}")
            out.append(f"    fix: {first.fix_hint}")
        for damage in item.get("damage", ()):
            out.append(f"damaged: {damage}")
        for note in item["notes"]:
            out.append(f"note: {note}")
        out.append("")
    tail = f"{_plural(total, 'finding')} in {_plural(len(artifacts), 'artifact')}"
    if len(artifacts) > 1:
        tail += f" ({flagged} with findings, {len(artifacts) - flagged} clean)"
    damaged = sum(bool(item.get("damage")) for item in artifacts)
    if damaged:
        tail += f"; {_plural(damaged, 'artifact')} damaged"
    if unreadable:
        tail += f"; {_plural(unreadable, 'artifact')} could not be read"
    out.append(tail)
    return "\n".join(out)
