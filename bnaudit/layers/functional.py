"""``batch_norm``: the TF1 graph-mode front end, a drop-in for contrib/slim/tf.layers batch norm.

It builds its variables with raw ``tf.compat.v1`` variable scopes (no tf_keras,
no ``TF_USE_LEGACY_KERAS``), and differs from the layers it replaces exactly
where those layers let users get it wrong:

* the moving averages are assigned as a control dependency of the output in
  training, so there is nothing in ``UPDATE_OPS`` to forget or to run twice [BN001];
* ``training`` has no default, and may be a Python bool or a scalar boolean
  tensor; with a tensor, one ``tf.cond`` runs either the batch-statistics branch
  (with the updates) or the moving-statistics branch, never both [BN006-BN008];
* the variable scope is opened with ``AUTO_REUSE``: calling it again under the
  same name shares the variables, and there is no ``reuse`` argument [BN002, BN003].
"""

from __future__ import annotations

import tensorflow as tf

from bnaudit.layers import core

_v1 = tf.compat.v1
_STATS_COLLECTIONS = (_v1.GraphKeys.GLOBAL_VARIABLES, _v1.GraphKeys.MODEL_VARIABLES)

#: Variable names under the layer's scope (checkpoints read like contrib's, plus the update count).
GAMMA, BETA, MOVING_MEAN, MOVING_VARIANCE, NUM_UPDATES = (
    "gamma", "beta", "moving_mean", "moving_variance", "num_updates")


def batch_norm(
    inputs,
    training,
    axis=-1,
    momentum=0.99,
    epsilon=0.001,
    center=True,
    scale=True,
    beta_initializer=None,
    gamma_initializer=None,
    moving_mean_initializer=None,
    moving_variance_initializer=None,
    beta_regularizer=None,
    gamma_regularizer=None,
    trainable=True,
    data_format=None,
    name=None,
):
    """Batch-normalize ``inputs`` over every axis but ``axis``, in a TF1 graph.

    Args:
      inputs: a float16, bfloat16 or float32 tensor of known rank and known
        size along ``axis`` (other dtypes are computed in float32).
      training: required.  ``True``/``False`` or a scalar boolean tensor
        (placeholder, variable).  In training the output depends on the
        in-place update of the moving averages.
      axis: the channel axis (``-1`` for NHWC and dense layers, ``1`` for NCHW).
      momentum: weight of the past in the moving averages, in [0, 1]; the first
        ``1 / (1 - momentum)`` updates are averaged cumulatively, so the
        statistics are usable from the first step.
      epsilon: added to the variance, > 0.
      center, scale: whether to learn ``beta`` and ``gamma``.
      *_initializer, *_regularizer: as for ``tf.compat.v1.get_variable``;
        default to zeros/ones like contrib.
      trainable: whether ``gamma`` and ``beta`` go to ``TRAINABLE_VARIABLES``.
      data_format: optional contrib-style shorthand: ``"NCHW"``/``"channels_first"``
        means ``axis=1``, ``"NHWC"``/``"channels_last"`` means ``axis=-1``.
      name: the variable scope (default ``"BatchNorm"``, made unique per call
        like contrib's).  Calls with the same name in the same scope share
        their variables.

    Returns the normalized tensor, same shape and dtype as ``inputs``.
    """
    if _v1.executing_eagerly_outside_functions():
        # Eager code, or a tf.function in TF2 code, where every trace would get its own variables.
        raise RuntimeError(
            "bnaudit.layers.batch_norm builds TF1 graph variables; in eager or TF2 code "
            "(including tf.function) use bnaudit.layers.BatchNorm, a Keras 3 layer"
        )
    flag, flag_tensor = core.resolve_training(training)
    momentum, epsilon = core.check_hyperparameters(momentum, epsilon)
    x = tf.convert_to_tensor(inputs, name="inputs")
    if x.shape.rank is None:
        raise ValueError("batch_norm needs an input of known rank")
    layout = core.Layout.of(x.shape.rank, core.resolve_axis(axis, data_format), core.prefer_nchw())
    channels = x.shape[layout.axis]
    if channels is None:
        raise ValueError(f"the size of axis {axis} must be known, got shape {x.shape}")

    # The outer scope picks the name (unique when None, like contrib); the inner
    # one reopens it with AUTO_REUSE so a second call under that name shares.
    with _v1.variable_scope(name, default_name="BatchNorm", values=[x]) as scope, \
            _v1.variable_scope(scope, reuse=_v1.AUTO_REUSE, auxiliary_name_scope=False):
        def param(var_name, initializer, default, regularizer):
            return _v1.get_variable(
                var_name, shape=[channels], dtype=core.STATS_DTYPE, initializer=initializer or default,
                regularizer=regularizer, trainable=trainable, collections=list(_STATS_COLLECTIONS),
            )

        def statistic(var_name, shape, initializer):
            return _v1.get_variable(
                var_name, shape=shape, dtype=core.STATS_DTYPE, initializer=initializer,
                trainable=False, collections=list(_STATS_COLLECTIONS),
            )

        gamma = (param(GAMMA, gamma_initializer, _v1.ones_initializer(), gamma_regularizer)
                 if scale else tf.ones([channels], core.STATS_DTYPE))
        beta = (param(BETA, beta_initializer, _v1.zeros_initializer(), beta_regularizer)
                if center else tf.zeros([channels], core.STATS_DTYPE))
        moving_mean = statistic(MOVING_MEAN, [channels], moving_mean_initializer or _v1.zeros_initializer())
        moving_variance = statistic(MOVING_VARIANCE, [channels],
                                    moving_variance_initializer or _v1.ones_initializer())
        num_updates = statistic(NUM_UPDATES, [], _v1.zeros_initializer())

        def train():
            mean, variance, count = _read(moving_mean), _read(moving_variance), _read(num_updates)
            y, batch_mean, batch_variance = core.normalize_training(
                x, gamma, beta, epsilon, layout, mean, variance, count)
            new_mean, new_variance, new_count = core.moving_update(
                mean, variance, count, batch_mean, batch_variance,
                core.elements_per_channel(x, layout.axis), momentum,
            )
            updates = [
                _v1.assign(moving_mean, new_mean, name="update_moving_mean").op,
                _v1.assign(moving_variance, new_variance, name="update_moving_variance").op,
                _v1.assign(num_updates, new_count, name="update_num_updates").op,
            ]
            with tf.control_dependencies(updates):
                return tf.identity(y, name="normalized")

        def infer():
            return core.normalize_inference(
                x, gamma, beta, _read(moving_mean), _read(moving_variance), epsilon, layout)

        if flag is None:
            return tf.cond(flag_tensor, train, infer, name="training_cond")
        return train() if flag else infer()


def _read(variable):
    """One snapshot of a variable's value, so every consumer sees the same, pre-update value."""
    return variable.read_value() if hasattr(variable, "read_value") else tf.identity(variable)
