"""``BatchNorm``: the Keras 3 front end, a drop-in for ``keras.layers.BatchNormalization``.

Same constructor arguments and the same meaning of ``training`` and of
``layer.trainable = False`` (inference mode) as Keras; the moving averages are
assigned in ``call`` as Keras expects, so ``fit``, custom loops and ``tf.function``
need nothing extra.  What differs is the core: the fused kernel for any rank
and axis, bias-corrected averages, finite-only updates, float32 statistics.
It runs on the TensorFlow backend (it calls TensorFlow's fused kernel).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bnaudit.layers import core

#: The name Keras writes in ``.keras`` configs for this class.
REGISTERED_NAME = "bnaudit>BatchNorm"


@keras.saving.register_keras_serializable(package="bnaudit")
class BatchNorm(keras.layers.Layer):
    """Batch normalization with in-place, debiased, never-negative statistics.

    Weights: ``gamma``, ``beta`` (trainable, when ``scale``/``center``),
    ``moving_mean``, ``moving_variance`` and ``num_updates`` (the count that
    debiases the averages), all float32 whatever the dtype policy.

    Call: ``layer(inputs, training=None)``; ``training`` is a Python bool or a
    scalar boolean tensor (one ``tf.cond``), ``None`` means Keras's current
    mode (inference outside ``fit``).  Masks are refused rather than ignored.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"bnaudit.layers.BatchNorm needs the tensorflow backend, not {keras.backend.backend()}")
        self.axis = int(axis)
        self.momentum, self.epsilon = core.check_hyperparameters(momentum, epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.supports_masking = True
        self.gamma = self.beta = self.moving_mean = self.moving_variance = self.num_updates = None
        self._layout = None

    def build(self, input_shape):
        rank = len(input_shape)
        self._layout = core.Layout.of(rank, self.axis, core.prefer_nchw())
        channels = input_shape[self._layout.axis]
        if channels is None:
            raise ValueError(f"axis {self.axis} of the input must have a known size, got {input_shape}")
        shape = (channels,)

        def weight(name, initializer, trainable, regularizer=None, constraint=None, shape=shape):
            return self.add_weight(
                shape=shape, name=name, initializer=initializer, regularizer=regularizer,
                constraint=constraint, trainable=trainable, dtype="float32", autocast=False,
            )

        if self.scale:
            self.gamma = weight("gamma", self.gamma_initializer, True, self.gamma_regularizer, self.gamma_constraint)
        if self.center:
            self.beta = weight("beta", self.beta_initializer, True, self.beta_regularizer, self.beta_constraint)
        self.moving_mean = weight("moving_mean", self.moving_mean_initializer, False)
        self.moving_variance = weight("moving_variance", self.moving_variance_initializer, False)
        self.num_updates = weight("num_updates", "zeros", False, shape=())
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self._layout.axis: channels})

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            # Keras would leave masked positions out of the moments; the fused kernel cannot,
            # and statistics silently polluted by padding are the kind of fault this layer exists to avoid.
            raise ValueError("bnaudit.layers.BatchNorm does not support masks; use "
                             "keras.layers.BatchNormalization for masked sequences")
        # As in Keras: a frozen layer (trainable=False) always runs in inference mode.
        if training is None or not self.trainable:
            training = False
        flag, flag_tensor = core.resolve_training(training)
        x = tf.convert_to_tensor(inputs)
        channels = x.shape[self._layout.axis]
        gamma = self.gamma.value if self.scale else tf.ones([channels], core.STATS_DTYPE)
        beta = self.beta.value if self.center else tf.zeros([channels], core.STATS_DTYPE)

        def train():
            mean, variance, count = self.moving_mean.value, self.moving_variance.value, self.num_updates.value
            y, batch_mean, batch_variance = core.normalize_training(
                x, gamma, beta, self.epsilon, self._layout, mean, variance, count)
            new_mean, new_variance, new_count = core.moving_update(
                mean, variance, count, batch_mean, batch_variance,
                core.elements_per_channel(x, self._layout.axis), self.momentum,
            )
            self.moving_mean.assign(new_mean)
            self.moving_variance.assign(new_variance)
            self.num_updates.assign(new_count)
            return y

        def infer():
            return core.normalize_inference(
                x, gamma, beta, self.moving_mean.value, self.moving_variance.value, self.epsilon, self._layout)

        if flag is None:
            y = tf.cond(flag_tensor, train, infer)
        else:
            y = train() if flag else infer()
        return tf.cast(y, self.compute_dtype) if y.dtype != self.compute_dtype else y

    def get_config(self):
        config = super().get_config()
        config.update({
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": keras.initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": keras.initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
        })
        return config
