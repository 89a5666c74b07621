"""Where `bnaudit check` reads from: standard input, and directories that honour .gitignore."""

from __future__ import annotations

import json
import subprocess
import sys

SOURCE = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""


def bnaudit(*args, cwd, stdin=None):
    return subprocess.run([sys.executable, "-m", "bnaudit", "check", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, input=stdin)


def test_standard_input_under_its_stdin_filename(tmp_path):
    proc = bnaudit("-", cwd=tmp_path, stdin=SOURCE)
    assert proc.returncode == 1 and proc.stdout.startswith("-:4:12: BN001 [error]"), proc.stdout + proc.stderr
    assert "(-:3)" in proc.stdout  # the layer the message points to, in the same file
    proc = bnaudit("--format", "json", "--stdin-filename", "src/train.py", "-", cwd=tmp_path, stdin=SOURCE)
    (finding,) = json.loads(proc.stdout)
    assert finding["path"] == "src/train.py" and finding["line"] == 4
    text = bnaudit("--stdin-filename", "src/train.py", "-", cwd=tmp_path, stdin=SOURCE).stdout
    assert "    train_op = tf.train.AdamOptimizer()" in text  # the source excerpt, from standard input


def test_standard_input_takes_the_configuration_of_its_stdin_filename(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "pyproject.toml").write_text('[tool.bnaudit]\nignore = ["BN001"]\n', encoding="utf-8")
    proc = bnaudit("--stdin-filename", "project/train.py", "-", cwd=tmp_path, stdin=SOURCE)
    assert proc.returncode == 0, proc.stdout
    assert bnaudit("--stdin-filename", "elsewhere/train.py", "-", cwd=tmp_path, stdin=SOURCE).returncode == 1


def test_standard_input_is_not_mixed_with_paths(tmp_path):
    proc = bnaudit("-", "train.py", cwd=tmp_path, stdin=SOURCE)
    assert proc.returncode == 2 and "cannot be combined" in proc.stderr


def test_directories_honour_gitignore_as_git_does(tmp_path):
    """Root and nested .gitignore files, negation, .git/info/exclude; a file named explicitly is always
    checked, and --no-respect-gitignore checks everything."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("scratch/\n*_tmp.py\n", encoding="utf-8")
    (tmp_path / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("src/local.py\n", encoding="utf-8")
    (tmp_path / "src" / "gen").mkdir(parents=True)
    (tmp_path / "src" / ".gitignore").write_text("gen/*\n!gen/keep.py\n", encoding="utf-8")
    (tmp_path / "scratch").mkdir()
    files = ["scratch/a.py", "src/b_tmp.py", "src/local.py", "src/gen/made.py", "src/gen/keep.py", "src/train.py"]
    for name in files:
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")

    def checked(*args, cwd=tmp_path):
        proc = bnaudit("--no-cache", "--format", "json", *args, cwd=cwd)
        return sorted({finding["path"] for finding in json.loads(proc.stdout)})

    assert checked(".") == ["src/gen/keep.py", "src/train.py"]
    assert checked(".", cwd=tmp_path / "src") == ["gen/keep.py", "train.py"]
    assert checked("scratch/a.py") == ["scratch/a.py"]
    assert checked("--no-respect-gitignore", ".") == sorted(files)
