"""bnaudit.layers against a float64 NumPy reference: outputs, gradients, moving statistics.

Both front ends share one core; outputs and gradients are checked through the
Keras 3 layer (eager) and, for a subset, through the TF1 functional layer in a
graph, for several ranks, axes and dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import layers_helpers as ref  # noqa: E402
from bnaudit.layers import BatchNorm, batch_norm  # noqa: E402

EPS = 1e-3
# (shape, axis): 4-D NHWC and NCHW, 2-D, 3-D, 5-D and unusual axes.
CASES = [
    ((8, 4, 4, 3), -1),
    ((8, 3, 4, 4), 1),
    ((16, 5), -1),
    ((6, 4, 7), 1),
    ((6, 4, 7), -1),
    ((4, 3, 2, 2, 5), -1),
    ((4, 3, 2, 2, 5), 2),
    ((5, 6), 0),
]
# dtype -> absolute tolerance on outputs of order 1 (a few ulps of the input dtype).
DTYPES = {"float32": 2e-5, "float16": 1e-2, "bfloat16": 6e-2}


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    loc = _expand(rng.normal(3.0, 2.0, channels), shape, axis)
    scale = _expand(rng.uniform(0.5, 3.0, channels), shape, axis)
    return (loc + scale * rng.normal(size=shape)).astype(np.float32)


def _expand(v, shape, axis):
    s = [1] * len(shape)
    s[axis % len(shape)] = -1
    return np.asarray(v).reshape(s)


def _params(channels, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, channels).astype(np.float32), rng.normal(0, 1, channels).astype(np.float32)


def _keras_layer(shape, axis, gamma, beta, momentum=0.9, **kwargs):
    layer = BatchNorm(axis=axis, momentum=momentum, epsilon=EPS, **kwargs)
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return layer


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape,axis", CASES)
def test_outputs_in_both_modes_match_reference(shape, axis, dtype):
    x32 = _data(shape, axis)
    x = tf.cast(tf.constant(x32), dtype)
    x64 = tf.cast(x, tf.float64).numpy()  # the values the layer actually sees
    gamma, beta = _params(shape[axis])
    # The dtype policy makes float16/bfloat16 the compute dtype (Keras would cast to float32 otherwise).
    layer = _keras_layer(shape, axis, gamma, beta, dtype=dtype)

    y = layer(x, training=True)
    assert y.dtype == x.dtype and y.shape == x.shape
    want = ref.forward_train(x64, gamma, beta, EPS, axis)
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), want, atol=DTYPES[dtype] * 4, rtol=0)

    # After one update the moving statistics are the batch's (factor 1 at the first step).
    mean, var = ref.moments(x64, axis)
    n = x64.size // shape[axis]
    var_unbiased = var * n / (n - 1)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var_unbiased, rtol=1e-4, atol=1e-5)
    assert layer.moving_mean.dtype == "float32"

    y = layer(x, training=False)
    want = ref.forward_infer(x64, gamma, beta, layer.moving_mean.numpy(), layer.moving_variance.numpy(), EPS, axis)
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), want, atol=DTYPES[dtype] * 4, rtol=0)


@pytest.mark.parametrize("shape,axis", CASES)
def test_functional_layer_in_a_graph_matches_reference(shape, axis):
    x = _data(shape, axis)
    gamma, beta = _params(shape[axis])
    with tf.Graph().as_default():
        xp = tf.compat.v1.placeholder(tf.float32, shape)
        flag = tf.compat.v1.placeholder(tf.bool, [])
        y = batch_norm(xp, flag, axis=axis, epsilon=EPS, name="bn",
                       gamma_initializer=tf.compat.v1.constant_initializer(gamma),
                       beta_initializer=tf.compat.v1.constant_initializer(beta))
        with tf.compat.v1.variable_scope("bn", reuse=True):
            mm, mv = tf.compat.v1.get_variable("moving_mean"), tf.compat.v1.get_variable("moving_variance")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            out = sess.run(y, {xp: x, flag: True})
            np.testing.assert_allclose(out, ref.forward_train(x, gamma, beta, EPS, axis), atol=1e-4, rtol=0)
            mean, var = sess.run([mm, mv])
            out = sess.run(y, {xp: x, flag: False})
            np.testing.assert_allclose(out, ref.forward_infer(x, gamma, beta, mean, var, EPS, axis), atol=1e-4)


def test_reference_gradients_agree_with_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.normal(2, 3, (5, 2, 3))
    gamma, beta, dy = rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=x.shape)
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    for axis in (-1,):
        def loss_train(x_, g_=gamma, b_=beta):
            return float((ref.forward_train(x_, g_, b_, EPS, axis) * dy).sum())

        def loss_infer(x_, g_=gamma, b_=beta):
            return float((ref.forward_infer(x_, g_, b_, mean, var, EPS, axis) * dy).sum())

        dx, dgamma, dbeta = ref.grads_train(x, gamma, dy, EPS, axis)
        np.testing.assert_allclose(dx, ref.numeric_grad(loss_train, x), atol=1e-6)
        np.testing.assert_allclose(dgamma, ref.numeric_grad(lambda g: loss_train(x, g_=g), gamma), atol=1e-6)
        np.testing.assert_allclose(dbeta, ref.numeric_grad(lambda b: loss_train(x, b_=b), beta), atol=1e-6)
        dx, dgamma, dbeta = ref.grads_infer(x, gamma, mean, var, dy, EPS, axis)
        np.testing.assert_allclose(dx, ref.numeric_grad(loss_infer, x), atol=1e-6)
        np.testing.assert_allclose(dgamma, ref.numeric_grad(lambda g: loss_infer(x, g_=g), gamma), atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", [CASES[0], CASES[1], CASES[2], CASES[3], CASES[6]])
def test_gradients_match_reference(shape, axis, training):
    x = _data(shape, axis)
    gamma, beta = _params(shape[axis])
    dy = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    layer = _keras_layer(shape, axis, gamma, beta)
    layer(tf.constant(x), training=True)  # give the moving statistics a value
    mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
    dx, dgamma, dbeta = tape.gradient(y, [xt, layer.gamma, layer.beta], output_gradients=tf.constant(dy))
    if training:
        want = ref.grads_train(x, gamma, dy, EPS, axis)
    else:
        want = ref.grads_infer(x, gamma, mean, var, dy, EPS, axis)
    scale = np.abs(want[0]).max()
    np.testing.assert_allclose(dx.numpy(), want[0], atol=1e-5 * scale + 1e-6)
    np.testing.assert_allclose(dgamma.numpy(), want[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta.numpy(), want[2], rtol=1e-4, atol=1e-4)


def test_gradients_through_a_tensor_flag_in_a_graph():
    shape, axis = (6, 4, 7), 1
    x = _data(shape, axis)
    dy = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    with tf.Graph().as_default():
        xp = tf.compat.v1.placeholder(tf.float32, shape)
        flag = tf.compat.v1.placeholder(tf.bool, [])
        y = batch_norm(xp, flag, axis=axis, epsilon=EPS, name="bn")
        with tf.compat.v1.variable_scope("bn", reuse=True):
            gamma, beta = tf.compat.v1.get_variable("gamma"), tf.compat.v1.get_variable("beta")
        grads = tf.compat.v1.gradients(y, [xp, gamma, beta], grad_ys=dy)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            got = sess.run(grads, {xp: x, flag: True})
    ones = np.ones(shape[axis])
    for g, w in zip(got, ref.grads_train(x, ones, dy, EPS, axis)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_gradients_agree_with_tf_numeric_gradient():
    shape, axis = (4, 3, 5), -1
    x = _data(shape, axis)
    layer = BatchNorm(axis=axis, epsilon=EPS)
    layer.build(shape)
    weights = tf.constant(np.linspace(-1, 2, np.prod(shape)).reshape(shape), tf.float32)
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: layer(t, training=True) * weights, [tf.constant(x)], delta=1e-2)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-2)


@pytest.mark.parametrize("momentum,steps", [(0.9, 15), (0.5, 6), (0.0, 3), (1.0, 5)])
def test_moving_statistics_after_k_steps(momentum, steps):
    shape, axis = (10, 3, 3, 4), -1
    batches = [_data(shape, axis, seed=s) * (1 + s / 4) for s in range(steps)]
    layer = BatchNorm(axis=axis, momentum=momentum, epsilon=EPS)
    train = tf.function(lambda x: layer(x, training=True))
    for b in batches:
        train(tf.constant(b))
    mean, var, count = ref.moving_stats(batches, momentum, axis)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-5)
    assert layer.num_updates.numpy() == count


def test_functional_moving_statistics_after_k_steps():
    shape, axis, momentum = (7, 5), -1, 0.8
    batches = [_data(shape, axis, seed=s) for s in range(9)]
    with tf.Graph().as_default():
        xp = tf.compat.v1.placeholder(tf.float32, shape)
        y = batch_norm(xp, True, momentum=momentum, name="bn")
        mm, mv, count = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "bn/mov") + \
            tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "bn/num_updates")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for b in batches:
                sess.run(y, {xp: b})
            got = sess.run([mm, mv, count])
    want = ref.moving_stats(batches, momentum, axis)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert got[2] == want[2]


@pytest.mark.parametrize("shape,axis", [((64, 6, 6, 8), -1), ((64, 8, 6, 6), 1), ((64, 10), -1), ((64, 3, 4, 5, 2), 2)])
def test_one_sample_at_inference_equals_its_output_in_a_batch_of_64(shape, axis):
    x = _data(shape, axis)
    layer = BatchNorm(axis=axis)
    layer(tf.constant(x), training=True)
    batch = layer(tf.constant(x), training=False).numpy()
    for i in (0, 17, 63):
        alone = layer(tf.constant(x[i:i + 1]), training=False).numpy()
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-6)
