"""The TF1 functional front end in graph mode: in-place updates, the training flag, sharing, saving.

Properties 1-3 of the issue (BN001-BN003, BN006-BN008 cannot happen), checked
by running real graphs in sessions.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import layers_helpers as ref  # noqa: E402
from bnaudit import catalogue  # noqa: E402
from bnaudit.layers import batch_norm  # noqa: E402

v1 = tf.compat.v1
GLOBAL, TRAINABLE, MODEL = v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.TRAINABLE_VARIABLES, v1.GraphKeys.MODEL_VARIABLES


def _batches(k, shape=(16, 4), seed=0):
    rng = np.random.default_rng(seed)
    return [(5 + 3 * rng.normal(size=shape)).astype(np.float32) for _ in range(k)]


def _vars(scope):
    return {v.name.split("/")[-1].split(":")[0]: v for v in v1.get_collection(GLOBAL, scope + "/")}


def _executed_ops(sess, fetch, feed):
    """Op types of every node that ran for one ``sess.run``."""
    meta = v1.RunMetadata()
    sess.run(fetch, feed, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE), run_metadata=meta)
    ops = []
    for dev in meta.step_stats.dev_stats:
        for node in dev.node_stats:
            if " = " in node.timeline_label:
                ops.append(node.timeline_label.split(" = ", 1)[1].split("(", 1)[0])
    return ops


def _fused_kernels(ops):
    """How many fused batch-norm kernels ran, whichever implementation TensorFlow picked: with oneDNN
    (the default on AVX-512 CPUs) the graph's FusedBatchNormV3 runs as _MklNativeFusedBatchNormV3."""
    return sum(op.endswith("FusedBatchNormV3") for op in ops)


def test_plain_minimize_updates_the_moving_statistics():
    batches = _batches(6)
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4])
        w = v1.get_variable("w", [4, 4], initializer=v1.initializers.identity())
        y = batch_norm(tf.matmul(x, w), True, momentum=0.9, name="bn")
        train_op = v1.train.GradientDescentOptimizer(0.0).minimize(tf.reduce_sum(y ** 2))
        assert v1.get_collection(v1.GraphKeys.UPDATE_OPS) == []
        variables = _vars("bn")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for b in batches:
                sess.run(train_op, {x: b})  # no UPDATE_OPS, no control_dependencies
            mean, var, count = sess.run([variables["moving_mean"], variables["moving_variance"],
                                         variables["num_updates"]])
    want = ref.moving_stats(batches, 0.9)
    np.testing.assert_allclose(mean, want[0], rtol=1e-5)
    np.testing.assert_allclose(var, want[1], rtol=1e-5)
    assert count == len(batches)


def test_running_update_ops_as_well_updates_once():
    batches = _batches(4)
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4])
        y = batch_norm(x, True, name="bn")
        loss = tf.reduce_sum(y)
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):  # the old ritual
            train_op = tf.group(loss, *v1.get_collection(v1.GraphKeys.UPDATE_OPS))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for b in batches:
                sess.run([train_op, y], {x: b})
            count, mean = sess.run([_vars("bn")["num_updates"], _vars("bn")["moving_mean"]])
    assert count == len(batches)
    np.testing.assert_allclose(mean, ref.moving_stats(batches, 0.99)[0], rtol=1e-5)


@pytest.mark.parametrize("flag_kind", ["placeholder", "placeholder_with_default", "variable"])
def test_tensor_flag_updates_only_when_true_and_computes_one_branch(flag_kind):
    batches = _batches(3)
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4])
        if flag_kind == "placeholder":
            flag = v1.placeholder(tf.bool, [])
            feeds = {True: {flag: True}, False: {flag: False}}
        elif flag_kind == "placeholder_with_default":
            flag = v1.placeholder_with_default(False, [])
            feeds = {True: {flag: True}, False: {}}
        else:
            flag = tf.Variable(False, trainable=False)
            set_true, set_false = flag.assign(True), flag.assign(False)
            feeds = {True: {}, False: {}}
        y = batch_norm(x, flag, name="bn")
        variables = _vars("bn")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())

            def run(mode, b):
                if flag_kind == "variable":
                    sess.run(set_true if mode else set_false)
                return sess.run(y, {x: b, **feeds[mode]})

            initial = sess.run(variables["moving_mean"])
            for b in batches:
                out = run(False, b)
            np.testing.assert_array_equal(sess.run(variables["moving_mean"]), initial)
            assert sess.run(variables["num_updates"]) == 0
            # Inference with the initial statistics (0, 1): the input is only rescaled.
            np.testing.assert_allclose(out, batches[-1] / np.sqrt(1 + 1e-3), rtol=1e-5)
            for b in batches:
                out = run(True, b)
            assert sess.run(variables["num_updates"]) == len(batches)
            np.testing.assert_allclose(out, ref.forward_train(batches[-1], 1, 0, 1e-3), atol=1e-4)

            if flag_kind != "variable":
                # A real conditional: one fused kernel runs, and no assignment at inference.
                ops_false = _executed_ops(sess, y, {x: batches[0], **feeds[False]})
                ops_true = _executed_ops(sess, y, {x: batches[0], **feeds[True]})
                assert _fused_kernels(ops_false) == 1 and _fused_kernels(ops_true) == 1
                assert not {"AssignVariableOp", "Assign"} & set(ops_false)
                assert "AssignVariableOp" in ops_true


