"""`bnaudit check` as a user runs it: the real console entry point, real files, exit codes, formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bnaudit.cli import main

UNRUN = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""
CLEAN = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_json(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["check", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_console_script_reports_and_exits_1(tmp_path):
    script = write(tmp_path, "train.py", UNRUN)
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", str(script)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"{os.path.relpath(script)}:4:12: BN001 [error] ")
    assert "    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))" in proc.stdout
    assert "fix: " in proc.stdout
    assert proc.stdout.rstrip().endswith("1 finding in 1 file (1 file checked); 1 fixable with --fix")
    assert proc.stderr == ""


def test_clean_file_exits_0(tmp_path, capsys):
    write(tmp_path, "train.py", CLEAN)
    assert main(["check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "0 findings in 0 files (1 file checked)"


def test_json_shape_is_stable(tmp_path, capsys):
    write(tmp_path, "train.py", UNRUN)
    code, data = run_json(capsys, str(tmp_path))
    assert code == 1
    assert len(data) == 1
    finding = data[0]
    assert list(finding) == ["code", "name", "severity", "path", "line", "column", "end_line", "end_column",
                             "message", "fix", "autofix"]
    assert finding["autofix"] == {"title": finding["fix"], "applicability": "safe"}
    assert finding["code"] == "BN001" and finding["name"] == "unrun-update-ops"
    assert finding["severity"] == "error"
    assert (finding["line"], finding["column"], finding["end_line"]) == (4, 12, 4)
    assert finding["end_column"] > finding["column"]
    assert "UPDATE_OPS" in finding["message"] and finding["fix"]


@pytest.mark.parametrize("spelling", [
    "import tensorflow as tf\nbn = tf.contrib.layers.batch_norm\n",
    "import tensorflow as tf\nslim = tf.contrib.slim\nbn = slim.batch_norm\n",
    "from tensorflow.contrib import slim\nimport tensorflow as tf\nbn = slim.batch_norm\n",
    "import tf_slim as slim\nimport tensorflow as tf\nbn = slim.batch_norm\n",
    "from tensorflow.contrib.layers import batch_norm as bn\nimport tensorflow as tf\n",
    "from tensorflow.contrib.layers.python.layers import batch_norm as bn\nimport tensorflow as tf\n",
    "import tensorflow as tf\ntcl = tf.contrib.layers\nbn = tcl.batch_norm\n",
    "import tensorflow as tf\nimport functools\nbn = functools.partial(tf.contrib.layers.batch_norm, decay=0.9)\n",
])
def test_aliases_are_resolved(tmp_path, capsys, spelling):
    text = spelling + textwrap.dedent("""\
        x = tf.placeholder(tf.float32, [None, 4])
        h = bn(x, is_training=True)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        """)
    write(tmp_path, "train.py", text)
    code, data = run_json(capsys, str(tmp_path))
    assert [d["code"] for d in data] == ["BN001"] and code == 1


def test_compat_v1_alias(tmp_path, capsys):
    write(tmp_path, "train.py", """\
        import tensorflow.compat.v1 as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.layers.batch_normalization(x, training=True)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        """)
    _, data = run_json(capsys, str(tmp_path))
    assert [(d["code"], d["line"]) for d in data] == [("BN001", 4)]


def test_layer_and_train_op_in_different_files(tmp_path, capsys):
    write(tmp_path, "model.py", """\
        import tensorflow as tf
        def build(x, is_training):
            return tf.contrib.layers.batch_norm(x, is_training=is_training, scope='bn1')
        """)
    write(tmp_path, "train.py", """\
        import tensorflow as tf
        from model import build
        x = tf.placeholder(tf.float32, [None, 4])
        loss = tf.reduce_sum(build(x, True))
        train_op = tf.train.AdamOptimizer().minimize(loss)
        """)
    _, data = run_json(capsys, str(tmp_path))
    assert [(Path(d["path"]).name, d["line"], d["code"]) for d in data] == [("train.py", 5, "BN001")]
    assert "`bn1`" in data[0]["message"] and "model.py:3" in data[0]["message"]


def test_parse_errors_do_not_stop_other_files(tmp_path, capsys):
    write(tmp_path, "a_py2_and_broken.py", "import tensorflow as tf\nprint 'batch_norm'\nx = [1,, 2]\n")
    write(tmp_path, "b_syntax.py", "def f(:\n    pass\n")
    write(tmp_path, "c_binary.py", b"\x00\x01\x02batch_norm\xff")
    write(tmp_path, "d_encoding.py", b"# batch_norm\nx = '\xff\xfe'\n")
    write(tmp_path, "e_empty.py", "")
    write(tmp_path, "f_train.py", UNRUN)
    # Files named on the command line are always parsed.
    names = sorted(str(p) for p in tmp_path.iterdir())
    code, data = run_json(capsys, *names)
    assert code == 1
    got = {(Path(d["path"]).name, d["code"]) for d in data}
    assert got == {("a_py2_and_broken.py", "BN000"), ("b_syntax.py", "BN000"), ("c_binary.py", "BN000"),
                   ("d_encoding.py", "BN000"), ("f_train.py", "BN001")}
    # The Python 2 grammar got further (line 3) than the Python 3 one (line 2): its error is reported.
    py2 = next(d for d in data if d["path"].endswith("a_py2_and_broken.py"))
    assert py2["line"] == 3 and "Python 2 grammar" in py2["message"]
    assert next(d for d in data if d["path"].endswith("c_binary.py"))["message"].startswith("binary file")
    assert next(d for d in data if d["path"].endswith("d_encoding.py"))["message"].startswith("cannot decode")


PY2_TRAIN = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
print "building", x
h = tf.contrib.layers.batch_norm(x, is_training=True)
try:
    loss = tf.reduce_sum(h)
except ValueError, e:
    print >>sys.stderr, `e`
print "x"; train_op = tf.train.AdamOptimizer().minimize(loss)
"""


