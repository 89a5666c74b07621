"""`check --fix`, `--unsafe-fixes`, `--diff`: what is written, what is not, and that no file is damaged."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bnaudit.cli import main
from bnaudit.findings import Finding
from bnaudit.fixes import Applicability, Edit, Fix
from bnaudit.source import analyze
from bnaudit.source.fixer import FixRun, apply, write

TAPE = textwrap.dedent("""\
    import keras
    import tensorflow as tf
    model = keras.Sequential([keras.layers.BatchNormalization()])
    opt = keras.optimizers.Adam()
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x)) + tf.reduce_sum(model(y))  # both calls
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
""")
FIXED_TAPE = TAPE.replace("model(x)", "model(x, training=True)").replace("model(y)", "model(y, training=True)")
UNSAFE = textwrap.dedent("""\
    import tensorflow.compat.v1 as tf
    x = tf.placeholder(tf.float32, [None, 4])
    y = tf.layers.batch_normalization(x, training=False)
    step = tf.train.get_or_create_global_step()
    saver = tf.train.Saver(tf.trainable_variables() + [step])
""")


def write_file(tmp_path: Path, text: str, name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_fix_writes_both_fixes_of_one_statement_and_reports_what_remains(tmp_path, capsys):
    path = write_file(tmp_path, TAPE)
    assert main(["check", "--no-cache", "--fix", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == FIXED_TAPE   # the comment is kept
    out = capsys.readouterr().out
    assert out.strip().endswith("2 findings fixed, 0 remaining in 0 files (1 file checked)")


def test_diff_writes_nothing_and_exits_1(tmp_path, capsys):
    path = write_file(tmp_path, TAPE)
    assert main(["check", "--no-cache", "--diff", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == TAPE
    captured = capsys.readouterr()
    assert "-        loss = tf.reduce_sum(model(x)) + tf.reduce_sum(model(y))  # both calls" in captured.out
    assert "+        loss = tf.reduce_sum(model(x, training=True)) + tf.reduce_sum(model(y, training=True))" \
        in captured.out
    assert "2 fixes would be applied" in captured.err
    path.write_text(FIXED_TAPE, encoding="utf-8")
    assert main(["check", "--no-cache", "--diff", str(path)]) == 0
    assert capsys.readouterr().out == ""


def test_unsafe_fixes_need_the_flag(tmp_path, capsys):
    path = write_file(tmp_path, UNSAFE)
    assert main(["check", "--no-cache", "--fix", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == UNSAFE
    out = capsys.readouterr().out
    assert "[fixable with --fix --unsafe-fixes]" in out and "(1 more with --unsafe-fixes)" in out
    assert main(["check", "--no-cache", "--fix", "--unsafe-fixes", str(path)]) == 0
    assert "tf.train.Saver(tf.global_variables())" in path.read_text(encoding="utf-8")


def test_fix_keeps_mode_and_links(tmp_path):
    target = write_file(tmp_path, TAPE, "real.py")
    os.chmod(target, 0o640)
    link = tmp_path / "link.py"
    link.symlink_to(target)
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--no-cache", "--fix", str(link)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_text(encoding="utf-8") == FIXED_TAPE
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bnaudit-fix-")] == []


def test_a_file_changed_since_it_was_read_is_not_written(tmp_path):
    path = write_file(tmp_path, TAPE)
    run = FixRun(originals={str(path): TAPE.encode()}, texts={str(path): FIXED_TAPE.encode()})
    path.write_text(TAPE + "# edited meanwhile\n", encoding="utf-8")
    errors = write(run)
    assert errors == [f"{path}: not fixed: the file changed while bnaudit was fixing it"]
    assert path.read_text(encoding="utf-8").endswith("# edited meanwhile\n")


def test_a_fix_whose_result_does_not_parse_is_dropped(tmp_path):
    """libcst prints `f() = 1` happily; CPython rejects it, so the file is left as it was."""
    source = b"import os\nx = 1\n"
    path = str(tmp_path / "t.py")
    # Node 1 is the module, 2 the import line... find the Name `x` by its number, as a rule would.
    names = {}
    from bnaudit.source.facts import Walker
    import libcst as cst

    class Numbers(Walker):
        def walk(self, node):
            if isinstance(node, cst.Name) and node.value == "x":
                names["x"] = self._index + 1
            super().walk(node)

    Numbers().walk(cst.parse_module(source))
    finding = Finding(path, 2, 1, "BN006", "test", autofix=Fix("t", (Edit.replace(names["x"], "f()"),)))
    done = apply(path, source, [finding])
    assert done.text == source and done.fixed == []
    assert done.notes == [f"{path}: fixes dropped: the fixed file would not parse"]


def test_overlapping_fixes_wait_for_the_next_round(tmp_path):
    source = b"y = f(g(1))\n"
    import libcst as cst

    from bnaudit.source.facts import Walker

    calls = []

    class Numbers(Walker):
        def walk(self, node):
            if isinstance(node, cst.Call):
                calls.append(self._index + 1)
            super().walk(node)

    Numbers().walk(cst.parse_module(source))
    outer, inner = calls
    first = Finding("t.py", 1, 5, "BN006", "a", autofix=Fix("a", (Edit.keyword(outer, "training", "True"),)))
    second = Finding("t.py", 1, 7, "BN006", "b", autofix=Fix("b", (Edit.keyword(inner, "training", "True"),)))
    done = apply("t.py", source, [first, second])
    assert done.text == b"y = f(g(1), training=True)\n" and done.fixed == [first]


def test_stdin_fix_prints_the_fixed_source(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--fix", "-", "--stdin-filename", "train.py"],
                          input=TAPE, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == FIXED_TAPE
    assert "2 findings fixed" in proc.stderr


def test_notebook_is_reported_not_rewritten(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TAPE)])
    path = tmp_path / "train.ipynb"
    nbformat.write(notebook, str(path))
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--no-cache", "--fix", str(path)],
                          capture_output=True, text=True)
    assert path.read_bytes() == before
    assert "notebooks are not rewritten" in proc.stderr and proc.returncode == 1


def test_fix_leaves_a_file_with_a_syntax_error_alone(tmp_path):
    good = write_file(tmp_path, TAPE)
    bad = write_file(tmp_path, "def broken(:\n", "broken.py")
    assert main(["check", "--no-cache", "--fix", str(good), str(bad)]) == 1   # BN000 remains
    assert good.read_text(encoding="utf-8") == FIXED_TAPE and bad.read_text(encoding="utf-8") == "def broken(:\n"


def test_findings_carry_their_applicability(tmp_path):
    path = write_file(tmp_path, UNSAFE)
    (finding,) = analyze([path]).findings
    assert finding.autofix is not None and finding.autofix.applicability is Applicability.UNSAFE
