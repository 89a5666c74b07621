"""``BatchNorm``: the Keras 3 front end, a drop-in for ``keras.layers.BatchNormalization``.

Same constructor arguments and the same meaning of ``training`` and of
``layer.trainable = False`` (inference mode) as Keras; the moving averages are
assigned in ``call`` as Keras expects, so ``fit``, custom loops and ``tf.function``
need nothing extra.  What differs is the core: the fused kernel for any rank
and axis, bias-corrected averages, finite-only updates, float32 statistics.
It runs on the TensorFlow backend (it calls TensorFlow's fused kernel).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from bnaudit.layers import core

#: The name Keras writes in ``.keras`` configs for this class.
REGISTERED_NAME = "bnaudit>BatchNorm"


# Keras/tf.keras BatchNormalization arguments this layer has no counterpart for: what they ask for
# when set (their off values are accepted, so a config written for Keras loads).
_UNSUPPORTED = {
    "synchronized": "cross-replica (synchronized) statistics",
    "renorm": "batch renormalization",
    "renorm_clipping": "batch renormalization",
    "renorm_momentum": "batch renormalization",
    "virtual_batch_size": "ghost (virtual) batches",
    "adjustment": "an adjustment of the normalized values",
}
_ACCEPTED_OFF = {"synchronized": False, "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99,
                 "virtual_batch_size": None, "adjustment": None}


def _refuse_unsupported(kwargs: dict) -> None:
    kwargs.pop("fused", None)  # the kernel is always the fused one
    for name, what in _UNSUPPORTED.items():
        if name in kwargs:
            value = kwargs.pop(name)
            if value != _ACCEPTED_OFF[name]:
                raise ValueError(f"bnaudit.layers.BatchNorm does not support {name}={value!r} ({what}); "
                                 f"use keras.layers.BatchNormalization({name}={value!r}) for that layer")


def full_window(momentum: float) -> float:
    """The update count at which the averages weigh each batch by 1 - momentum (no longer debiased)."""
    return float(math.ceil(1.0 / (1.0 - momentum) - 1e-9)) if momentum < 1.0 else 1.0


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
        _refuse_unsupported(kwargs)
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

    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        if type(inputs).__module__.startswith("tf_keras."):
            # tf_keras would otherwise fail deep inside with a message about dispatchers.
            raise TypeError("bnaudit.layers.BatchNorm is a Keras 3 layer; it cannot be called on a tf_keras tensor "
                            "(TF_USE_LEGACY_KERAS=1): use bnaudit.layers.batch_norm in tf_keras models, or Keras 3")
        return super().__call__(*args, **kwargs)

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

    def set_weights(self, weights):
        """Also takes the four arrays of a ``keras.layers.BatchNormalization`` (gamma, beta, moving_mean,
        moving_variance, as its center/scale give them): ``num_updates`` is then set to the full window,
        so the trained averages are kept and updated at ``1 - momentum``, not replaced by the next batch."""
        weights = list(weights)
        if len(weights) == len(self.weights) - 1:
            weights.append(np.asarray(full_window(self.momentum), np.float32))
        super().set_weights(weights)

    @classmethod
    def from_keras(cls, layer: keras.layers.Layer) -> "BatchNorm":
        """A built BatchNorm with a Keras BatchNormalization's configuration and trained weights."""
        config = {key: value for key, value in layer.get_config().items()
                  if key not in ("synchronized",) or value}
        axis = config.get("axis", -1)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(f"bnaudit.layers.BatchNorm normalizes over one axis, not {axis}")
            config["axis"] = axis[0]
        try:
            shape = layer.input.shape
        except (AttributeError, ValueError):
            raise ValueError("convert a BatchNormalization that has been called on an input (its input shape "
                             "says which axis is which)") from None
        converted = cls.from_config(config)
        converted.build(shape)
        converted.set_weights(layer.get_weights())
        return converted

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
