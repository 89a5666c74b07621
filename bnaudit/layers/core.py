"""The one op core under both front ends: fused normalization and the moving-average math.

Nothing here owns variables.  The front ends read their variables, hand the
values in, and assign what comes back, so the TF1 functional layer (ref or
resource variables in a graph) and the Keras 3 layer (Keras variables, eager or
traced) share every line of arithmetic.

Why each piece exists (fault codes from the catalogue in brackets):

* ``FusedBatchNormV3`` computes the batch moments in two passes (mean, then the
  mean of squared deviations) with float32 accumulation for float16/bfloat16
  inputs, so variance cannot cancel to a negative number the way one-pass
  E[x^2] - E[x]^2 does [BN005].  A float32 batch whose mean is far from zero
  relative to its spread is shifted first, so the sums keep its precision.
  Every rank and axis is reshaped (never transposed) to a 4-D NHWC or NCHW
  view so the same kernel runs everywhere.
* The moving averages are bias-corrected as a cumulative average until the
  window of ``1 / (1 - momentum)`` steps is full, then an exponential average:
  the factor is ``max(1 - momentum, 1 / t)`` at update ``t``.  The stored
  ``moving_mean``/``moving_variance`` are therefore the estimate itself, right
  from the first step, and a checkpoint read by any other layer means the same
  thing [BN009, BN010].
* A batch whose statistics are not finite, or that has no elements, does not
  enter the averages and does not advance the count; variances are clamped at
  zero before they are averaged or used [BN005, BN012].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

#: dtypes the fused kernel accepts for ``x``; statistics and parameters stay float32.
KERNEL_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
STATS_DTYPE = tf.float32


def check_hyperparameters(momentum: float, epsilon: float) -> tuple[float, float]:
    """Reject the values that make the averages or the normalization meaningless [BN005]."""
    momentum = float(momentum)
    epsilon = float(epsilon)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if not 0.0 < epsilon < float("inf"):  # also rejects NaN
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
    return momentum, epsilon


_CHANNELS_FIRST = {"NCHW", "NCW", "NCDHW", "channels_first"}
_CHANNELS_LAST = {"NHWC", "NWC", "NDHWC", "channels_last"}


def resolve_axis(axis: int, data_format: str | None) -> int:
    """The channel axis; ``data_format`` (contrib/slim style) is a shorthand for axis 1 or -1."""
    if data_format is None:
        return int(axis)
    if data_format in _CHANNELS_FIRST:
        wanted = 1
    elif data_format in _CHANNELS_LAST:
        wanted = -1
    else:
        raise ValueError(f"unknown data_format {data_format!r}")
    if int(axis) not in (-1, wanted):
        raise ValueError(f"axis={axis} contradicts data_format={data_format!r}")
    return wanted


@dataclass(frozen=True)
class Layout:
    """How an input of some rank and channel axis is viewed as a 4-D tensor for the kernel.

    ``reshape`` is False when the input already is 4-D NHWC (axis -1) or NCHW
    (axis 1); otherwise the input is reshaped, which moves no data: channels
    last becomes ``[rest, 1, 1, C]`` in NHWC, any other axis
    ``[before, C, after, 1]`` in NCHW.  Channels last may also be viewed as
    ``[rest, C, 1, 1]`` in NCHW (the same bytes): the layout cuDNN takes
    without transposing, where the CPU kernel prefers NHWC.
    """

    rank: int
    axis: int  # non-negative
    data_format: str  # "NHWC" or "NCHW"
    reshape: bool

    @classmethod
    def of(cls, rank: int, axis: int, prefer_nchw: bool = False) -> "Layout":
        if rank < 1:
            raise ValueError("batch norm needs an input of rank >= 1")
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is out of range for an input of rank {rank}")
        axis %= rank
        if axis == rank - 1 and (rank == 4 or not prefer_nchw):
            return cls(rank, axis, "NHWC", rank != 4)
        return cls(rank, axis, "NCHW", rank != 4 or axis != 1)

    def to_kernel(self, x: tf.Tensor) -> tf.Tensor:
        if not self.reshape:
            return x
        channels = x.shape[self.axis]
        if self.data_format == "NHWC":
            return tf.reshape(x, [-1, 1, 1, channels])
        # Both sizes explicit: a -1 cannot be inferred for an empty batch.
        return tf.reshape(x, [_prod(x, 0, self.axis), channels, _prod(x, self.axis + 1, self.rank), 1])

    def from_kernel(self, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        if not self.reshape:
            return y
        shape = x.shape
        target = shape.as_list() if shape.is_fully_defined() else tf.shape(x)
        return tf.reshape(y, target)


def prefer_nchw() -> bool:
    """Whether reshaped views should be NCHW: when a GPU is visible, where cuDNN wants NCHW float32."""
    return bool(tf.config.list_logical_devices("GPU"))


def _prod(x: tf.Tensor, start: int, stop: int):
    dims = x.shape[start:stop]
    if dims.is_fully_defined():
        size = 1
        for d in dims.as_list():
            size *= d
        return size
    return tf.reduce_prod(tf.shape(x)[start:stop])


def elements_per_channel(x: tf.Tensor, axis: int):
    """Elements that share one channel's statistics: a Python int when the shape is known."""
    rank = x.shape.rank
    axis %= rank
    known = [d for i, d in enumerate(x.shape.as_list()) if i != axis]
    if all(d is not None for d in known):
        size = 1
        for d in known:
            size *= d
        return size
    return tf.size(x) // tf.shape(x)[axis]