def test_python2_file_is_analyzed_with_positions_in_the_original(tmp_path, capsys):
    write(tmp_path, "train.py", PY2_TRAIN)
    code, data = run_json(capsys, str(tmp_path / "train.py"))
    assert code == 1
    line = PY2_TRAIN.splitlines()[8]
    assert [(d["code"], d["line"], d["column"]) for d in data] == [("BN001", 9, line.index("tf.train") + 1)]
    assert line[data[0]["column"] - 1:data[0]["end_column"] - 1] == "tf.train.AdamOptimizer().minimize(loss)"


def test_tab_after_spaces_that_cpython_accepts_is_not_a_parse_error(tmp_path, capsys):
    source = ("import tensorflow as tf\n"
              "def train(x):\n"
              "    if x is not None:\n"
              "\t     h = tf.contrib.layers.batch_norm(x, is_training=True)\n"
              "    return tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))\n")
    compile(source, "train.py", "exec")  # CPython accepts it
    write(tmp_path, "train.py", source)
    code, data = run_json(capsys, str(tmp_path / "train.py"))
    assert [(d["code"], d["line"], d["column"]) for d in data] == [("BN001", 5, 12)]


def test_missing_path_is_a_usage_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"bnaudit: error: {tmp_path / 'nope.py'}: no such file or directory"


def test_missing_path_beside_a_good_one_still_checks(tmp_path, capsys):
    good = write(tmp_path, "train.py", UNRUN)
    assert main(["check", str(tmp_path / "nope.py"), str(good)]) == 1
    captured = capsys.readouterr()
    assert "no such file" in captured.err and "BN001" in captured.out


def test_unreadable_file_is_reported(tmp_path, capsys):
    directory = tmp_path / "locked"
    directory.mkdir()
    write(directory, "train.py", UNRUN)
    os.chmod(directory, 0)
    try:
        if os.access(directory, os.R_OK):
            pytest.skip("running as a user that bypasses permissions (root)")
        assert main(["check", str(directory)]) == 2
        assert "permission denied" in capsys.readouterr().err
    finally:
        os.chmod(directory, 0o755)


