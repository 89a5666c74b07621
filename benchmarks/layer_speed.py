"""Speed of bnaudit.layers.BatchNorm against Keras 3, a hand-written tf.nn layer and the bare kernel.

    python benchmarks/layer_speed.py [--repeats 40] [--warmup 5] [--data-format auto]

For each shape, a training step (forward and backward: gradients for the input,
gamma and beta, moving averages updated) and an inference pass, all inside
``tf.function``, for:

* ``bnaudit``: ``bnaudit.layers.BatchNorm``;
* ``keras``:   ``keras.layers.BatchNormalization`` (Keras 3);
* ``tf.nn``:   ``tf.nn.moments`` + ``tf.nn.batch_normalization`` with the moving
  averages assigned by hand (the pattern in the seed thread);
* ``floor``:   the bare ``tf.raw_ops.FusedBatchNormV3`` kernel, no moving averages.

The implementations are timed round-robin in one process (so load changes hit
all alike), after warm-up; the table shows medians and ratios.  The same script
runs on a GPU: it places everything on ``/GPU:0`` when there is one and, for 4-D
inputs, uses NCHW there (cuDNN's preferred float32 layout) unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tabulate import tabulate  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bnaudit.layers import BatchNorm, core  # noqa: E402

SHAPES = ((32, 56, 56, 64), (8, 112, 112, 64), (256, 1024))
MOMENTUM, EPSILON = 0.99, 1e-3
IMPLS = ("bnaudit", "keras", "tf.nn", "floor")

# Targets from the issue (CPU): bnaudit/floor <= 1.15; keras/bnaudit >= 2.5 (4-D training),
# >= 1.4 (2-D training), >= 1.2 (inference).
FLOOR_MAX = 1.15
KERAS_MIN = {("train", 4): 2.5, ("train", 2): 1.4, ("infer", 4): 1.2, ("infer", 2): 1.2}


def _sync():
    sync = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)
    if sync is not None and tf.config.list_logical_devices("GPU"):
        sync()


def _build(impl: str, x: tf.Tensor, axis: int):
    """(train_step, inference) tf.functions for one implementation on input ``x``."""
    channels = x.shape[axis]
    reduce_axes = [i for i in range(x.shape.rank) if i != axis % x.shape.rank]
    bshape = [1] * x.shape.rank
    bshape[axis] = channels
    dy = tf.random.normal(x.shape, seed=1)

    if impl in ("bnaudit", "keras"):
        cls = BatchNorm if impl == "bnaudit" else keras.layers.BatchNormalization
        layer = cls(axis=axis, momentum=MOMENTUM, epsilon=EPSILON)
        layer.build(x.shape)

        @tf.function
        def train(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return tape.gradient(y, [x] + layer.trainable_weights, output_gradients=dy)

        @tf.function
        def infer(x):
            return layer(x, training=False)

        return train, infer

    gamma = tf.Variable(tf.ones([channels]))
    beta = tf.Variable(tf.zeros([channels]))
    moving_mean = tf.Variable(tf.zeros([channels]), trainable=False)
    moving_variance = tf.Variable(tf.ones([channels]), trainable=False)

    if impl == "tf.nn":
        def reshape(v):
            return tf.reshape(v, bshape)

        @tf.function
        def train(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                mean, variance = tf.nn.moments(x, reduce_axes, keepdims=True)
                y = tf.nn.batch_normalization(x, mean, variance, reshape(beta), reshape(gamma), EPSILON)
            moving_mean.assign(moving_mean * MOMENTUM + tf.reshape(mean, [-1]) * (1 - MOMENTUM))
            moving_variance.assign(moving_variance * MOMENTUM + tf.reshape(variance, [-1]) * (1 - MOMENTUM))
            return tape.gradient(y, [x, gamma, beta], output_gradients=dy)

        @tf.function
        def infer(x):
            return tf.nn.batch_normalization(x, reshape(moving_mean), reshape(moving_variance),
                                             reshape(beta), reshape(gamma), EPSILON)

        return train, infer

    # floor: the kernel alone, on the same 4-D view bnaudit uses, no moving averages.
    layout = core.Layout.of(x.shape.rank, axis, core.prefer_nchw())
    empty = tf.constant([], tf.float32)
    dy4 = layout.to_kernel(dy)

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.raw_ops.FusedBatchNormV3(
                x=layout.to_kernel(x), scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=EPSILON,
                exponential_avg_factor=1.0, data_format=layout.data_format, is_training=True).y
        return tape.gradient(y, [x, gamma, beta], output_gradients=dy4)

    @tf.function
    def infer(x):
        return layout.from_kernel(tf.raw_ops.FusedBatchNormV3(
            x=layout.to_kernel(x), scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
            epsilon=EPSILON, exponential_avg_factor=1.0, data_format=layout.data_format, is_training=False).y, x)

    return train, infer


def _time(functions: dict, x, warmup: int, repeats: int) -> dict:
    for fn in functions.values():
        for _ in range(warmup):
            fn(x)
        _sync()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            _sync()
            start = time.perf_counter()
            fn(x)
            _sync()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data-format", choices=("auto", "NHWC", "NCHW"), default="auto",
                        help="layout of the 4-D inputs (auto: NCHW on a GPU, NHWC on a CPU)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpus = tf.config.list_logical_devices("GPU")
    device = "/GPU:0" if gpus else "/CPU:0"
    fmt = args.data_format if args.data_format != "auto" else ("NCHW" if gpus else "NHWC")
    if gpus:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        where = f"GPU {details.get('device_name', gpus[0].name)}"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {where}; float32; "
          f"4-D layout {fmt}; {args.repeats} timed calls each after {args.warmup} warm-up calls")

    results = []  # (shape, mode, {impl: [ms, ...]})
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        if len(shape) == 4 and fmt == "NCHW":
            shape, axis = (shape[0], shape[3], shape[1], shape[2]), 1
        else:
            axis = -1
        with tf.device(device):
            x = tf.constant(rng.normal(2.0, 3.0, size=shape).astype(np.float32))
            built = {impl: _build(impl, x, axis) for impl in IMPLS}
            for mode, index in (("train", 0), ("infer", 1)):
                samples = _time({impl: fns[index] for impl, fns in built.items()}, x, args.warmup, args.repeats)
                results.append((shape, mode, samples))

    misses = _report(results, statistics.median, "median ms", check=not gpus)
    print()
    _report(results, min, "fastest ms (less sensitive to a busy machine)", check=False)
    if hasattr(os, "getloadavg"):
        print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
              "(this run adds about 1; more means something else was running)")
    if gpus:
        print("targets are set for the CPU; not checked on a GPU")
    elif misses:
        print("targets missed (medians):\n  " + "\n  ".join(misses))
    else:
        print(f"all CPU targets met (bnaudit/floor <= {FLOOR_MAX}; keras/bnaudit >= 2.5 4-D train, "
              ">= 1.4 2-D train, >= 1.2 inference)")
    return 0


def _report(results, stat, title: str, check: bool) -> list[str]:
    rows, misses = [], []
    for shape, mode, samples in results:
        ms = {impl: stat(values) for impl, values in samples.items()}
        ours, floor, theirs = ms["bnaudit"], ms["floor"], ms["keras"]
        rows.append(["x".join(map(str, shape)), mode, *(f"{ms[i]:.2f}" for i in IMPLS),
                     f"{ours / floor:.2f}", f"{theirs / ours:.2f}", f"{ms['tf.nn'] / ours:.2f}"])
        if check:
            if ours / floor > FLOOR_MAX:
                misses.append(f"{shape} {mode}: bnaudit/floor {ours / floor:.2f} > {FLOOR_MAX}")
            wanted = KERAS_MIN[(mode, 4 if len(shape) == 4 else 2)]
            if theirs / ours < wanted:
                misses.append(f"{shape} {mode}: keras/bnaudit {theirs / ours:.2f} < {wanted}")
    headers = ["shape", "step", *IMPLS, "bnaudit/floor", "keras/bnaudit", "tf.nn/bnaudit"]
    print(title)
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return misses


if __name__ == "__main__":
    sys.exit(main())