def _kernel_input(x: tf.Tensor) -> tuple[tf.Tensor, tf.DType]:
    """The input in a dtype the kernel takes; float64 and others compute in float32."""
    if x.dtype in KERNEL_DTYPES:
        return x, x.dtype
    return tf.cast(x, STATS_DTYPE), x.dtype


#: A channel whose |mean| exceeds this many standard deviations is normalized after
#: subtracting a shift: float32 sums of such data lose the spread in the mean's ulps.
SHIFT_RATIO = 100.0


def normalize_training(x, gamma, beta, epsilon: float, layout: Layout,
                       moving_mean=None, moving_variance=None, count=None):
    """Normalize with the batch's own moments.

    Returns ``(y, batch_mean, batch_variance)``: the moments are float32, the
    variance Bessel-corrected when a channel has more than one element (zero
    otherwise, never a division by zero), clamped at zero, for the averages.

    With the moving statistics given, a float32 batch far from zero relative to
    its spread (mean 1e4, std 1e-2) is first shifted by the moving mean (or, on
    the first update, by its first sample), which batch norm is invariant to:
    the kernel then sums small numbers and the output keeps its precision.
    Well-centred data, the usual case, goes to the kernel untouched.
    """
    xk, out_dtype = _kernel_input(x)
    x4 = layout.to_kernel(xk)
    empty = tf.constant([], STATS_DTYPE)

    def fused(inputs):
        result = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty,
            epsilon=epsilon, exponential_avg_factor=1.0, data_format=layout.data_format, is_training=True,
        )
        return result.y, result.batch_mean, result.batch_variance

    if moving_mean is None or xk.dtype != STATS_DTYPE:
        y, mean, variance = fused(x4)
    else:
        nhwc = layout.data_format == "NHWC"
        first_update = count < 1.0
        # mean^2 > K^2 (var + eps): no sqrt; a corrupt negative variance just means "shift".
        off_centre = tf.logical_or(first_update, tf.reduce_any(
            moving_mean * moving_mean > SHIFT_RATIO ** 2 * (moving_variance + epsilon)))

        def shifted():
            # By the moving mean, or on the first update by one sample per channel (0 if empty).
            corner = x4[:1, :1, :1, :] if nhwc else x4[:1, :, :1, :1]
            first = tf.reduce_sum(corner, axis=[0, 1, 2] if nhwc else [0, 2, 3])
            shift = tf.stop_gradient(tf.where(first_update, first, moving_mean))
            return x4 - tf.reshape(shift, [1, 1, 1, -1] if nhwc else [1, -1, 1, 1]), shift

        # Only the subtraction is conditional (the kernel and its gradient stay outside the
        # cond), so well-centred data pays a few tiny ops, not a pass over the batch.
        x4, shift = tf.cond(off_centre, shifted, lambda: (x4, tf.zeros_like(moving_mean)))
        y, mean, variance = fused(x4)
        mean = mean + shift
    y = layout.from_kernel(y, xk)
    n = elements_per_channel(x, layout.axis)
    # The kernel applies n / (n - 1) itself; with one element per channel the
    # sample variance is undefined, so use the (zero) population variance.
    if isinstance(n, int):
        if n <= 1:
            variance = tf.zeros_like(variance)
    else:
        variance = tf.where(n > 1, variance, tf.zeros_like(variance))
    variance = tf.maximum(variance, 0.0)
    return tf.cast(y, out_dtype) if y.dtype != out_dtype else y, mean, variance