@pytest.mark.parametrize("comment", [
    "# bnaudit: ignore[BN001]", "# noqa: BN001", "# noqa", "# bnaudit: ignore[BN009, BN001]",
    # as flake8 and ruff read them: codes separated by spaces, a reason after them, trailing space,
    # two comments on one line, names and prefixes inside ignore[...]
    "# noqa: E501 BN001", "# noqa:BN001,E501", "# noqa: BN001 because the updates run in a hook",
    "# noqa: BN001 ", "# bnaudit: ignore  # noqa: E501", "# type: ignore  # noqa: BN001",
    "# bnaudit: ignore[unrun-update-ops]", "# bnaudit: ignore[BN00]", "# bnaudit: ignore[BN001 BN004]",
])
def test_suppression_comments(tmp_path, capsys, comment):
    text = UNRUN.rstrip("\n") + f"  {comment}\n"
    write(tmp_path, "train.py", text)
    assert run_json(capsys, str(tmp_path)) == (0, [])


@pytest.mark.parametrize("comment", ["# noqa: BN004", "# noqa: E501", "# noqa:E501 because BN001 is fine",
                                     "# bnaudit: ignore[BN004]", "# bnaudit: ignore[slow-moving-average]"])
def test_suppression_of_another_code_does_not_hide(tmp_path, capsys, comment):
    write(tmp_path, "train.py", UNRUN.rstrip("\n") + f"  {comment}\n")
    assert [d["code"] for d in run_json(capsys, str(tmp_path))[1]] == ["BN001"]


def test_skip_file_drops_the_files_findings_but_not_its_facts(tmp_path, capsys):
    """The model file is skipped, yet its layer still takes part in the train op's fault elsewhere."""
    write(tmp_path, "model.py", "# bnaudit: skip-file\nimport tensorflow as tf\n"
          "def net(x):\n    return tf.contrib.layers.batch_norm(x, is_training=True)\n")
    write(tmp_path, "skipped.py", "# bnaudit: skip-file\n" + UNRUN)
    write(tmp_path, "train.py", "import tensorflow as tf\nfrom model import net\n"
          "x = tf.placeholder(tf.float32, [None, 4])\n"
          "train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(net(x)))\n")
    code, findings = run_json(capsys, str(tmp_path))
    assert [(Path(f["path"]).name, f["code"]) for f in findings] == [("train.py", "BN001")]


def test_select_and_ignore(tmp_path, capsys):
    write(tmp_path, "train.py", UNRUN + "saver = tf.train.Saver(tf.trainable_variables())\n")
    assert sorted(d["code"] for d in run_json(capsys, str(tmp_path))[1]) == ["BN001", "BN004"]
    assert [d["code"] for d in run_json(capsys, "--select", "BN004", str(tmp_path))[1]] == ["BN004"]
    assert [d["code"] for d in run_json(capsys, "--ignore", "BN004", str(tmp_path))[1]] == ["BN001"]
    assert [d["code"] for d in run_json(capsys, "--select", "unrun-update-ops", str(tmp_path))[1]] == ["BN001"]
    assert run_json(capsys, "--ignore", "BN00", str(tmp_path)) == (0, [])


def test_unknown_code_is_a_usage_error(tmp_path, capsys):
    assert main(["check", "--select", "BN999", str(tmp_path)]) == 2
    assert "unknown rule code" in capsys.readouterr().err


def test_pyproject_configuration(tmp_path, capsys):
    write(tmp_path, "pyproject.toml", """\
        [tool.bnaudit]
        ignore = ["BN004"]
        exclude = ["legacy/*"]
        """)
    write(tmp_path, "train.py", UNRUN + "saver = tf.train.Saver(tf.trainable_variables())\n")
    write(tmp_path, "legacy/old.py", UNRUN)
    _, data = run_json(capsys, str(tmp_path))
    assert [(Path(d["path"]).name, d["code"]) for d in data] == [("train.py", "BN001")]
    # --ignore adds to the configuration's ignore.
    assert run_json(capsys, "--ignore", "BN001", str(tmp_path)) == (0, [])


