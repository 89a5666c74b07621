"""The pre-commit hook, run by the real pre-commit in a temporary git repository.

The hook is the one `.pre-commit-hooks.yaml` publishes, installed as a local hook that runs the
bnaudit of this environment (`language: system`), so the test needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # pre-commit depends on PyYAML

ROOT = Path(__file__).resolve().parent.parent
FAULT = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""
FIXED = FAULT.replace("is_training=True)", "is_training=True, updates_collections=None)")


@pytest.fixture
def repository(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    hook["language"] = "system"
    hook["entry"] = f"{sys.executable} -m bnaudit {hook['entry'].split(' ', 1)[1]}"
    config = {"repos": [{"repo": "local", "hooks": [hook]}]}
    (tmp_path / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / ".cache"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", BNAUDIT_CACHE_DIR=str(tmp_path / ".bnaudit"))

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)

    assert git("init", "-q").returncode == 0
    (tmp_path / ".gitignore").write_text(".cache/\n.bnaudit/\n", encoding="utf-8")
    installed = subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=tmp_path, capture_output=True,
                               text=True, env=env, timeout=300)
    assert installed.returncode == 0, installed.stderr
    git("add", ".gitignore", ".pre-commit-config.yaml")
    assert git("commit", "-q", "-m", "setup").returncode == 0
    return tmp_path, git


def test_a_fault_blocks_the_commit_and_its_fix_passes(repository):
    path, git = repository
    (path / "train.py").write_text(FAULT, encoding="utf-8")
    git("add", "train.py")
    blocked = git("commit", "-m", "train")
    assert blocked.returncode != 0 and "BN001" in blocked.stdout + blocked.stderr
    (path / "train.py").write_text(FIXED, encoding="utf-8")
    git("add", "train.py")
    passed = git("commit", "-m", "train, fixed")
    assert passed.returncode == 0, passed.stdout + passed.stderr


def test_an_untracked_scratch_file_does_not_block_a_clean_commit(repository):
    path, git = repository
    (path / "scratch.py").write_text(FAULT, encoding="utf-8")  # never added
    (path / "train.py").write_text(FIXED, encoding="utf-8")
    git("add", "train.py")
    passed = git("commit", "-m", "clean")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    # The same scratch file, once staged, is part of the program and blocks.
    git("add", "scratch.py")
    assert git("commit", "-m", "scratch").returncode != 0
