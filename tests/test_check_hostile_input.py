"""`bnaudit check` on input built to break it: one line or one BN000 per file, never a crash or a hang.

Each case is a real process (`python -m bnaudit`), so a segfault in libcst's native parser or a
runaway constant fold shows as what it is, and a timeout bounds every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A batch norm with its fault (BN001) first, so that the file is analyzed, not skipped by the
# prefilter, and the test sees whether the analysis went on past the hostile line.
PREFIX = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""


def bnaudit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONFAULTHANDLER="")
    return subprocess.run([sys.executable, "-m", "bnaudit", "check", "--no-cache", "--format", "json", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


# What CPython refuses for nesting, and chains CPython accepts but that cost libcst its stack
# (a segfault) or minutes: BN000 in well under a second, as the parse is never tried.
@pytest.mark.parametrize("name, line", [
    ("parentheses", "z = " + "(" * 2000 + "1" + ")" * 2000),
    ("lists", "z = " + "[" * 300 + "]" * 300),
    ("calls", "z = " + "f(" * 300 + ")" * 300),
    ("dicts", "z = " + "{1: " * 400 + "1" + "}" * 400),
    ("additions", "z = " + "+".join(["1"] * 20000)),
    ("attributes", "z = a" + ".b" * 5000),
    ("subscripts", "z = a" + "[0]" * 5000),
    ("lambdas", "z = " + "lambda: " * 2000 + "1"),
])
def test_deep_nesting_is_bn000_not_a_crash(tmp_path, name, line):
    path = tmp_path / f"{name}.py"
    path.write_text(PREFIX + line + "\n", encoding="utf-8")
    proc = bnaudit(str(path), timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (finding,) = json.loads(proc.stdout)
    assert finding["code"] == "BN000" and "nested" in finding["message"], finding
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("line, code", [
    ("z = " + "(" * 2000 + "1" + ")" * 2000, "BN000"),   # refused before the parse
    ("z = " + "{1: " * 195 + "1" + "}" * 195, "BN001"),  # analyzed; deep facts pickled back from a worker
])
def test_a_deep_file_among_many_does_not_take_the_others_down(tmp_path, line, code):
    """30+ files run in the worker pool: the deep one is its own report, the others are analyzed."""
    for index in range(30):
        (tmp_path / f"m{index:02}.py").write_text(PREFIX, encoding="utf-8")
    (tmp_path / "deep.py").write_text(PREFIX + line + "\n", encoding="utf-8")
    proc = bnaudit("--jobs", "2", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    codes = {(Path(f["path"]).name, f["code"]) for f in json.loads(proc.stdout)}
    assert ("deep.py", code) in codes
    assert {(f"m{index:02}.py", "BN001") for index in range(30)} <= codes


@pytest.mark.parametrize("line", ["z = " + "+".join(["1"] * 25000), "z = f" + "()" * 8000, "z = a" + ".b" * 5000])
def test_a_long_chain_in_a_file_with_a_syntax_error_is_bn000_at_once(tmp_path, line):
    """Found by the fuzz campaign: with a syntax error elsewhere (so CPython's depth check cannot
    measure the chain), libcst took minutes on such a line, in native code no time budget stops."""
    path = tmp_path / "broken.py"
    path.write_text(PREFIX + line + "\n  x = 1\n", encoding="utf-8")   # and an unexpected indent
    proc = bnaudit(str(path), timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (finding,) = json.loads(proc.stdout)
    assert finding["code"] == "BN000" and "operators; bnaudit parses up to 2000" in finding["message"], finding


def test_operators_in_strings_are_not_a_chain(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(PREFIX + "w = '" + "+()" * 5000 + "'\n  x = 1\n", encoding="utf-8")
    (finding,) = json.loads(bnaudit(str(path), timeout=60).stdout)
    assert finding["code"] == "BN000" and "chains" not in finding["message"], finding


def test_flat_long_lines_of_real_data_still_parse(tmp_path):
    """A long line is not a deep one: a 5,000-number list and a string full of brackets are fine."""
    data = "z = [" + ", ".join(str(i) for i in range(5000)) + "]\nw = '" + "(" * 500 + "+" * 5000 + "'\n"
    (tmp_path / "data.py").write_text(PREFIX + data, encoding="utf-8")
    proc = bnaudit(str(tmp_path / "data.py"))
    assert [f["code"] for f in json.loads(proc.stdout)] == ["BN001"], proc.stdout


@pytest.mark.parametrize("literal", [r'"\N{NOT A NAME}"', r'"\x4"', 'b"é"', '"\\u12"'])
def test_a_literal_python_rejects_is_an_unknown_value_and_the_file_is_analyzed(tmp_path, literal):
    path = tmp_path / "literal.py"
    path.write_text(f"name = {literal}\n" + PREFIX, encoding="utf-8")
    proc = bnaudit(str(path))
    assert proc.returncode == 1 and "internal error" not in proc.stderr, proc.stderr
    assert [f["code"] for f in json.loads(proc.stdout)] == ["BN001"]


def test_huge_constant_powers_are_not_folded(tmp_path):
    """((9**63)**63)**63... would build integers of billions of digits; CPython's optimizer refuses too."""
    path = tmp_path / "powers.py"
    path.write_text(PREFIX + "z = ((9 ** 63) ** 63) ** 63 ** 63\nw = 10 ** 10 ** 10\n", encoding="utf-8")
    proc = bnaudit(str(path), timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert [f["code"] for f in json.loads(proc.stdout)] == ["BN001"]


def test_a_loop_longer_than_len_can_count(tmp_path):
    """range(10**20) overflows len(): the training length is still read, and BN009 still runs."""
    path = tmp_path / "long_run.py"
    path.write_text(
        "import tensorflow as tf\n"
        "x = tf.placeholder(tf.float32, [None, 4])\n"
        "h = tf.contrib.layers.batch_norm(x, is_training=True, decay=0.99, updates_collections=None)\n"
        "train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))\n"
        "sess = tf.Session()\n"
        "for step in range(10 ** 20):\n"
        "    sess.run(train_op)\n", encoding="utf-8")
    proc = bnaudit(str(path))
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_or_device_named_explicitly_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    device = tmp_path / "zero.py"
    device.symlink_to("/dev/zero")
    proc = bnaudit(str(fifo), str(device), timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"bnaudit: error: {fifo}: not a regular file (a FIFO, socket or device is never read)",
                     f"bnaudit: error: {device}: not a regular file (a FIFO, socket or device is never read)"]


def test_an_internal_error_never_exits_0(tmp_path, capsys, monkeypatch):
    """A rule that breaks leaves its findings missing: the run says so and exits 2, not 0 or 1."""
    from bnaudit.cli import main
    from bnaudit.source.rules import load_rules

    broken = next(rule for rule in load_rules() if rule.code == "BN001")

    def fail(self, program):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(broken, "check", fail)
    monkeypatch.delenv("BNAUDIT_DEBUG", raising=False)
    path = tmp_path / "train.py"
    path.write_text(PREFIX, encoding="utf-8")
    code = main(["check", "--no-cache", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "internal error in rule BN001 (ZeroDivisionError: a bug); its findings are missing" in err


def test_a_file_over_the_size_limit_is_skipped_with_a_line(tmp_path):
    from bnaudit.source.engine import MAX_FILE_BYTES

    big = tmp_path / "generated.py"
    big.write_text(PREFIX + "# " + "x" * 78 + "\n" * 1, encoding="utf-8")
    with big.open("a", encoding="utf-8") as handle:
        line = "z = 1  # " + "x" * 90 + "\n"
        handle.write(line * (MAX_FILE_BYTES // len(line) + 1))
    small = tmp_path / "train.py"
    small.write_text(PREFIX, encoding="utf-8")
    proc = bnaudit(str(big), str(small))
    assert proc.returncode == 1, proc.stderr
    assert "generated.py: skipped: " in proc.stderr and "over the limit of 8 MiB per file" in proc.stderr
    assert [(Path(f["path"]).name, f["code"]) for f in json.loads(proc.stdout)] == [("train.py", "BN001")]


def test_paths_and_configuration_that_used_to_be_tracebacks(tmp_path):
    """A non-UTF-8 file name, a 300-character name, `tool = 5`, and `--select ''`: one line each."""
    name = os.fsdecode(b"caf\xe9.py")
    (tmp_path / name).write_text(PREFIX, encoding="utf-8")
    for cache in ([], ["--no-cache"]):
        proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", *cache, "--format", "json", name],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert [f["code"] for f in json.loads(proc.stdout)] == ["BN001"]
    proc = bnaudit(str(tmp_path / ("x" * 300 + ".py")))
    assert proc.returncode == 2 and proc.stderr.strip().endswith("cannot be read (file name too long)"), proc.stderr
    for value in ("5", '"bnaudit"', "[1, 2]"):
        project = tmp_path / f"project{len(value)}"
        project.mkdir()
        (project / "pyproject.toml").write_text(f"tool = {value}\n", encoding="utf-8")
        (project / "train.py").write_text(PREFIX, encoding="utf-8")
        proc = bnaudit(str(project / "train.py"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "`tool` must be a table" in proc.stderr
    proc = bnaudit("--select", "", str(tmp_path / name))
    assert proc.returncode == 2 and "selects nothing" in proc.stderr


@pytest.mark.parametrize("name, line", [
    ("lists", "z = " + "[" * 195 + "]" * 195),
    ("calls", "z = " + "f(" * 195 + ")" * 195),
    ("dicts", "z = " + "{1: " * 195 + "1" + "}" * 195),
    ("mixed", "z = " + "f([{1: " * 65 + "1" + "}])" * 65),
    ("lambdas", "z = " + "lambda: " * 490 + "1"),
    ("subscripts", "z = a" + "[0]" * 490),
    ("negations", "z = " + "not " * 490 + "x"),
])
def test_nesting_python_accepts_is_analyzed(tmp_path, name, line):
    """Just under the limits (CPython's 200 brackets, 500 levels of expression): analyzed in full,
    positions included (the locator used to hit RecursionError at 150 levels)."""
    path = tmp_path / f"{name}.py"
    path.write_text(PREFIX + line + "\n", encoding="utf-8")
    proc = bnaudit(str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (finding,) = json.loads(proc.stdout)
    assert finding["code"] == "BN001" and finding["line"] == 4, finding



def test_each_file_has_a_time_budget(tmp_path):
    """Over BNAUDIT_FILE_TIMEOUT a file is reported as skipped (and never cached as such); the run goes on."""
    path = tmp_path / "train.py"
    path.write_text(PREFIX, encoding="utf-8")
    cache = tmp_path / "cache"
    env = dict(os.environ, BNAUDIT_FILE_TIMEOUT="0.0001", BNAUDIT_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=120, env=env)
    (finding,) = json.loads(proc.stdout)
    assert finding["code"] == "BN000" and "took over 0.0001 s (BNAUDIT_FILE_TIMEOUT)" in finding["message"]
    assert "BNAUDIT_FILE_TIMEOUT" in finding["fix"] and "syntax" not in finding["fix"]
    env["BNAUDIT_FILE_TIMEOUT"] = "0"
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert [f["code"] for f in json.loads(proc.stdout)] == ["BN001"], proc.stdout
