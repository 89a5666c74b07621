"""bnaudit.watch on real (short, CPU) trainings: each fault by step 100 with its code, correct runs clean.

Keras 3 runs in this process; the TF1 hook runs in a subprocess (tf_keras and graph mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from bnaudit import watch  # noqa: E402


def build(momentum=0.9):
    inputs = keras.Input((8,))
    h = keras.layers.BatchNormalization(momentum=momentum, name="bn")(keras.layers.Dense(8)(inputs))
    block = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization(momentum=0.9, name="inner_bn")],
                             name="block")
    return keras.Model(inputs, keras.layers.Dense(1)(block(h)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(2, 3, (3200, 8)).astype("float32"), rng.normal(size=(3200, 1)).astype("float32")


def codes(found):
    return sorted((finding.code, finding.layer) for finding in found)


def test_a_correct_fit_reports_nothing_and_learns_its_plan_from_fit(data):
    x, y = data
    model = build()
    model.compile("adam", "mse")
    watcher = watch.BatchNormWatch(every_n_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # any report would fail the fit
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[watcher])
    assert watcher.findings == [] and watcher.total_steps == 200
    assert [name for name, _ in watch.keras_batch_norms(model)] == ["bn", "block/inner_bn"]
    assert watch.check(model) == []


def test_a_tape_loop_without_training_true_is_bn010_at_step_100(data, tmp_path):
    x, y = data
    model, optimizer = build(), keras.optimizers.Adam()
    watcher = watch.BatchNormWatch(every_n_steps=100, json_path=tmp_path / "faults.json")
    with pytest.warns(RuntimeWarning, match="BN010"):
        for step in range(1, 101):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x[:16]) - y[:16]) ** 2)  # the fault: no training=True
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            found = watcher.step(model, step)
            assert step == 100 or not found
    assert codes(watcher.findings) == [("BN010", "block/inner_bn"), ("BN010", "bn")]
    assert "training steps run = 100" in watcher.findings[0].message
    assert {f["code"] for f in json.loads((tmp_path / "faults.json").read_text())} == {"BN010"}


def test_a_momentum_that_cannot_converge_in_the_plan_is_bn009(data):
    x, y = data
    model = build(momentum=0.9999)
    model.compile("adam", "mse")
    watcher = watch.BatchNormWatch(every_n_steps=100, total_steps=2000)
    with pytest.warns(RuntimeWarning, match="BN009"):
        model.fit(x[:1600], y[:1600], batch_size=16, epochs=1, verbose=0, callbacks=[watcher])
    (finding,) = watcher.findings
    assert finding.code == "BN009" and finding.layer == "bn" and finding.details["steps"] == 2000


class _Corrupt(keras.callbacks.Callback):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def on_train_batch_end(self, batch, logs=None):
        if batch == 39:  # just before a check (the watch runs after this callback)
            layer = self.model.get_layer("bn")
            variance = layer.moving_variance.numpy()
            variance[2] = self.value
            layer.moving_variance.assign(variance)


@pytest.mark.parametrize("value, code", [(np.nan, "BN012"), (-0.5, "BN005")])
def test_stop_really_stops_fit_on_an_injected_fault(data, value, code):
    x, y = data
    model = build()
    model.compile("adam", "mse")
    watcher = watch.BatchNormWatch(every_n_steps=40, on_fault="stop")
    with pytest.warns(RuntimeWarning, match=code):
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[_Corrupt(value), watcher])
    assert codes(watcher.findings) == [(code, "bn")]
    assert len(history.history["loss"]) == 1  # stopped in the first of three epochs


def test_raise_and_bad_arguments(data):
    x, y = data
    model = build()
    model.compile("adam", "mse")
    with pytest.raises(watch.BatchNormFault, match="BN012"):
        model.fit(x[:800], y[:800], batch_size=16, epochs=1, verbose=0,
                  callbacks=[_Corrupt(np.inf), watch.BatchNormWatch(every_n_steps=40, on_fault="raise")])
    with pytest.raises(ValueError, match="on_fault"):
        watch.BatchNormWatch(on_fault="ignore")


HOOK = textwrap.dedent("""
    import json, os, sys, warnings
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    from bnaudit import watch
    tf.compat.v1.disable_eager_execution()
    warnings.simplefilter("ignore")
    out = {}
    for updates in (False, True):
        with tf.Graph().as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 4])
            h = tf.compat.v1.layers.batch_normalization(tf.compat.v1.layers.dense(x, 4), training=True,
                                                        momentum=0.9, name="bn")
            step = tf.compat.v1.train.get_or_create_global_step()
            optimizer = tf.compat.v1.train.AdamOptimizer(0.01)
            if updates:
                with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
                    train = optimizer.minimize(tf.reduce_mean(h ** 2), global_step=step)
            else:
                train = optimizer.minimize(tf.reduce_mean(h ** 2), global_step=step)
            hook = watch.BatchNormHook(every_n_steps=100)
            with tf.compat.v1.train.MonitoredTrainingSession(hooks=[hook]) as sess:
                for _ in range(100):
                    sess.run(train, {x: np.random.rand(16, 4) * 3})
            out[str(updates)] = [f.to_graph_json() for f in hook.findings]
    print(json.dumps(out))
""")


def test_the_tf1_hook_says_bn001_with_the_train_op():
    proc = subprocess.run([sys.executable, "-c", HOOK], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (finding,) = result["False"]
    assert finding["code"] == "BN001" and finding["layer"] == "bn"
    assert "after 100 steps of 'Adam'" in finding["message"]
    assert result["True"] == []


def test_a_keras_applications_backbone_is_read_layer_by_layer():
    """A MobileNetV2 backbone inside a model: every one of its batch norms, under the backbone's name."""
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    names = [name for name, _ in watch.keras_batch_norms(model)]
    expected = [layer.name for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(names) == len(expected) > 30
    assert names == [f"{backbone.name}/{name}" for name in expected]
    found = watch.check(model, step=100)  # never trained: every layer still at its initializer
    assert {f.code for f in found} == {"BN010"} and len(found) == len(expected)


def test_the_probe_measures_the_train_inference_gap_and_leaves_the_statistics_alone(data):
    """Inputs with mean 2, std 3: a fit that trains the statistics closes the gap; a tape loop that
    never runs training mode leaves inference normalizing with mean 0, variance 1."""
    x, y = data
    probe = x[:64]
    trained = build()
    trained.compile("adam", "mse")
    good = watch.BatchNormWatch(every_n_steps=100, probe=probe)
    history = []
    trained.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[good, keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: history.append(logs.get("bn_gap")))])
    assert [step for step, _ in good.gaps] == [100, 200] and history[99] == good.gaps[0][1]

    stale, optimizer = build(), keras.optimizers.Adam()
    bad = watch.BatchNormWatch(every_n_steps=100, probe=probe)
    with pytest.warns(RuntimeWarning, match="BN010"):
        for step in range(1, 101):
            batch = slice((step - 1) * 16, step * 16)
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((stale(x[batch]) - y[batch]) ** 2)
            grads = tape.gradient(loss, stale.trainable_variables)
            optimizer.apply_gradients(zip(grads, stale.trainable_variables))
            bad.step(stale, step)
    assert bad.gaps[0][1] > 5 * good.gaps[-1][1] and bad.gaps[0][1] > 0.5, (bad.gaps, good.gaps)
    # The probe's training-mode call did not move the statistics: they are still at their initializer.
    layer = dict(watch.keras_batch_norms(stale))["bn"]
    assert np.all(layer.moving_mean.numpy() == 0.0) and np.all(layer.moving_variance.numpy() == 1.0)