def test_each_file_takes_its_nearest_configuration(tmp_path, capsys):
    """As ruff: the nearest pyproject.toml with a [tool.bnaudit] table (one without the table does not
    hide its parent's), whatever the order of the paths; --select replaces, --extend-select adds;
    per-file-ignores globs are relative to their pyproject.toml."""
    saver = UNRUN + "saver = tf.train.Saver(tf.trainable_variables())\n"
    write(tmp_path, "pyproject.toml", """\
        [tool.bnaudit]
        ignore = ["BN004"]

        [tool.bnaudit.per-file-ignores]
        "tests/*" = ["BN001"]
        """)
    write(tmp_path, "app/pyproject.toml", "[project]\nname = 'app'\n")
    write(tmp_path, "strict/pyproject.toml", "[tool.bnaudit]\nselect = ['BN004']\n")
    for directory in ("", "app/", "strict/", "tests/"):
        write(tmp_path, f"{directory}train.py", saver)

    def found(*args):
        code, data = run_json(capsys, *args)
        return sorted((Path(d["path"]).resolve().relative_to(tmp_path.resolve()).as_posix(), d["code"]) for d in data)

    everything = [("app/train.py", "BN001"), ("strict/train.py", "BN004"), ("train.py", "BN001")]
    assert found(str(tmp_path)) == everything
    assert found(str(tmp_path / "strict"), str(tmp_path)) == everything
    # --select replaces strict/'s select; the per-file-ignores of tests/* still hold.
    assert found("--select", "BN001", str(tmp_path)) == [
        ("app/train.py", "BN001"), ("strict/train.py", "BN001"), ("train.py", "BN001")]
    assert found("--extend-select", "BN001", str(tmp_path / "strict")) == [
        ("strict/train.py", "BN001"), ("strict/train.py", "BN004")]
    code = main(["check", "--show-settings", str(tmp_path / "tests" / "train.py")])
    settings = json.loads(capsys.readouterr().out)
    assert code == 0 and settings["configuration"] == str(tmp_path / "pyproject.toml")
    assert settings["ignore"] == ["BN001", "BN004"]


def test_bad_configuration_is_a_usage_error(tmp_path, capsys):
    write(tmp_path, "pyproject.toml", "[tool.bnaudit]\nselect = 'BN001'\n")
    write(tmp_path, "train.py", UNRUN)
    assert main(["check", str(tmp_path)]) == 2
    assert "must be a list of strings" in capsys.readouterr().err


def test_discovery_skips_vendored_trees(tmp_path, capsys):
    write(tmp_path, "train.py", CLEAN)
    for vendored in (".git/hooks/x.py", "venv/lib/python3.11/site-packages/pkg/x.py",
                     "site-packages/pkg/x.py", "node_modules/x.py", "__pycache__/x.py"):
        write(tmp_path, vendored, UNRUN)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    write(tmp_path, "notes.txt", UNRUN)
    assert main(["check", str(tmp_path)]) == 0
    assert "(1 file checked)" in capsys.readouterr().out
    # Named explicitly, a vendored file is checked.
    assert main(["check", str(tmp_path / "site-packages/pkg/x.py")]) == 1


def test_exclude_glob(tmp_path, capsys):
    write(tmp_path, "train.py", UNRUN)
    write(tmp_path, "experiments/old_train.py", UNRUN)
    _, data = run_json(capsys, "--exclude", "experiments", str(tmp_path))
    assert [Path(d["path"]).name for d in data] == ["train.py"]


def test_default_path_is_the_current_directory(tmp_path, capsys, monkeypatch):
    write(tmp_path, "train.py", UNRUN)
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    assert capsys.readouterr().out.startswith("train.py:4:12: BN001")


def test_parallel_and_serial_runs_agree(tmp_path, capsys):
    for i in range(30):
        write(tmp_path, f"pkg/train_{i:02}.py", UNRUN if i % 3 == 0 else CLEAN)
    serial = run_json(capsys, "--jobs", "1", str(tmp_path))
    parallel = run_json(capsys, "--jobs", "2", str(tmp_path))
    assert serial == parallel and len(serial[1]) == 10


