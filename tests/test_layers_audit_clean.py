"""Code and artifacts that use bnaudit.layers come out clean from `bnaudit check` and `bnaudit graph`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnaudit import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "fixtures" / "layers" / "examples"


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_check_finds_nothing_in_code_that_uses_the_layer(capsys):
    pytest.importorskip("bnaudit.source")
    code, out = _cli(capsys, "check", "--format", "json", str(EXAMPLES))
    assert code == cli.EXIT_CLEAN, out
    assert json.loads(out) == []


def test_check_flags_only_the_tf_layers_half_of_the_accuracy_script(capsys):
    pytest.importorskip("bnaudit.source")
    script = ROOT / "fixtures" / "layers" / "tf1_accuracy.py"
    code, out = _cli(capsys, "check", str(script))
    assert code == cli.EXIT_FINDINGS
    assert "BN001" in out and "batch_normalization" in out
    findings = [line for line in out.splitlines() if ": BN" in line]
    assert len(findings) == 1, out  # nothing about bnaudit.layers.batch_norm


def test_graph_finds_nothing_in_artifacts_the_layer_wrote(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    pytest.importorskip("bnaudit.graph.command")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = [subprocess.Popen([sys.executable, str(EXAMPLES / name), str(tmp_path)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("tf1_functional.py", "keras_model.py")]
    for proc in runs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    artifacts = [str(tmp_path / "model.ckpt"), str(tmp_path / "model.keras")]
    code, out = _cli(capsys, "graph", *artifacts)
    assert code == cli.EXIT_CLEAN, out
    assert "0 findings in 2 artifacts" in out
    assert "bn1" in out and "batch_norm" in out  # the inspector did see the layers
