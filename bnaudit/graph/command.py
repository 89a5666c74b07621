"""``bnaudit graph``: read each artifact, run the checks, print, and pick the exit code.

Exit 2 when any artifact is unusable (one ``bnaudit: error: <path>: ...`` line
each, never a traceback), else 1 when anything was found, else 0.
"""

from __future__ import annotations

import gc
import os
import sys

# TensorFlow's C++ start-up chatter would bury the one error line a user needs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bnaudit import report  # noqa: E402
from bnaudit.findings import Finding  # noqa: E402
from bnaudit.graph.model import ROLES, Artifact, ArtifactError  # noqa: E402

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _error(path: str, message: str) -> None:
    print(f"bnaudit: error: {path}: {message}", file=sys.stderr)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 muted: its C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # TensorFlow leaves millions of objects behind; without this, every garbage collection during
    # an audit rescans them all (it tripled the time of walking a ResNet-50 training graph).
    gc.freeze()


def audit(path: str) -> tuple[Artifact, list[Finding]]:
    """Read one artifact and run every check on it (raises ArtifactError)."""
    import_tensorflow_quietly()
    from bnaudit.graph.checks import run_checks
    from bnaudit.graph.detect import read_artifact

    artifact = read_artifact(path)
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


def summary(artifact: Artifact, findings: list[Finding]) -> dict:
    """The plain-data view of one audited artifact that ``report.graph_text`` renders."""
    codes: dict[str, list[str]] = {}
    for finding in findings:
        if finding.layer:
            codes.setdefault(finding.layer, [])
            if finding.code not in codes[finding.layer]:
                codes[finding.layer].append(finding.code)
    rows = []
    for layer in artifact.layers:
        rows.append({
            "layer": layer.name,
            "channels": layer.channels,
            "moving_mean": _range(layer.values.get("moving_mean")),
            "moving_variance": _range(layer.values.get("moving_variance")),
            "gamma": _range(layer.values.get("gamma")),
            "saved": [role for role in ROLES if role in layer.keys],
            "codes": codes.get(layer.name, []),
        })
    facts = [artifact.kind]
    if artifact.step is not None:
        facts.append(f"{artifact.step_source or 'step'} = {artifact.step}")
    return {"path": artifact.path, "kind": artifact.kind, "facts": facts, "rows": rows,
            "has_values": artifact.has_values, "notes": list(artifact.notes), "findings": findings}


def run(paths: list[str], fmt: str = "text", select: set[str] | None = None, ignore: set[str] | None = None) -> int:
    ignore = ignore or set()
    results, failed = [], False
    for path in paths:
        audited = _audit_safely(path)
        if audited is None:
            failed = True
            continue
        artifact, findings = audited
        findings = [f for f in findings if (select is None or f.code in select) and f.code not in ignore]
        results.append(summary(artifact, findings))
    all_findings = [finding for result in results for finding in result["findings"]]
    if fmt == "json":
        print(report.graph_json(all_findings))
        for result in results:
            for note in result["notes"]:
                print(f"bnaudit: note: {result['path']}: {note}", file=sys.stderr)
    elif results:
        print(report.graph_text(results))
    if failed:
        return EXIT_ERROR
    return EXIT_FINDINGS if all_findings else EXIT_CLEAN