def test_training_is_required_and_must_be_a_boolean():
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4])
        with pytest.raises(TypeError):
            batch_norm(x)  # no silent default (BN006)
        with pytest.raises(TypeError, match="required"):
            batch_norm(x, None)
        with pytest.raises(TypeError, match="boolean"):
            batch_norm(x, v1.placeholder(tf.float32, []))
        with pytest.raises(TypeError, match="scalar"):
            batch_norm(x, v1.placeholder(tf.bool, [2]))
        with pytest.raises(ValueError, match="momentum"):
            batch_norm(x, True, momentum=1.5)
        with pytest.raises(ValueError, match="epsilon"):
            batch_norm(x, True, epsilon=0.0)
        # A constant tensor is resolved when the graph is built: no cond at all.
        batch_norm(x, tf.constant(False), name="const")
        assert not [op for op in tf.compat.v1.get_default_graph().get_operations()
                    if op.type in ("If", "StatelessIf", "Switch")]


def test_signature_matches_the_api_catalogue_and_has_no_reuse():
    api = catalogue.lookup("bnaudit.layers.batch_norm")
    params = list(inspect.signature(batch_norm).parameters)
    assert tuple(params[:len(api.params)]) == api.params
    assert params.index(api.training) == 1
    assert "reuse" not in params and api.reuse is None
    sig = inspect.signature(batch_norm)
    assert sig.parameters["training"].default is inspect.Parameter.empty
    assert sig.parameters["momentum"].default == api.decay_default
    assert sig.parameters["epsilon"].default == api.epsilon_default
    assert api.updates == catalogue.INPLACE


def test_eager_and_tf2_functions_point_to_the_keras_layer():
    with pytest.raises(RuntimeError, match="BatchNorm"):
        batch_norm(tf.ones([2, 3]), True)
    with pytest.raises(RuntimeError, match="BatchNorm"):
        tf.function(lambda x: batch_norm(x, True))(tf.ones([2, 3]))


def test_variables_names_collections_and_sharing():
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 3])
        with v1.variable_scope("net"):
            batch_norm(x, True, name="bn1", gamma_regularizer=lambda g: tf.reduce_sum(g ** 2))
        names = sorted(v.name for v in v1.global_variables())
        assert names == ["net/bn1/beta:0", "net/bn1/gamma:0", "net/bn1/moving_mean:0",
                         "net/bn1/moving_variance:0", "net/bn1/num_updates:0"]
        assert sorted(v.name for v in v1.trainable_variables()) == ["net/bn1/beta:0", "net/bn1/gamma:0"]
        assert sorted(v.name for v in v1.get_collection(MODEL)) == names
        assert len(v1.get_collection(v1.GraphKeys.REGULARIZATION_LOSSES)) == 1
        # The same name in the same scope shares (an eval tower, no reuse argument)...
        with v1.variable_scope("net"):
            batch_norm(x, False, name="bn1")
        assert sorted(v.name for v in v1.global_variables()) == names
        assert len(v1.get_collection(MODEL)) == 5
        # ...even inside an outer scope opened with reuse=True.
        with v1.variable_scope("net", reuse=True):
            batch_norm(x, False, name="bn1")
        assert len(v1.global_variables()) == 5
        # Unnamed calls are separate layers, named like contrib's.
        batch_norm(x, True)
        batch_norm(x, True)
        scopes = sorted({v.name.split("/")[0] for v in v1.global_variables()})
        assert scopes == ["BatchNorm", "BatchNorm_1", "net"]
        # center/scale False create no beta/gamma.
        batch_norm(x, True, center=False, scale=False, name="plain")
        assert sorted(_vars("plain")) == ["moving_mean", "moving_variance", "num_updates"]


def test_train_and_eval_graphs_share_statistics():
    batches = _batches(5, shape=(32, 4))
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 4])

        def tower(training):
            with v1.variable_scope("model"):
                return batch_norm(x, training, momentum=0.5, name="bn")

        train_out, eval_out = tower(True), tower(False)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for b in batches:
                sess.run(train_out, {x: b})
            mean, var, _ = ref.moving_stats(batches, 0.5)
            got = sess.run(eval_out, {x: batches[0]})
    np.testing.assert_allclose(got, ref.forward_infer(batches[0], 1, 0, mean, var, 1e-3), atol=1e-5)


def test_saver_round_trip(tmp_path):
    batches = _batches(4, shape=(8, 2, 2, 3))
    probe = _batches(1, shape=(5, 2, 2, 3), seed=9)[0]
    path = str(tmp_path / "model.ckpt")
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 2, 2, 3])
        flag = v1.placeholder_with_default(False, [])
        y = batch_norm(x, flag, name="bn")
        loss = tf.reduce_sum(y * tf.range(3, dtype=tf.float32))
        train = v1.train.GradientDescentOptimizer(0.01).minimize(loss)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for b in batches:
                sess.run(train, {x: b, flag: True})
            before = sess.run(y, {x: probe})
            values = sess.run({k: v for k, v in _vars("bn").items()})
            v1.train.Saver().save(sess, path)
    stored = dict(tf.train.list_variables(path))
    assert set(stored) == {"bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance", "bn/num_updates"}
    assert values["num_updates"] == len(batches)
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, [None, 2, 2, 3])
        y = batch_norm(x, False, name="bn")
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, path)
            restored = sess.run({k: v for k, v in _vars("bn").items()})
            after = sess.run(y, {x: probe})
    for key, value in values.items():
        np.testing.assert_array_equal(restored[key], value)
    np.testing.assert_array_equal(after, before)
