"""A TF1 script with a placeholder flag and a plain minimize: bnaudit.layers generalizes, tf.layers does not.

Both runs happen in subprocesses: ``tf.compat.v1.layers`` needs
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, and the script runs
in legacy graph mode (ref variables, v1 control flow), which this process
must not switch to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "fixtures" / "layers" / "tf1_accuracy.py"


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = {layer: subprocess.Popen([sys.executable, str(SCRIPT), "--layer", layer], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for layer in ("bnaudit", "tf_layers")}
    out = {}
    for layer, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out[layer] = json.loads(stdout.strip().splitlines()[-1])
    return out


def test_bnaudit_test_accuracy_matches_training_accuracy(results):
    run = results["bnaudit"]
    assert run["update_ops"] == 0
    # Legacy graph mode (ref variables, v1 cond): one update per training step, none at evaluation.
    assert run["num_updates"] == [run["steps"], run["steps"]]
    assert run["train_accuracy"] > 0.95
    assert run["test_accuracy"] > 0.93
    assert run["test_accuracy"] >= run["train_accuracy"] - 0.05


def test_tf_layers_without_update_dependency_does_not(results):
    run = results["tf_layers"]
    assert run["update_ops"] == 4  # moving_mean/variance updates of two layers, never run
    assert run["train_accuracy"] > 0.95
    assert run["test_accuracy"] < run["train_accuracy"] - 0.2


def test_training_itself_is_the_same(results):
    """Batch statistics in training are the same in both: only inference differs."""
    assert abs(results["bnaudit"]["train_accuracy"] - results["tf_layers"]["train_accuracy"]) < 0.02
