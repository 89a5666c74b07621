"""`flake8 --select BN`: the real flake8 runs bnaudit's per-file analysis through its entry point."""

from __future__ import annotations

import subprocess
import sys

UNRUN = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
saver = tf.train.Saver(tf.trainable_variables())  # noqa: BN004
"""


def flake8(*args, cwd, stdin=None):
    return subprocess.run([sys.executable, "-m", "flake8", "--isolated", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, input=stdin)


def test_flake8_reports_bn_codes_with_flake8_positions_and_noqa(tmp_path):
    (tmp_path / "train.py").write_text(UNRUN, encoding="utf-8")
    proc = flake8("--select", "BN", "train.py", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith("train.py:4:12: BN001 this train op does not run the moving-average updates"), line
    assert "(train.py:3)" in line  # the layer it points to, under flake8's name for the file


def test_flake8_on_standard_input_and_on_a_clean_file(tmp_path):
    proc = flake8("--select", "BN", "--stdin-display-name", "model.py", "-", cwd=tmp_path, stdin=UNRUN)
    assert proc.stdout.startswith("model.py:4:12: BN001"), proc.stdout + proc.stderr
    (tmp_path / "clean.py").write_text("import tensorflow as tf\nh = tf.keras.layers.BatchNormalization()\n",
                                       encoding="utf-8")
    clean = flake8("--select", "BN", "clean.py", cwd=tmp_path)
    assert clean.returncode == 0 and clean.stdout == ""
