"""The fixture training scripts are real programs: every one not marked lint-only runs.

fixtures/scripts reconstructs the code of TensorFlow issue #1122; the analyzer's
expectations (``# expect:`` comments) are checked elsewhere.  This file checks that the
scripts themselves are honest: each script that needs only APIs present in TF 2.21
(``tf.compat.v1`` graphs with the legacy ``tf.layers``, ``tf.keras`` / tf_keras, Keras 3)
runs to completion on the CPU, and each one marked

    # bnaudit-fixture: raises SomeError

fails with exactly that exception -- the fault is real, TensorFlow itself rejects it.
A script also marked ``# bnaudit-fixture: raised-on-expect-line`` must raise from a line
that carries its ``# expect:`` comment.  Scripts marked ``# bnaudit-fixture: lint-only``
(tf.contrib, tf_slim: gone from or broken on TF 2.x) are only parsed.

The runnable scripts run in subprocesses, two at a time, with BNAUDIT_FIXTURE_STEPS=3 and
their checkpoints written under a temporary BNAUDIT_FIXTURE_OUT.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
SCRIPTS = sorted(SCRIPTS_DIR.glob("*.py"))

MARKER_RE = re.compile(r"^#\s*bnaudit-fixture:\s*(.+?)\s*$", re.MULTILINE)
EXPECT_RE = re.compile(r"#\s*expect:\s*(BN\d{3}(?:\s*,\s*BN\d{3})*)")
KERAS3_RE = re.compile(r"^(?:import keras\b|from keras\b)", re.MULTILINE)
# The last "SomeError: message" line of a traceback (possibly module-qualified).
EXCEPTION_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::|$)", re.MULTILINE)
FRAME_RE = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)', re.MULTILINE)

WORKERS = 2
TIMEOUT_S = 300
SOURCE_CODES = {"BN001", "BN002", "BN003", "BN004", "BN005", "BN006", "BN007", "BN008", "BN009", "BN011"}


def markers(path: Path) -> list[str]:
    return MARKER_RE.findall(path.read_text(encoding="utf-8"))


def is_lint_only(path: Path) -> bool:
    return "lint-only" in markers(path)


def expected_exception(path: Path) -> str | None:
    for marker in markers(path):
        if marker.startswith("raises "):
            return marker.split()[1]
    return None


def expect_lines(path: Path) -> dict[int, list[str]]:
    found = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = EXPECT_RE.search(line)
        if match:
            found[number] = [code.strip() for code in match.group(1).split(",")]
    return found


RUNNABLE = [path for path in SCRIPTS if not is_lint_only(path)]
LINT_ONLY = [path for path in SCRIPTS if is_lint_only(path)]


def script_env(path: Path, out_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BNAUDIT_FIXTURE_STEPS": "3",
        "BNAUDIT_FIXTURE_OUT": str(out_dir),
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if KERAS3_RE.search(path.read_text(encoding="utf-8")):
        env.pop("TF_USE_LEGACY_KERAS", None)  # `import keras` is Keras 3 either way; keep tf.keras out of it
    else:
        env["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers and tf.keras need tf_keras
    return env


def run_script(path: Path, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], cwd=out_dir, env=script_env(path, out_dir),
            capture_output=True, text=True, timeout=TIMEOUT_S,
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode, stdout, stderr = None, exc.stdout or "", (exc.stderr or "") + f"\n[timed out after {TIMEOUT_S}s]"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    return {"returncode": returncode, "stdout": stdout, "stderr": stderr, "seconds": time.monotonic() - start}


def _selected_scripts(session) -> list[Path]:
    wanted = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if item.originalname == "test_runnable_script" and callspec is not None:
            wanted.append(callspec.params["script"])
    return wanted


@pytest.fixture(scope="module")
def run_results(request, tmp_path_factory):
    """Run the selected runnable scripts once, WORKERS at a time; {script: result}."""
    for module in ("tensorflow", "tf_keras", "keras", "numpy"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    scripts = _selected_scripts(request.session) or RUNNABLE
    base = tmp_path_factory.mktemp("fixture-runs")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {script: pool.submit(run_script, script, base / script.stem) for script in scripts}
        return {script: future.result() for script, future in futures.items()}


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.parametrize("script", RUNNABLE, ids=lambda p: p.name)
def test_runnable_script(script, run_results):
    result = run_results[script]
    expected = expected_exception(script)
    report = f"{script.name} ({result['seconds']:.1f}s)\n--- stderr (tail) ---\n{_tail(result['stderr'])}"
    if expected is None:
        assert result["returncode"] == 0, report
        return
    assert result["returncode"] not in (0, None), f"expected {expected}, but it did not raise\n{report}"
    raised = EXCEPTION_LINE_RE.findall(result["stderr"])
    assert raised and raised[-1].rsplit(".", 1)[-1] == expected, f"expected {expected}, got {raised[-1:]}\n{report}"
    if "raised-on-expect-line" in markers(script):
        frames = [int(m.group("line")) for m in FRAME_RE.finditer(result["stderr"])
                  if Path(m.group("path")).resolve() == script.resolve()]
        assert frames, report
        assert frames[-1] in expect_lines(script), f"raised from line {frames[-1]}, not an expect line\n{report}"


@pytest.mark.parametrize("script", LINT_ONLY, ids=lambda p: p.name)
def test_lint_only_script_parses(script):
    ast.parse(script.read_text(encoding="utf-8"), filename=str(script))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_a_documented_fixture(script):
    text = script.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(script))
    docstring = ast.get_docstring(tree)
    assert docstring and ("bad" in docstring.split("\n", 1)[0] or docstring.startswith("Clean")), script.name
    codes = {code for found in expect_lines(script).values() for code in found}
    for marker in markers(script):
        assert marker in ("lint-only", "raised-on-expect-line") or re.fullmatch(r"raises \w+", marker), marker
    if script.name.startswith("clean_"):
        assert not codes, f"{script.name} is clean but expects {sorted(codes)}"
        assert expected_exception(script) is None
    else:
        prefix = re.match(r"bn(\d{3})_", script.name)
        assert prefix, f"{script.name}: name it bnNNN_<what>.py or clean_<what>.py"
        assert f"BN{prefix.group(1)}" in codes, f"{script.name} expects {sorted(codes)}"
        assert codes <= SOURCE_CODES, codes
    if is_lint_only(script):
        assert expected_exception(script) is None, "a lint-only script is never run"


def test_fixture_inventory():
    bad = [script for script in SCRIPTS if not script.name.startswith("clean_")]
    clean = [script for script in SCRIPTS if script.name.startswith("clean_")]
    assert len(clean) >= 20
    for code in SOURCE_CODES:
        variants = [s for s in bad if code in {c for cs in expect_lines(s).values() for c in cs}]
        assert len(variants) >= (6 if code == "BN001" else 3), (code, [s.name for s in variants])
