"""``bnaudit graph``: read each artifact, run the checks, print, and pick the exit code.

Exit 2 when any artifact is unusable (one ``bnaudit: error: <path>: ...`` line
each, never a traceback), else 1 when anything was found, else 0.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter would bury the one error line a user needs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bnaudit import report  # noqa: E402
from bnaudit.findings import Finding  # noqa: E402
from bnaudit.graph.model import ROLES, Artifact, ArtifactError, screen  # noqa: E402

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _error(path: str, message: str) -> None:
    print(f"bnaudit: error: {path}: {message}", file=sys.stderr)


def audit(path: str) -> tuple[Artifact, list[Finding]]:
    """Read one artifact and run every check on it (raises ArtifactError)."""
    from bnaudit.graph import remote
    from bnaudit.graph.checks import run_checks
    from bnaudit.graph.detect import read_artifact

    if remote.scheme(path) is None:
        artifact = read_artifact(path)
        screen(artifact)
        return artifact, run_checks(artifact)
    with remote.local_copy(path) as (local, root, url_root):
        try:
            artifact = read_artifact(local)
        except ArtifactError as exc:
            raise ArtifactError(path, exc.message.replace(root, url_root)) from None
        artifact.path = artifact.path.replace(root, url_root)
        screen(artifact)
        return artifact, run_checks(artifact)


def _audit_safely(path: str) -> tuple[Artifact, list[Finding]] | None:
    try:
        return audit(path)
    except ArtifactError as exc:
        _error(exc.path, exc.message)
    except PermissionError as exc:
        _error(path, f"cannot read {exc.filename or 'the artifact'} (permission denied)")
    except (OSError, MemoryError) as exc:
        _error(path, f"cannot be read ({type(exc).__name__}: {exc})")
    except Exception as exc:  # a reader bug must not turn into a traceback for a user's model
        if os.environ.get("BNAUDIT_DEBUG"):
            raise
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        _error(path, f"could not be audited ({type(exc).__name__}{': ' + detail if detail else ''}); "
                     "set BNAUDIT_DEBUG=1 for a traceback")
    return None


def _range(value) -> tuple[float, float, int] | None:
    """(min, max) of the finite channels, and how many channels are NaN or infinite."""
    import numpy as np

    if value is None or np.size(value) == 0:
        return None
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    finite = flat[np.isfinite(flat)]
    bad = int(flat.size - finite.size)
    if not finite.size:
        return float("nan"), float("nan"), bad
    return float(np.min(finite)), float(np.max(finite)), bad


def _layer_data(layer, codes: list[str]) -> dict:
    values = {}
    for role in ROLES:
        found = _range(layer.values.get(role))
        if found is not None:
            low, high, bad = found
            values[role] = {"min": None if low != low else low, "max": None if high != high else high,
                            "nonfinite": bad}
    return {
        "layer": layer.name,
        "class": layer.class_name,
        "channels": layer.channels,
        "saved": [role for role in ROLES if role in layer.keys],
        "declared": [role for role in ROLES if role in layer.declared],
        "values": values,
        "decay": layer.decay,
        "decay_from": layer.decay_source,
        "bias_corrected": layer.bias_corrected,
        "codes": codes,
    }


def summary(artifact: Artifact, findings: list[Finding]) -> dict:
    """The plain-data view of one audited artifact that ``report`` renders as text or JSON."""
    codes: dict[str, list[str]] = {}
    for finding in findings:
        if finding.layer:
            codes.setdefault(finding.layer, [])
            if finding.code not in codes[finding.layer]:
                codes[finding.layer].append(finding.code)
    rows = [_layer_data(layer, codes.get(layer.name, [])) for layer in artifact.layers]
    facts = [artifact.kind]
    if artifact.step is not None:
        facts.append(f"{artifact.step_source or 'step'} = {artifact.step}")
    return {"path": artifact.path, "kind": artifact.kind, "facts": facts, "rows": rows,
            "step": artifact.step, "step_from": artifact.step_source,
            "has_values": artifact.has_values, "notes": list(artifact.notes), "damage": list(artifact.damage),
            "findings": findings}


class _Progress:
    """``[3/40] models/x.h5`` on stderr while many artifacts are audited, only on a terminal."""

    def __init__(self, total: int):
        self.total = total
        self.shown = total > 1 and sys.stderr.isatty()
        self.width = 0

    def __call__(self, index: int, path: str) -> None:
        if self.shown:
            text = f"[{index}/{self.total}] {path}"[:200]
            sys.stderr.write("\r" + text.ljust(self.width))
            sys.stderr.flush()
            self.width = len(text)

    def done(self) -> None:
        if self.shown and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def run(paths: list[str], fmt: str = "text", select: set[str] | None = None, ignore: set[str] | None = None,
        options=None) -> int:
    """Audit every path and report; ``options`` are the command line's output options (cli.py)."""
    from bnaudit import ci_formats
    from bnaudit.cli import CI_FORMATS, _ci_report, _emit, exit_for

    ignore = ignore or set()
    results, failed, damaged = [], [], []
    progress = _Progress(len(paths))
    for index, path in enumerate(paths, 1):
        progress(index, path)
        audited = _audit_safely(path)
        if audited is None:
            failed.append(path)
            continue
        artifact, findings = audited
        for damage in artifact.damage:
            _error(artifact.path, f"damaged: {damage}")
        if artifact.damage:
            damaged.append(path)
        findings = [f for f in findings if (select is None or f.code in select) and f.code not in ignore]
        results.append(summary(artifact, findings))
    progress.done()
    all_findings = [finding for result in results for finding in result["findings"]]
    if fmt != "text":
        for result in results:
            for note in result["notes"]:
                print(f"bnaudit: note: {result['path']}: {note}", file=sys.stderr)
    if options is not None and options.statistics:
        text = ci_formats.statistics(all_findings)
    elif fmt == "json":
        text = report.graph_json(all_findings)
    elif fmt == "json-report":
        text = report.graph_json_report(results, failed)
    elif fmt in CI_FORMATS:
        text = _ci_report(fmt, all_findings, len(results))
    elif results:
        text = report.graph_text(results, unreadable=len(failed))
    else:
        text = ""
    if options is not None and not _emit(text, options):
        return EXIT_ERROR
    if options is None and text:
        print(text)
    if failed or damaged:  # a damaged file is never a clean one
        return EXIT_ERROR
    if options is not None:
        return exit_for(all_findings, options)
    return EXIT_FINDINGS if all_findings else EXIT_CLEAN
