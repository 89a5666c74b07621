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
(tf.contrib, tf_slim: gone from or broken on TF 2.x) are only parsed; those also marked
``# bnaudit-fixture: python2`` must be rejected by Python 3 and parsed by fissix's Python 2 grammar.

The runnable scripts run two at a time with BNAUDIT_FIXTURE_STEPS=3 and their checkpoints
written under a temporary BNAUDIT_FIXTURE_OUT.  Importing TensorFlow costs ~3.5 s of CPU per
process, more than most scripts spend training, so by default each flavour of script
(tf.compat.v1/tf.keras with TF_USE_LEGACY_KERAS=1, or Keras 3) runs in a fresh process forked
from a server that has imported TensorFlow once and done nothing else -- every script still
starts from the same just-imported state and cannot see another's graph or Keras session.
Set BNAUDIT_FIXTURE_ISOLATION=subprocess to run each script as its own ``python script.py``.
This file is also that server: ``python test_fixture_scripts_run.py --fork-server MODE N``.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bnaudit.faults import FAULTS, SOURCE

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
SOURCE_CODES = {code for code, fault in FAULTS.items() if SOURCE in fault.detected_by}


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


def is_keras3(path: Path) -> bool:
    return bool(KERAS3_RE.search(path.read_text(encoding="utf-8")))


def base_env(keras3: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BNAUDIT_FIXTURE_STEPS": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if keras3:
        env.pop("TF_USE_LEGACY_KERAS", None)  # `import keras` is Keras 3 either way; keep tf.keras out of it
    else:
        env["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers and tf.keras need tf_keras
    return env


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def run_script(path: Path, out_dir: Path) -> dict:
    """One script as its own ``python script.py`` (BNAUDIT_FIXTURE_ISOLATION=subprocess)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = base_env(is_keras3(path))
    env["BNAUDIT_FIXTURE_OUT"] = str(out_dir)
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=out_dir, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        returncode, stderr = None, stderr + f"\n[timed out after {TIMEOUT_S}s]"
    return {"returncode": returncode, "stdout": stdout, "stderr": stderr, "seconds": time.monotonic() - start}


def run_forked(scripts: list[Path], base: Path) -> dict[Path, dict]:
    """Run scripts through one fork server per flavour; {script: result}."""
    results = {}
    for keras3 in (False, True):
        group = [script for script in scripts if is_keras3(script) == keras3]
        if not group:
            continue
        jobs = "".join(json.dumps({"script": str(script.resolve()), "out": str(base / script.stem)}) + "\n"
                       for script in group)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--fork-server", "keras3" if keras3 else "legacy",
             str(WORKERS)],
            input=jobs, env=base_env(keras3), capture_output=True, text=True,
            timeout=TIMEOUT_S * len(group),
        )
        done = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                done[record["script"]] = record
        for script in group:
            record = done.get(str(script.resolve()))
            out_dir = base / script.stem
            if record is None:
                results[script] = {"returncode": None, "stdout": _read(out_dir / ".stdout"),
                                   "stderr": f"fork server (exit {proc.returncode}) gave no result:\n{proc.stderr}",
                                   "seconds": 0.0}
                continue
            stderr = _read(out_dir / ".stderr")
            if record["timed_out"]:
                stderr += f"\n[timed out after {TIMEOUT_S}s]"
            results[script] = {"returncode": record["returncode"], "stdout": _read(out_dir / ".stdout"),
                               "stderr": stderr, "seconds": record["seconds"]}
    return results


def fork_server(mode: str, workers: int) -> None:
    """Import TensorFlow once, then run each job (a JSON line on stdin) in a forked child.

    The child chdirs to its output folder, points BNAUDIT_FIXTURE_OUT there, sends fds 1/2 to
    .stdout/.stderr in it and runs the script as ``__main__``; an uncaught exception prints its
    traceback and exits 1, as ``python script.py`` would.  One JSON line per finished job.
    """
    if mode == "legacy":
        import tensorflow.compat.v1 as tf_v1
        import tf_keras  # noqa: F401
        tf_v1.layers  # noqa: B018 - resolve the lazy tf_keras-backed module before forking
    else:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    import numpy  # noqa: F401

    jobs = [json.loads(line) for line in sys.stdin if line.strip()]
    running: dict[int, tuple[dict, float]] = {}

    def start(job: dict) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            os.makedirs(job["out"], exist_ok=True)
            os.chdir(job["out"])
            os.environ["BNAUDIT_FIXTURE_OUT"] = job["out"]
            for fd, name in ((1, ".stdout"), (2, ".stderr")):
                os.dup2(os.open(os.path.join(job["out"], name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = [job["script"]]
            sys.path[0] = os.path.dirname(job["script"])
            try:
                runpy.run_path(job["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001 - report it as the interpreter would
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    while jobs or running:
        while jobs and len(running) < workers:
            job = jobs.pop(0)
            running[start(job)] = (job, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (job, began) in list(running.items()):
                if time.monotonic() - began > TIMEOUT_S:
                    os.kill(child, signal.SIGKILL)
                    job["timed_out"] = True
            time.sleep(0.02)
            continue
        job, began = running.pop(pid)
        print(json.dumps({"script": job["script"], "returncode": os.waitstatus_to_exitcode(status),
                          "seconds": time.monotonic() - began, "timed_out": job.get("timed_out", False)}),
              flush=True)


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
    if hasattr(os, "fork") and os.environ.get("BNAUDIT_FIXTURE_ISOLATION", "fork") != "subprocess":
        results = run_forked(scripts, base)
        # Forking a process whose TensorFlow already runs threads is not fully safe, and under load a
        # forked child has (rarely) failed where the script itself does not.  The script's own
        # behaviour is what is tested, so a clean script that failed forked is judged by a fresh run.
        for script, result in results.items():
            if result["returncode"] != 0 and expected_exception(script) is None:
                rerun = run_script(script, base / f"{script.stem}-fresh")
                rerun["stderr"] += f"\n[re-run in a fresh process; the forked run said:]\n{_tail(result['stderr'])}"
                results[script] = rerun
        return results
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
    text = script.read_text(encoding="utf-8")
    if "python2" not in markers(script):
        ast.parse(text, filename=str(script))
        return
    with pytest.raises(SyntaxError):
        ast.parse(text, filename=str(script))
    python2_docstring(text)


def python2_docstring(text: str) -> str | None:
    """The module docstring, read with fissix's Python 2 grammar (raises if it rejects the text)."""
    from fissix import pygram, pytree
    from fissix.pgen2 import driver, token

    tree = driver.Driver(pygram.python_grammar, convert=pytree.convert).parse_string(text)
    first = tree.children[0] if tree.children else None
    leaf = first.children[0] if first is not None and first.children else None
    if leaf is None or leaf.type != token.STRING:
        return None
    return inspect.cleandoc(ast.literal_eval(leaf.value))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_a_documented_fixture(script):
    text = script.read_text(encoding="utf-8")
    if "python2" in markers(script):
        docstring = python2_docstring(text)
    else:
        docstring = ast.get_docstring(ast.parse(text, filename=str(script)))
    assert docstring and ("bad" in docstring.split("\n", 1)[0] or docstring.startswith("Clean")), script.name
    codes = {code for found in expect_lines(script).values() for code in found}
    for marker in markers(script):
        assert marker in ("lint-only", "python2", "raised-on-expect-line") or re.fullmatch(r"raises \w+", marker), marker
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


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fork-server":
        fork_server(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: test_fixture_scripts_run.py --fork-server legacy|keras3 WORKERS")
