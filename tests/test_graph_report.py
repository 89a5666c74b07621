"""How `bnaudit graph` lays out what it read: the table a person reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.register_assert_rewrite("graph_fixtures")
from graph_fixtures import run_cli  # noqa: E402

pytest_plugins = ["graph_fixtures"]

# Twelve batch-norm layers written by TF's own Saver, with trained-looking values.
WRITE_CHECKPOINT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    rng = np.random.RandomState(0)
    for i in range(12):
        name = "batch_normalization" + ("_%d" % i if i else "")
        with tf.variable_scope(name):
            tf.Variable(rng.uniform(0.5, 1.5, 4).astype("float32"), name="gamma")
            tf.Variable(rng.normal(0, 0.1, 4).astype("float32"), name="beta")
            tf.Variable(rng.normal(0, 1, 4).astype("float32"), name="moving_mean", trainable=False)
            tf.Variable(rng.uniform(0.5, 2, 4).astype("float32"), name="moving_variance", trainable=False)
    step = tf.train.get_or_create_global_step()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(step.assign(5000))
        tf.train.Saver().save(sess, sys.argv[1] + "/model.ckpt", global_step=step)
""")


def test_layers_are_listed_in_natural_order(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code, out, err = run_cli("graph", str(tmp_path))
    assert code == 0, out + err
    expected = ["batch_normalization"] + [f"batch_normalization_{i}" for i in range(1, 12)]
    assert [line.split()[0] for line in out.splitlines() if line.startswith("batch_normalization")] == expected, out
    for meta in tmp_path.glob("*.meta"):   # the checkpoint alone, without its graph
        meta.unlink()
    code, out, err = run_cli("graph", str(tmp_path))
    assert [line.split()[0] for line in out.splitlines() if line.startswith("batch_normalization")] == expected, out


def test_one_nan_channel_leaves_the_range_of_the_others_readable(tmp_path):
    # A diverged channel: the row shows the finite range and how many channels are NaN/Inf (it used
    # to print `nan / nan`), and BN012 still names the fault.
    script = WRITE_CHECKPOINT.replace("range(12)", "range(2)").replace(
        "    sess.run(step.assign(5000))\n",
        "    sess.run(step.assign(5000))\n"
        "    mean = tf.global_variables()[2]\n"
        "    sess.run(mean.assign(np.array([0.5, np.nan, -0.25, np.inf], 'float32')))\n")
    assert "np.nan" in script
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code, out, err = run_cli("graph", str(tmp_path))
    row = next(line for line in out.splitlines() if line.startswith("batch_normalization "))
    assert "[-0.25, 0.5] +2 NaN/Inf" in row and "BN012" in row, out
    assert "nan" not in row.lower().replace("nan/inf", ""), row
    assert code == 1 and "BN012" in out


def test_findings_of_one_code_are_one_block_with_one_fix(artifact_path):
    """Two layers with BN001 and BN010 each: two blocks, a line per layer, the fix once per block."""
    code, out, _ = run_cli("graph", str(artifact_path("bn001-unrun-update-ops")))
    assert code == 1
    assert out.count("    fix: ") == 2, out
    assert "BN001 [error] unrun-update-ops, 2 layers:" in out and "BN010 [error] stale-moving-stats, 2 layers:" in out
    block = out[out.index("BN001 [error]"):out.index("BN010 [error]")]
    assert [line.split(":")[0].strip() for line in block.splitlines()[1:3]] == ["conv_bn", "fc_bn"], block
    assert "4 findings in 1 artifact" in out


def test_json_report_has_layers_findings_and_counts(artifact_path, tmp_path):
    paths = [str(artifact_path("bn005-negative-variance")), str(artifact_path("keras")), str(tmp_path / "gone.h5")]
    code, out, err = run_cli("graph", "--format", "json-report", *paths)
    assert code == 2 and "gone.h5: no such file" in err
    report = json.loads(out)
    assert report["unreadable"] == [paths[2]]
    assert report["summary"] == {"artifacts": 2, "unreadable": 1, "damaged": 0, "findings": 1,
                                 "by_code": {"BN005": 1}}
    negative, keras = report["artifacts"]
    assert negative["step"] == 300 and negative["step_from"] == "global_step"
    layers = {layer["layer"]: layer for layer in negative["layers"]}
    assert set(layers) == {"conv_bn", "fc_bn"}
    assert layers["fc_bn"]["codes"] == ["BN005"] and layers["conv_bn"]["codes"] == []
    variance = layers["fc_bn"]["values"]["moving_variance"]
    assert variance["min"] == -3.0 and variance["nonfinite"] == 0 and layers["fc_bn"]["channels"] == 16
    assert layers["fc_bn"]["saved"] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layers["conv_bn"]["decay"] == pytest.approx(0.99)
    # The findings keep the shape of --format json, which CI users parse.
    _, plain, _ = run_cli("graph", "--format", "json", paths[0])
    assert negative["findings"] == json.loads(plain)
    assert keras["findings"] == [] and {layer["layer"] for layer in keras["layers"]} == {"conv_bn", "fc_bn"}


def test_many_artifacts_end_in_a_summary_line(artifact_path):
    code, out, _ = run_cli("graph", str(artifact_path("bn005-negative-variance")), str(artifact_path("keras")),
                           str(artifact_path("h5")))
    assert code == 1
    assert out.rstrip().splitlines()[-1] == "1 finding in 3 artifacts (1 with findings, 2 clean)"


def test_progress_goes_to_a_terminal_only(artifact_path):
    """`[i/n] path` on stderr when it is a terminal (erased once done), nothing when it is a pipe."""
    from support import run_on_terminal

    paths = [str(artifact_path("keras")), str(artifact_path("h5"))]
    command = [sys.executable, "-m", "bnaudit", "graph", *paths]
    code, text = run_on_terminal(command, "stderr")
    assert code == 0, text
    assert f"[1/2] {paths[0]}" in text and f"[2/2] {paths[1]}" in text, text
    assert text.endswith("\r"), repr(text[-80:])
    piped = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "[1/2]" not in piped.stderr, piped.stderr


def test_graph_speaks_the_ci_formats_too(artifact_path, tmp_path):
    """SARIF valid against the official schema, one annotation per finding, and --fail-on/--exit-zero."""
    import jsonschema
    from pathlib import Path

    schema = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    code, out, _ = run_cli("graph", "--format", "sarif", str(artifact_path("bn005-negative-variance")))
    assert code == 1
    jsonschema.Draft4Validator(schema).validate(json.loads(out))
    (result,) = json.loads(out)["runs"][0]["results"]
    assert result["ruleId"] == "BN005" and result["properties"] == {"layer": "fc_bn"}
    code, out, _ = run_cli("graph", "--format", "github", str(artifact_path("bn005-negative-variance")))
    assert out.startswith("::error file=") and "title=BN005 negative-variance" in out
    slow = str(artifact_path("bn009-slow-decay"))
    assert run_cli("graph", "--fail-on", "error", slow)[0] == 0  # BN009 is a warning
    assert run_cli("graph", slow)[0] == 1
    assert run_cli("graph", "--exit-zero", str(artifact_path("bn005-negative-variance")))[0] == 0
    target = tmp_path / "report.json"
    code, out, _ = run_cli("graph", "--format", "json", "-o", str(target), slow)
    assert code == 1 and out == "" and json.loads(target.read_text())[0]["code"] == "BN009"
