"""Properties 4-6 of the corrected layer: debiased averages, statistics that cannot go bad, fused everywhere."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import layers_helpers as ref  # noqa: E402
from bnaudit.layers import BatchNorm, batch_norm, core  # noqa: E402

v1 = tf.compat.v1


# ---------------------------------------------------------------- 4. debiased moving statistics

def test_statistics_are_right_after_ten_steps_at_momentum_0999():
    """BN009/BN010 at the root: contrib-style averages are still ~0.01 of the way there."""
    rng = np.random.default_rng(0)
    shape, steps, true_mean, true_var = (32, 4, 4, 8), 10, 5.0, 9.0
    batches = [rng.normal(true_mean, np.sqrt(true_var), shape).astype(np.float32) for _ in range(steps)]
    probe = rng.normal(true_mean, np.sqrt(true_var), (256, 4, 4, 8)).astype(np.float32)
    ideal = (probe - true_mean) / np.sqrt(true_var + 1e-3)

    ours = BatchNorm(momentum=0.999)
    keras_bn = keras.layers.BatchNormalization(momentum=0.999)  # the same EMA as contrib's batch_norm
    for b in batches:
        ours(b, training=True)
        keras_bn(b, training=True)

    n = steps * np.prod(shape[:-1])
    mean_se, var_se = np.sqrt(true_var / n), true_var * np.sqrt(2.0 / n)
    assert np.all(np.abs(ours.moving_mean.numpy() - true_mean) < 4 * mean_se)
    assert np.all(np.abs(ours.moving_variance.numpy() - true_var) < 4 * var_se)
    # Inference output within sampling error of the ideal: |dm|/s + |x - m| |dv| / (2 s v).
    err = np.abs(ours(probe, training=False).numpy() - ideal)
    bound = 4 * mean_se / np.sqrt(true_var) + np.abs(ideal) * 4 * var_se / (2 * true_var)
    assert np.all(err <= bound + 1e-4)
    # The undebiased average is dominated by its initializer (mean 0, variance 1).
    assert np.all(keras_bn.moving_mean.numpy() < 0.1)
    assert np.abs(keras_bn(probe, training=False).numpy() - ideal).mean() > 1.0


def test_first_update_replaces_the_initializer_whatever_the_momentum():
    x = np.random.default_rng(1).normal(-7, 0.5, (50, 3)).astype(np.float32)
    for momentum in (0.0, 0.9, 0.9999, 1.0):
        layer = BatchNorm(momentum=momentum, moving_mean_initializer="ones")
        layer(x, training=True)
        np.testing.assert_allclose(layer.moving_mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-6)


# ---------------------------------------------------------------- 5. variance never negative, never NaN

def test_large_mean_tiny_spread_float32():
    """mean 1e4, std 1e-2: one-pass E[x^2] - E[x]^2 is garbage in float32; two-pass is not."""
    rng = np.random.default_rng(2)
    eps = 1e-5
    x = (1e4 + 1e-2 * rng.normal(size=(64, 4, 4, 4))).astype(np.float32)
    mean, var = ref.moments(x)
    naive = (tf.reduce_mean(x ** 2, [0, 1, 2]) - tf.reduce_mean(x, [0, 1, 2]) ** 2).numpy()
    assert np.all(np.abs(naive - var) > 100 * var)  # the input is really adversarial

    layer = BatchNorm(epsilon=eps)
    for _ in range(2):  # shifted by a first sample, then by the moving mean
        y = layer(x, training=True).numpy()
        np.testing.assert_allclose(y, ref.forward_train(x, 1, 0, eps), atol=1e-4, rtol=0)
    n = x.size // 4
    moving_var = layer.moving_variance.numpy()
    assert np.all(moving_var > 0)
    np.testing.assert_allclose(moving_var, var * n / (n - 1), rtol=1e-3)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=0, atol=ref.ulp(1e4))
    # At inference the stored float32 mean is the limit: one ulp of 1e4, in normalized units.
    y = layer(x, training=False).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref.forward_train(x, 1, 0, eps), atol=ref.ulp(1e4) / np.sqrt(var.min() + eps))


@pytest.mark.parametrize("dtype,loc,scale,atol", [("float16", 300.0, 20.0, 2e-2), ("bfloat16", 100.0, 10.0, 8e-2)])
def test_half_precision_inputs_keep_statistics_in_float32(dtype, loc, scale, atol):
    rng = np.random.default_rng(3)
    x = tf.cast(rng.normal(loc, scale, (128, 6, 6, 4)).astype(np.float32), dtype)
    x64 = tf.cast(x, tf.float64).numpy()
    if dtype == "float16":  # squares overflow float16: a half-precision one-pass variance is inf
        assert not np.all(np.isfinite(tf.reduce_mean(x * x, [0, 1, 2]).numpy()))
    layer = BatchNorm(dtype=dtype)
    y = layer(x, training=True)
    assert y.dtype == x.dtype and layer.moving_variance.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), ref.forward_train(x64, 1, 0, 1e-3), atol=atol)
    mean, var = ref.moments(x64)
    n = x64.size // 4
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var * n / (n - 1), rtol=1e-3)
    y = layer(x, training=False)
    assert np.all(np.isfinite(tf.cast(y, tf.float32).numpy()))
    # The functional front end takes the same inputs in a graph.
    with tf.Graph().as_default():
        xp = v1.placeholder(dtype, [None, 6, 6, 4])
        out = batch_norm(xp, True, name="bn")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            got = sess.run(tf.cast(out, tf.float64), {xp: x.numpy()})
    assert out.dtype == dtype
    np.testing.assert_allclose(got, ref.forward_train(x64, 1, 0, 1e-3), atol=atol)


def test_constant_channels():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 5, 3)).astype(np.float32)
    x[..., 0] = 7.0
    x[..., 1] = np.float32(1e4 + 0.3)
    layer = BatchNorm(beta_initializer=keras.initializers.Constant(0.25))
    for _ in range(2):
        y = layer(x, training=True).numpy()
        assert np.all(np.isfinite(y))
        np.testing.assert_array_equal(y[..., :2], 0.25)  # exactly beta, even at 1e4
    var = layer.moving_variance.numpy()
    assert np.all(var >= 0) and np.all(var[:2] == 0)
    y = layer(x, training=False).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[..., :2], 0.25, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 4), (1, 1, 1, 4), (1, 3, 1)])
def test_one_element_per_channel(shape):
    x = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape) * 3
    layer = BatchNorm(axis=-1 if len(shape) != 3 else 1, beta_initializer=keras.initializers.Constant(0.5))
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, 0.5)  # (x - x) / sqrt(0 + eps) + beta
    np.testing.assert_array_equal(layer.moving_variance.numpy(), 0.0)  # no n / (n - 1) with n = 1
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.reshape(-1))
    assert np.all(np.isfinite(layer(x, training=False).numpy()))


def test_one_element_per_channel_with_a_dynamic_batch_in_a_graph():
    with tf.Graph().as_default():
        xp = v1.placeholder(tf.float32, [None, 3])
        y = batch_norm(xp, True, name="bn")
        mv = [v for v in v1.global_variables() if "moving_variance" in v.name][0]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            out = sess.run(y, {xp: [[1.0, 2.0, 3.0]]})
            assert np.all(np.isfinite(out))
            np.testing.assert_array_equal(sess.run(mv), 0.0)
            sess.run(y, {xp: [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]})
            np.testing.assert_allclose(sess.run(mv), 1.0)  # (0 + 2) / 2: sample variance 2 averaged in


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_batch_does_not_enter_the_averages(bad):
    rng = np.random.default_rng(5)
    good = [rng.normal(2, 1, (8, 3)).astype(np.float32) for _ in range(2)]
    poisoned = good[0].copy()
    poisoned[3, 1] = bad
    layer = BatchNorm(momentum=0.5)
    layer(good[0], training=True)
    before = [w.numpy().copy() for w in (layer.moving_mean, layer.moving_variance, layer.num_updates)]
    layer(poisoned, training=True)
    after = [w.numpy() for w in (layer.moving_mean, layer.moving_variance, layer.num_updates)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    layer(good[1], training=True)
    mean, var, count = ref.moving_stats(good, 0.5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5)
    assert layer.num_updates.numpy() == count


@pytest.mark.parametrize("shape,axis", [((0, 3), -1), ((0, 3, 4), 1), ((0, 2, 2, 3), -1)])
def test_empty_batch_does_not_enter_the_averages(shape, axis):
    layer = BatchNorm(axis=axis)
    layer.build((None,) + shape[1:])
    y = layer(np.zeros(shape, np.float32), training=True)
    assert y.shape == shape
    assert layer.num_updates.numpy() == 0
    np.testing.assert_array_equal(layer.moving_variance.numpy(), 1.0)
    step = tf.function(lambda x: layer(x, training=True))
    assert step(np.zeros(shape, np.float32)).shape == shape
    assert layer.num_updates.numpy() == 0


def test_a_negative_stored_variance_reads_as_zero():
    """A checkpoint from a layer that let variance go negative (BN005) does not give NaN here."""
    layer = BatchNorm()
    layer.build((None, 3))
    layer.moving_variance.assign([-0.5, 1.0, -1e-3])
    y = layer(np.ones((4, 3), np.float32), training=False).numpy()
    assert np.all(np.isfinite(y))
    layer(np.random.default_rng(6).normal(size=(8, 3)).astype(np.float32), training=True)
    assert np.all(layer.moving_variance.numpy() >= 0)


def test_bad_hyperparameters_are_rejected():
    for kwargs in ({"momentum": -0.1}, {"momentum": 1.01}, {"epsilon": 0.0}, {"epsilon": -1e-3},
                   {"epsilon": float("nan")}):
        with pytest.raises(ValueError):
            BatchNorm(**kwargs)


# ---------------------------------------------------------------- 6. fused everywhere

RANK_AXIS = [((8, 5, 5, 3), -1), ((8, 3, 5, 5), 1), ((32, 6), -1), ((6, 4, 7), 1), ((6, 4, 7), -1),
             ((4, 3, 2, 2, 5), -1), ((4, 3, 2, 2, 5), 2), ((4, 3, 2, 2, 5), 1), ((5, 6), 0), ((6, 4, 3, 2), 2)]
MOMENT_OPS = {"Mean", "Sum", "SquaredDifference", "Square", "Variance", "BatchNormWithGlobalNormalization", "Transpose"}


def _all_ops(graph):
    """(type, input shapes) of every operation, cond branches included (cond_v2 keeps their graphs)."""
    ops = []
    for op in graph.get_operations():
        ops.append((op.type, [t.shape for t in op.inputs]))
        for branch in ("_true_graph", "_false_graph"):
            if getattr(op, branch, None) is not None:
                ops.extend(_all_ops(getattr(op, branch)))
    return ops


def _assert_fused(ops, size):
    types = {t for t, _ in ops}
    assert "FusedBatchNormV3" in types
    # No unfused moment computation over the input (a per-channel sliver is fine).
    for op_type, shapes in ops:
        if op_type in MOMENT_OPS:
            assert all(s.num_elements() is not None and s.num_elements() < max(size // 2, 2) for s in shapes), op_type


@pytest.mark.parametrize("shape,axis", RANK_AXIS)
def test_every_rank_and_axis_runs_on_the_fused_kernel(shape, axis):
    layer = BatchNorm(axis=axis)
    layer.build(shape)
    size = int(np.prod(shape))
    for training in (True, False):
        fn = tf.function(lambda x, t=training: layer(x, training=t))
        _assert_fused(_all_ops(fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph), size)
    # And with a tensor flag: one cond, fused in both branches.
    fn = tf.function(lambda x, t: layer(x, training=t))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32), tf.TensorSpec([], tf.bool)).graph
    _assert_fused(_all_ops(graph), size)


@pytest.mark.parametrize("shape,axis", RANK_AXIS)
def test_reshaped_inputs_give_the_4d_results(shape, axis):
    """Any rank/axis equals the same data laid out as a 4-D NHWC tensor with the channels last."""
    rng = np.random.default_rng(7)
    x = rng.normal(1, 2, shape).astype(np.float32)
    nhwc = np.moveaxis(x, axis, -1).reshape(-1, 1, 1, shape[axis])
    got_layer, nhwc_layer = BatchNorm(axis=axis, momentum=0.5), BatchNorm(axis=-1, momentum=0.5)
    for _ in range(2):
        got = got_layer(x, training=True).numpy()
        want = nhwc_layer(nhwc, training=True).numpy()
        np.testing.assert_allclose(np.moveaxis(got, axis, -1).reshape(nhwc.shape), want, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got_layer.moving_mean.numpy(), nhwc_layer.moving_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_layer.moving_variance.numpy(), nhwc_layer.moving_variance.numpy(), rtol=1e-5)
    got = got_layer(x, training=False).numpy()
    want = nhwc_layer(nhwc, training=False).numpy()
    np.testing.assert_allclose(np.moveaxis(got, axis, -1).reshape(nhwc.shape), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", [(32, 6), (4, 3, 5), (4, 3, 2, 2, 5)])
def test_channels_last_views_are_the_same_in_nhwc_and_nchw(shape):
    """The NCHW view a GPU gets ([rest, C, 1, 1]) gives the CPU's NHWC results."""
    x = tf.constant(np.random.default_rng(8).normal(3, 2, shape).astype(np.float32))
    gamma, beta = tf.fill([shape[-1]], 1.5), tf.fill([shape[-1]], 0.25)
    results = []
    for nchw in (False, True):
        layout = core.Layout.of(len(shape), -1, prefer_nchw=nchw)
        assert layout.data_format == ("NCHW" if nchw else "NHWC")
        y, mean, var = core.normalize_training(x, gamma, beta, 1e-3, layout)
        inference = core.normalize_inference(x, gamma, beta, mean, var, 1e-3, layout)
        results.append([t.numpy() for t in (y, mean, var, inference)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results[0][0], ref.forward_train(x.numpy(), 1.5, 0.25, 1e-3, -1), atol=1e-5)


def test_functional_graph_is_fused_for_a_dense_input():
    with tf.Graph().as_default() as graph:
        xp = v1.placeholder(tf.float32, [64, 7])
        batch_norm(xp, True, name="train")
        batch_norm(xp, False, name="infer")
        _assert_fused(_all_ops(graph), 64 * 7)