def normalize_inference(x, gamma, beta, mean, variance, epsilon: float, layout: Layout):
    """Normalize with given (moving) statistics; a negative stored variance is read as zero."""
    xk, out_dtype = _kernel_input(x)
    result = tf.raw_ops.FusedBatchNormV3(
        x=layout.to_kernel(xk), scale=gamma, offset=beta, mean=mean, variance=tf.maximum(variance, 0.0),
        epsilon=epsilon, exponential_avg_factor=1.0, data_format=layout.data_format, is_training=False,
    )
    y = layout.from_kernel(result.y, xk)
    return tf.cast(y, out_dtype) if y.dtype != out_dtype else y


def update_factor(count, momentum: float):
    """Weight of update number ``count + 1``: a cumulative average until the window is full."""
    return tf.maximum(tf.constant(1.0 - momentum, STATS_DTYPE), 1.0 / (count + 1.0))


def moving_update(mean, variance, count, batch_mean, batch_variance, n, momentum: float):
    """New ``(mean, variance, count)`` after one training batch.

    A batch with a non-finite statistic or no elements leaves all three exactly
    as they were.  Inputs are tensors (the variables' current values); nothing
    is assigned here.
    """
    valid = tf.reduce_all(tf.math.is_finite(tf.stack([batch_mean, batch_variance])))
    if not isinstance(n, int):
        valid = tf.logical_and(valid, n > 0)
    elif n == 0:
        valid = tf.constant(False)
    factor = update_factor(count, momentum)
    # where(), not a zero factor: 0 * NaN is NaN.
    new_mean = mean + factor * (tf.where(valid, batch_mean, mean) - mean)
    new_variance = variance + factor * (tf.where(valid, batch_variance, variance) - variance)
    new_count = count + tf.cast(valid, STATS_DTYPE)
    return new_mean, tf.maximum(new_variance, 0.0), new_count


def resolve_training(training):
    """The training flag as ``(value, tensor)``: value is a Python bool when known now, else None.

    Raises TypeError for anything that is neither a bool nor a scalar boolean
    tensor (placeholder, variable): a flag must never silently mean something
    else, and ``None`` is not a flag [BN006, BN007].
    """
    if isinstance(training, (bool, np.bool_)):
        return bool(training), None
    if training is None:
        raise TypeError("training is required: pass True, False or a scalar boolean tensor")
    tensor = tf.convert_to_tensor(training)
    if tensor.dtype != tf.bool:
        raise TypeError(f"training must be a Python bool or a boolean tensor, got dtype {tensor.dtype.name}")
    if tensor.shape.rank not in (None, 0):
        raise TypeError(f"training must be a scalar, got shape {tensor.shape}")
    value = tf.get_static_value(tensor)
    return (None, tensor) if value is None else (bool(value), None)
