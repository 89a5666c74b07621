"""The fix loop: every fixture with a fixable fault, fixed by the real CLI, then judged three ways.

For each fixture script (fixtures/scripts, fixtures/training) with a finding that ``--fix
--unsafe-fixes`` applies: copy it, fix it, and check that (a) ``bnaudit check`` no longer reports
the fixed codes and a second ``--fix`` changes nothing; (b) the fixed script still runs where the
original runs (the runner of test_fixture_scripts_run), and no longer shows the fault: a fixture's
assertion of its fault's symptom, marked ``# symptom: BN001``, must fail once that code is fixed, so
the fixed copy is run with each such assertion inverted; (c) for the training scripts, the artifact
the fixed script writes passes ``bnaudit graph``: the static and the runtime halves check each other.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bnaudit.source import analyze
from graph_fixtures import ARTIFACTS, INJECTED, TRAINING, _env, codes_of, graph_json
from test_fixture_scripts_run import SCRIPTS_DIR, expected_exception, is_lint_only, markers, run_forked

CANDIDATES = sorted(SCRIPTS_DIR.glob("*.py")) + sorted(TRAINING.glob("*.py"))


def _fixable(path: Path, applied: bool = True) -> set[str]:
    """The codes of the findings --fix --unsafe-fixes would apply in this file, checked alone (with
    ``applied`` False: those it only suggests)."""
    return {f.code for f in analyze([path]).findings if f.autofix is not None and f.autofix.applies(True) == applied}


# Python 2 fixtures are reported but never rewritten (test_python2_file_is_not_rewritten).
FIXABLE = {path: codes for path in CANDIDATES if "python2" not in markers(path) and (codes := _fixable(path))}
SUGGESTED = {path: codes for path in CANDIDATES if (codes := _fixable(path, applied=False))}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnaudit", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, NO_COLOR="1"))


def _codes(path: Path) -> set[str]:
    proc = _cli("check", "--no-cache", "--format", "json", path.name, cwd=path.parent)
    return {finding["code"] for finding in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def fixed(tmp_path_factory) -> dict[Path, dict]:
    """Each fixable fixture copied and fixed once: {original: {copy, codes, exit, stdout, stderr}}."""
    base = tmp_path_factory.mktemp("fixed")
    out = {}
    for original, codes in FIXABLE.items():
        folder = base / original.parent.name
        folder.mkdir(exist_ok=True)
        copy = folder / original.name
        shutil.copyfile(original, copy)
        proc = _cli("check", "--no-cache", "--fix", "--unsafe-fixes", copy.name, cwd=folder)
        out[original] = {"copy": copy, "codes": codes, "exit": proc.returncode, "stdout": proc.stdout,
                         "stderr": proc.stderr}
    return out


def test_every_fixable_code_has_a_fixture():
    """Each code a rule can fix (its ``fixes`` examples) is fixed in at least one fixture script."""
    from bnaudit.source.rules import Rule, load_rules

    load_rules()
    with_fixes = {rule.code for rule in Rule.registry if rule.fixes}
    assert with_fixes, "no rule declares fixes"
    covered = {code for codes in [*FIXABLE.values(), *SUGGESTED.values()] for code in codes}
    assert with_fixes <= covered, f"no fixture exercises the fixes of {sorted(with_fixes - covered)}"


@pytest.mark.parametrize("script", sorted(FIXABLE), ids=lambda p: p.name)
def test_fixed_script_relints_clean(script, fixed):
    result = fixed[script]
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert result["exit"] in (0, 1), result["stderr"]
    assert "fixed" in result["stdout"].splitlines()[-1], result["stdout"]
    copy = result["copy"]
    assert copy.read_bytes() != script.read_bytes()
    remaining = _codes(copy)
    assert not remaining & result["codes"], f"still reported after --fix: {sorted(remaining & result['codes'])}"
    # A fix must not make another rule object (one rule's fix undone by another's was a real case).
    before = _codes(script)
    assert remaining <= before, f"new after --fix: {sorted(remaining - before)}"
    # --fix twice is --fix once.
    text = copy.read_bytes()
    again = _cli("check", "--no-cache", "--fix", "--unsafe-fixes", copy.name, cwd=copy.parent)
    assert copy.read_bytes() == text
    assert again.stdout.splitlines()[-1].startswith("0 findings fixed"), again.stdout


RUNNABLE_FIXED = [path for path in FIXABLE if path.parent == SCRIPTS_DIR and not is_lint_only(path)
                  and expected_exception(path) is None]


SYMPTOM_RE = re.compile(r"#\s*symptom:\s*(BN\d{3}(?:\s*,\s*BN\d{3})*)")


def inverted_symptoms(text: str, fixed_codes: set[str]) -> tuple[str, int]:
    """The script with each `assert X  # symptom: CODE` of a fixed code made `assert not (X)`;
    and how many were inverted."""
    lines = text.split("\n")
    inverted = 0
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Assert) or node.lineno != node.end_lineno:
            continue
        line = lines[node.lineno - 1]
        match = SYMPTOM_RE.search(line)
        if match and {code.strip() for code in match.group(1).split(",")} & fixed_codes:
            test = node.test
            lines[node.lineno - 1] = (line[:test.col_offset] + f"not ({line[test.col_offset:test.end_col_offset]})"
                                      + line[test.end_col_offset:])
            inverted += 1
    return "\n".join(lines), inverted


@pytest.fixture(scope="module")
def fixed_runs(fixed, tmp_path_factory) -> dict[Path, dict]:
    for module in ("tensorflow", "tf_keras", "keras"):
        pytest.importorskip(module)
    base = tmp_path_factory.mktemp("fixed-runs")
    runs = {}
    for path in RUNNABLE_FIXED:
        text, inverted = inverted_symptoms(fixed[path]["copy"].read_text(encoding="utf-8"), fixed[path]["codes"])
        run = base / "scripts" / path.name
        run.parent.mkdir(exist_ok=True)
        run.write_text(text, encoding="utf-8")
        runs[path] = (run, inverted)
    results = run_forked([run for run, _ in runs.values()], base / "out")
    return {path: {**results[run], "inverted": inverted} for path, (run, inverted) in runs.items()}


@pytest.mark.parametrize("script", RUNNABLE_FIXED, ids=lambda p: p.name)
def test_fixed_script_still_runs(script, fixed_runs):
    result = fixed_runs[script]
    what = f"and no longer shows its {result['inverted']} symptom(s)" if result["inverted"] else ""
    assert result["returncode"] == 0, f"{script.name}, fixed, must run {what}:\n{result['stderr'][-3000:]}"


def test_symptoms_are_marked_on_assertions():
    """Every `# symptom:` marker sits on a one-line assert (else inverting it would not happen)."""
    for path in CANDIDATES:
        text = path.read_text(encoding="utf-8")
        marked = sum(1 for line in text.splitlines() if SYMPTOM_RE.search(line))
        if marked:
            codes = {code for line in text.splitlines() if (m := SYMPTOM_RE.search(line))
                     for code in re.findall(r"BN\d{3}", m.group(1))}
            assert inverted_symptoms(text, codes)[1] == marked, path.name


# Training scripts with a fixable fault: the artifact each writes, and what `bnaudit graph` reported
# on the original's (ARTIFACTS).
TRAINED_FIXED = {path: [(relative, codes) for script, relative, codes in ARTIFACTS.values() if script == path.stem]
                 for path in FIXABLE if path.parent == TRAINING}


@pytest.mark.parametrize("script", sorted(TRAINED_FIXED), ids=lambda p: p.name)
def test_fixed_training_script_writes_a_clean_artifact(script, fixed, tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(fixed[script]["copy"]), str(out)], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    artifacts = TRAINED_FIXED[script]
    assert artifacts and any(codes for _, codes in artifacts), "the original's artifact reports a fault"
    for relative, codes in artifacts:
        _, findings, err = graph_json(out / relative)
        left = codes_of(findings) - INJECTED.get(script.stem, set())
        assert not left, f"{relative}: still {sorted(left)} after the fix (originally {sorted(codes)})\n{err}"


@pytest.mark.parametrize("script", sorted(SUGGESTED), ids=lambda p: p.name)
def test_suggestion_taken_by_hand_relints_clean(script, tmp_path):
    """A display-only fix is never written; written by hand (as --diff shows it), it removes its finding."""
    from bnaudit.source.fixer import apply

    copy = tmp_path / script.name
    shutil.copyfile(script, copy)
    shown = _cli("check", "--no-cache", "--diff", copy.name, cwd=tmp_path)
    assert shown.returncode == 1 and "suggestion, not applied by --fix" in shown.stdout
    assert copy.read_bytes() == script.read_bytes()
    findings = [f for f in analyze([copy]).findings if f.code in SUGGESTED[script] and f.autofix is not None
                and not f.autofix.applies(True)]
    before = len([f for f in analyze([copy]).findings if f.code in SUGGESTED[script]])
    for finding in findings[:1]:
        copy.write_bytes(apply(str(copy), copy.read_bytes(), [finding]).text)
    after = len([f for f in analyze([copy]).findings if f.code in SUGGESTED[script]])
    assert after == before - 1


def test_python2_file_is_not_rewritten(tmp_path):
    python2 = [path for path in CANDIDATES if "python2" in markers(path) and _fixable(path)]
    assert python2
    copy = tmp_path / python2[0].name
    shutil.copyfile(python2[0], copy)
    proc = _cli("check", "--no-cache", "--fix", copy.name, cwd=tmp_path)
    assert copy.read_bytes() == python2[0].read_bytes()
    assert "only Python 3 source is rewritten" in proc.stderr and "Traceback" not in proc.stderr
