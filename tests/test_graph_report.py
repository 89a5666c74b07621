"""How `bnaudit graph` lays out what it read: the table a person reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from graph_fixtures import run_cli

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
