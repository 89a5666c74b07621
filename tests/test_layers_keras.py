"""The Keras 3 front end: a drop-in for keras.layers.BatchNormalization that saves and restores."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import layers_helpers as ref  # noqa: E402
from bnaudit import catalogue  # noqa: E402
from bnaudit.layers import REGISTERED_NAME, BatchNorm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 6)) * 3 + 5).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(**bn_kwargs):
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8),
        BatchNorm(name="bn", **bn_kwargs),
        keras.layers.Activation("relu"),
        keras.layers.Dense(2),
    ])


def test_constructor_matches_the_api_catalogue_and_keras():
    api = catalogue.lookup("bnaudit.layers.BatchNorm")
    params = list(inspect.signature(BatchNorm.__init__).parameters)[1:]
    assert tuple(params[:len(api.params)]) == api.params
    keras_params = list(inspect.signature(keras.layers.BatchNormalization.__init__).parameters)[1:]
    assert params[:13] == keras_params[:13]  # axis ... gamma_constraint, same order as Keras
    sig = inspect.signature(BatchNorm.__init__).parameters
    assert sig["momentum"].default == api.decay_default and sig["epsilon"].default == api.epsilon_default
    assert list(inspect.signature(BatchNorm.call).parameters)[1:3] == list(api.call_params)


def test_registered_name_and_config_round_trip():
    assert REGISTERED_NAME == "bnaudit>BatchNorm"
    assert keras.saving.get_registered_name(BatchNorm) == REGISTERED_NAME
    layer = BatchNorm(axis=1, momentum=0.9, epsilon=1e-4, center=False,
                      gamma_initializer="he_normal", gamma_regularizer="l2", name="my_bn")
    config = layer.get_config()
    clone = BatchNorm.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == REGISTERED_NAME
    again = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(again, BatchNorm) and again.axis == 1 and again.momentum == 0.9 and not again.center


def test_weights_are_float32_and_named_like_keras():
    layer = BatchNorm(dtype="mixed_float16")
    y = layer(np.ones((4, 3), np.float16), training=True)
    assert y.dtype == "float16"
    assert [w.name for w in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance", "num_updates"]
    assert all(w.dtype == "float32" for w in layer.weights)
    assert [w.name for w in layer.trainable_weights] == ["gamma", "beta"]


def test_fit_updates_the_statistics_and_predict_uses_them():
    keras.utils.set_random_seed(0)  # the weights, whatever the tests before this one drew
    x, y = _data(256)
    model = _model(momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    bn = model.get_layer("bn")
    assert bn.num_updates.numpy() == 2 * 256 // 32
    hidden = keras.Model(model.inputs[0], model.get_layer("bn").input).predict(x, verbose=0)
    assert np.all(np.abs(bn.moving_mean.numpy()) > 0) and not np.allclose(bn.moving_variance.numpy(), 1.0)
    # predict() runs in inference mode: one sample gives what it gives in the batch.
    full = model.predict(x, verbose=0)
    np.testing.assert_allclose(model.predict(x[:1], verbose=0)[0], full[0], atol=1e-5)
    # and the statistics are those of the last window of hidden activations, roughly.
    assert np.all(np.abs(bn.moving_mean.numpy() - hidden.mean(0)) < 0.5 * hidden.std(0) + 1e-3)


def test_frozen_layer_runs_in_inference_mode_like_keras():
    x, _ = _data(32)
    layer = BatchNorm()
    layer(x, training=True)
    stats = [layer.moving_mean.numpy().copy(), layer.num_updates.numpy()]
    layer.trainable = False
    np.testing.assert_array_equal(layer(x, training=True).numpy(), layer(x, training=False).numpy())
    np.testing.assert_array_equal(layer.moving_mean.numpy(), stats[0])
    assert layer.num_updates.numpy() == stats[1]
    assert layer(x).shape == x.shape  # training=None means inference outside fit


def test_tensor_flag_in_a_tf_function_updates_only_when_true():
    x, _ = _data(32)
    layer = BatchNorm(momentum=0.5)
    step = tf.function(lambda inputs, flag: layer(inputs, training=flag))
    for _ in range(3):
        out = step(x, tf.constant(False))
    assert layer.num_updates.numpy() == 0
    np.testing.assert_allclose(out.numpy(), x / np.sqrt(1 + 1e-3), rtol=1e-5)
    for _ in range(3):
        out = step(x, tf.constant(True))
    assert layer.num_updates.numpy() == 3
    np.testing.assert_allclose(out.numpy(), ref.forward_train(x, 1, 0, 1e-3), atol=1e-4)
    with pytest.raises(TypeError):
        layer(x, training=tf.constant(1.0))


def test_keras_file_round_trip(tmp_path):
    x, y = _data(128)
    model = _model(momentum=0.9, axis=-1)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    assert layers["bn"]["registered_name"] == REGISTERED_NAME
    assert layers["bn"]["config"]["momentum"] == 0.9
    restored = keras.saving.load_model(path)
    bn, bn2 = model.get_layer("bn"), restored.get_layer("bn")
    assert isinstance(bn2, BatchNorm)
    for a, b in zip(bn.weights, bn2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert bn2.num_updates.numpy() == 4
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))

    # A fresh process that imports bnaudit.layers loads it too.
    script = (
        "import sys, numpy as np, keras, bnaudit.layers\n"
        f"m = keras.saving.load_model({path!r})\n"
        "print(type(m.get_layer('bn')).__module__, float(m.get_layer('bn').num_updates.numpy()))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["bnaudit.layers.keras_layer", "4.0"]


def test_masks_are_refused_not_silently_ignored():
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(np.array([[1, 2, 0, 0]]))
    with pytest.raises(ValueError, match="mask"):
        BatchNorm()(embedded, training=True)


def test_compiles_with_xla():
    """Keras 3 may jit-compile the train step (jit_compile="auto" on a GPU): the layer must compile."""
    x, _ = _data(32)
    layer = BatchNorm(momentum=0.5)
    layer.build(x.shape)
    step = tf.function(lambda inputs: layer(inputs, training=True), jit_compile=True)
    for _ in range(3):
        out = step(x)
    assert layer.num_updates.numpy() == 3
    np.testing.assert_allclose(out.numpy(), ref.forward_train(x, 1, 0, 1e-3), atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), ref.moving_stats([x] * 3, 0.5)[0], rtol=1e-5)


def test_a_trained_keras_batch_normalization_loads_into_it():
    """Four Keras weights in, num_updates set to the full window: the same inference output, and the
    next training batch moves the averages by 1 - momentum instead of replacing them."""
    inputs = keras.Input((6,))
    trained = keras.layers.BatchNormalization(momentum=0.9)
    model = keras.Model(inputs, trained(inputs))
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(2, 3, (256, 6)), rng.normal(size=(256, 6)), batch_size=32, epochs=1, verbose=0)
    x = rng.normal(2, 3, (16, 6)).astype("float32")
    for ours in (BatchNorm.from_keras(trained), _built(BatchNorm(momentum=0.9), (None, 6))):
        if not ours.moving_mean.numpy().any():
            ours.set_weights(trained.get_weights())
        np.testing.assert_allclose(ours(x, training=False), trained(x, training=False), rtol=1e-5, atol=1e-5)
        assert ours.num_updates.numpy() == 10.0  # 1 / (1 - 0.9)
        before = ours.moving_mean.numpy().copy()
        ours(x, training=True)
        batch_mean = x.mean(axis=0)
        np.testing.assert_allclose(ours.moving_mean.numpy(), 0.9 * before + 0.1 * batch_mean, rtol=1e-4, atol=1e-5)


def _built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize("argument, value", [("synchronized", True), ("renorm", True), ("virtual_batch_size", 8)])
def test_what_it_cannot_do_is_refused_by_name(argument, value):
    with pytest.raises(ValueError, match=f"does not support {argument}={value!r}.*keras.layers.BatchNormalization"):
        BatchNorm(**{argument: value})
    off = {"synchronized": False, "renorm": False, "virtual_batch_size": None}[argument]
    assert BatchNorm(**{argument: off}, fused=True).momentum == 0.99  # a Keras config's defaults load


def test_a_tf_keras_model_gets_a_clear_error_naming_the_functional_layer():
    """BatchNorm is a Keras 3 layer: on a tf_keras tensor (TF_USE_LEGACY_KERAS=1) it says what to use."""
    script = (
        "import tensorflow as tf\n"
        "from bnaudit.layers import BatchNorm\n"
        "x = tf.keras.Input((3,))\n"
        "try:\n"
        "    BatchNorm()(tf.keras.layers.Dense(4)(x))\n"
        "except TypeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", TF_USE_LEGACY_KERAS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: bnaudit.layers.BatchNorm is a Keras 3 layer" in out.stdout
    assert "use bnaudit.layers.batch_norm in tf_keras models" in out.stdout
