"""What BatchNormWatch costs a training run: a small ResNet-style Keras model fit on the CPU.

    python3 benchmarks/watch_overhead.py [--steps 600] [--repeats 3] [--every 100]

Runs fit without and with the callback, alternating, and reports the best time of each and the
overhead; the watch reads every batch-norm layer every ``--every`` steps.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bnaudit.watch import BatchNormWatch  # noqa: E402


def resnet(blocks: int = 4, width: int = 32) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    for _ in range(blocks):
        r = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(h)
        r = keras.layers.ReLU()(keras.layers.BatchNormalization()(r))
        r = keras.layers.BatchNormalization()(keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(r))
        h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.steps * args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.steps * args.batch)
    model = resnet()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:args.batch * 20], y[:args.batch * 20], batch_size=args.batch, verbose=0)  # trace once
    times = {"without": [], "with": []}
    for _ in range(args.repeats):
        for label in ("without", "with"):
            callbacks = [BatchNormWatch(every_n_steps=args.every)] if label == "with" else []
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=callbacks)
            times[label].append(time.perf_counter() - start)
    base, watched = min(times["without"]), min(times["with"])
    layers = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    print(f"| model | steps | batch-norm layers | every | fit without (s) | fit with (s) | overhead |")
    print(f"|---|---|---|---|---|---|---|")
    print(f"| ResNet-style, {model.count_params():,} params | {args.steps} | {layers} | {args.every} | "
          f"{base:.2f} | {watched:.2f} | {100 * (watched - base) / base:+.1f}% |")


if __name__ == "__main__":
    main()
