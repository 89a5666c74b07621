"""Float64 NumPy reference of batch norm, and small helpers for the bnaudit.layers tests.

The reference is what "correct" means in these tests: outputs and gradients
in both modes, and the moving statistics of the documented update rule
(cumulative average until the window of 1 / (1 - momentum) updates is full,
Bessel-corrected batch variance when a channel has more than one element).
"""

from __future__ import annotations

import numpy as np


def _axes(x: np.ndarray, axis: int) -> tuple[int, ...]:
    axis %= x.ndim
    return tuple(i for i in range(x.ndim) if i != axis)


def _bcast(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.asarray(v, np.float64).reshape(shape)


def moments(x, axis=-1):
    """Batch mean and biased variance, float64, two-pass."""
    x = np.asarray(x, np.float64)
    axes = _axes(x, axis)
    mean = x.mean(axis=axes)
    var = ((x - _bcast(mean, x, axis)) ** 2).mean(axis=axes)
    return mean, var


def forward_train(x, gamma, beta, epsilon, axis=-1):
    x = np.asarray(x, np.float64)
    mean, var = moments(x, axis)
    xhat = (x - _bcast(mean, x, axis)) / np.sqrt(_bcast(var, x, axis) + epsilon)
    return _bcast(gamma, x, axis) * xhat + _bcast(beta, x, axis)


def forward_infer(x, gamma, beta, mean, var, epsilon, axis=-1):
    x = np.asarray(x, np.float64)
    xhat = (x - _bcast(mean, x, axis)) / np.sqrt(_bcast(var, x, axis) + epsilon)
    return _bcast(gamma, x, axis) * xhat + _bcast(beta, x, axis)


def grads_train(x, gamma, dy, epsilon, axis=-1):
    """(dx, dgamma, dbeta) of sum(dy * y) in training mode (batch statistics depend on x)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = _axes(x, axis)
    mean, var = moments(x, axis)
    inv = 1.0 / np.sqrt(_bcast(var, x, axis) + epsilon)
    xhat = (x - _bcast(mean, x, axis)) * inv
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dx = _bcast(gamma, x, axis) * inv * (
        dy - _bcast(dy.mean(axis=axes), x, axis) - xhat * _bcast((dy * xhat).mean(axis=axes), x, axis))
    return dx, dgamma, dbeta


def grads_infer(x, gamma, mean, var, dy, epsilon, axis=-1):
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = _axes(x, axis)
    inv = 1.0 / np.sqrt(_bcast(var, x, axis) + epsilon)
    xhat = (x - _bcast(mean, x, axis)) * inv
    return dy * _bcast(gamma, x, axis) * inv, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def moving_stats(batches, momentum, axis=-1, mean0=0.0, var0=1.0):
    """Moving (mean, variance, count) after training on ``batches`` in order."""
    mean = var = None
    count = 0
    for x in batches:
        x = np.asarray(x, np.float64)
        b_mean, b_var = moments(x, axis)
        n = x.size // x.shape[axis]
        if n > 1:
            b_var = b_var * n / (n - 1)
        if mean is None:
            mean = np.full_like(b_mean, mean0)
            var = np.full_like(b_var, var0)
        count += 1
        factor = max(1.0 - momentum, 1.0 / count)
        mean = mean + factor * (b_mean - mean)
        var = var + factor * (b_var - var)
    return mean, var, count


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function of a float64 array."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def ulp(value, dtype=np.float32) -> float:
    """The spacing of ``dtype`` numbers at ``value``."""
    return float(np.spacing(np.asarray(abs(value), dtype)))