def test_prefilter_signals_read_in_the_pool_agree_with_one_process(tmp_path, capsys):
    # Past SIGNALS_PARALLEL_THRESHOLD files, the workers (forked, inheriting the files read) compute
    # what the prefilter reads; the selection and the findings must be those of one process.
    from bnaudit.source.engine import SIGNALS_PARALLEL_THRESHOLD

    write(tmp_path, "model.py", "import tensorflow as tf\ndef net(x):\n"
                                "    return tf.layers.batch_normalization(x, training=True)\n")
    write(tmp_path, "train.py", "import tensorflow as tf\nfrom model import net\n"
                                "x = tf.placeholder(tf.float32, [None, 4])\n"
                                "train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(net(x)))\n")
    for i in range(SIGNALS_PARALLEL_THRESHOLD):
        write(tmp_path, f"lib/util_{i:03}.py", f"import os\nVALUE = {i}\n")
    serial = run_json(capsys, "--no-cache", "--jobs", "1", str(tmp_path))
    parallel = run_json(capsys, "--no-cache", "--jobs", "2", str(tmp_path))
    assert serial == parallel
    assert [(Path(d["path"]).name, d["code"]) for d in parallel[1]] == [("train.py", "BN001")]


def test_rules_and_explain(capsys):
    assert main(["rules"]) == 0
    table = capsys.readouterr().out
    for code in ("BN000", "BN001", "BN012"):
        assert code in table
    assert main(["explain", "BN004"]) == 0
    assert "# BN004 saver-omits-moving-stats" in capsys.readouterr().out
    assert main(["explain", "cond-duplicated-bn"]) == 0
    assert "# BN008" in capsys.readouterr().out
    assert main(["explain", "BN999"]) == 2
    assert main(["rules", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 13


def test_help_documents_exit_codes(capsys):
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "2  usage error" in out


def test_facts_cache_is_used_and_invalidated(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BNAUDIT_CACHE_DIR", str(cache))
    script = write(tmp_path / "src", "train.py", UNRUN)
    first = run_json(capsys, str(script))
    entries = list(cache.rglob("*"))
    assert first[0] == 1 and any(entry.is_file() for entry in entries)
    assert run_json(capsys, str(script)) == first          # served from the cache:
    from bnaudit.source import analyze
    assert analyze([script], cache_dir=cache).parsed == 0  # nothing was parsed again
    script.write_text(CLEAN)                                # a changed file is analyzed again
    assert run_json(capsys, str(script)) == (0, [])
    for entry in cache.rglob("*"):                          # a corrupt entry is a miss, not a crash
        if entry.is_file():
            entry.write_bytes(b"not a pickle")
    assert run_json(capsys, str(script)) == (0, [])
    assert run_json(capsys, "--no-cache", str(script)) == (0, [])


def test_unused_suppressions_are_reported_on_request(tmp_path, capsys):
    """A comment that suppresses nothing is stale: named with the codes that matched no finding.
    A bare `# noqa` may serve another tool and is never reported."""
    write(tmp_path, "train.py", UNRUN.rstrip("\n") + "  # noqa: BN001 BN004\n"
          "y = 1  # bnaudit: ignore[BN005]\nz = 2  # bnaudit: ignore\nw = 3  # noqa\n"
          "saver = tf.train.Saver(tf.trainable_variables())  # bnaudit: ignore[saver-omits-moving-stats]\n")
    assert main(["check", "--no-cache", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["check", "--no-cache", "--report-unused-suppressions", str(tmp_path)]) == 1
    warnings = [line.split(": ", 2)[2] for line in capsys.readouterr().err.splitlines()]
    assert [line.split(": unused suppression ")[0].rsplit(":", 1)[1] for line in warnings] == ["4", "5", "6"]
    assert warnings[0].endswith("'# noqa: BN001 BN004': no BN004 finding on this line")
    assert warnings[1].endswith("'# bnaudit: ignore[BN005]': no BN005 finding on this line")
    assert warnings[2].endswith("'# bnaudit: ignore': no finding on this line")
    assert main(["check", "--no-cache", "--report-unused-suppressions", "--exit-zero", str(tmp_path)]) == 0
