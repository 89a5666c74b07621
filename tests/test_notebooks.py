"""Jupyter notebooks: code cells read with nbformat and judged as one program, reported by cell and line."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest


def bnaudit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bnaudit", "check", "--no-cache", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture
def notebook(tmp_path):
    """BN001 across cells: the layer in cell 3, the train op in cell 5, magics and a bash cell between."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Training"),
        nbformat.v4.new_code_cell("%matplotlib inline\n!pip install tensorflow\nimport tensorflow as tf"),
        nbformat.v4.new_code_cell("x = tf.placeholder(tf.float32, [None, 4])\n"
                                  "h = tf.contrib.layers.batch_norm(x, is_training=True)"),
        nbformat.v4.new_code_cell("%%bash\necho this is not python | grep -c (((("),
        nbformat.v4.new_code_cell("loss = tf.reduce_sum(h)\ntf.reduce_sum?\n"
                                  "train_op = tf.train.AdamOptimizer().minimize(loss)"),
    ]
    nbformat.write(nb, str(tmp_path / "train.ipynb"))
    return tmp_path


def test_a_fault_across_cells_is_found_and_told_by_cell(notebook):
    proc = bnaudit("train.ipynb", cwd=notebook)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("train.ipynb:cell 5:line 3:12: BN001 [error]"), first
    (finding,) = json.loads(bnaudit("--format", "json", "train.ipynb", cwd=notebook).stdout)
    assert finding["code"] == "BN001" and finding["line"] == 14  # the flat line of the joined cells


def test_directories_include_notebooks_and_clean_ones_pass(notebook):
    (notebook / "clean.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()), encoding="utf-8")
    proc = bnaudit("--format", "json", ".", cwd=notebook)
    assert [f["path"] for f in json.loads(proc.stdout)] == ["train.ipynb"]
    assert proc.returncode == 1


def test_a_file_that_is_no_notebook_is_one_line(notebook):
    (notebook / "broken.ipynb").write_text("{not json", encoding="utf-8")
    proc = bnaudit("broken.ipynb", cwd=notebook)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "bnaudit: error: broken.ipynb: not a notebook nbformat can read " \
                                  "(Notebook does not appear to be JSON: '{not json')"
    both = bnaudit("broken.ipynb", "train.ipynb", cwd=notebook)
    assert both.returncode == 1 and "BN001" in both.stdout and "broken.ipynb" in both.stderr
