"""How fast, and how lean, is `bnaudit graph` on a large checkpoint?

Builds ResNet-50-sized checkpoints (25.6M parameters, 53 batch-norm layers, Adam slots: about 300 MB)
and compares, each in a fresh process after `import tensorflow`:

  audit       `bnaudit graph` on the checkpoint (detect, parse the index, read the graph, read the
              batch-norm tensors, run every check)
  list        TensorFlow's reader listing every variable (get_variable_to_shape_map)
  read-bn     listing plus reading only the batch-norm tensors, the least any audit must do
  read-all    reading and holding every tensor, what an audit that loads the model would pay

for two kinds of artifact:

  tf2  a Keras 3 ResNet50 (weights=None) and its Adam optimizer in a tf.train.Checkpoint (object graph)
  tf1  a tf.compat.v1.layers ResNet-50 trained one step with Adam, saved by a Saver with its MetaGraph
       (the audit also walks the ~30k-node training graph for BN001 and BN009)

Usage:  python benchmarks/graph_speed.py [--kind tf1|tf2|both] [--repeat 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLE_SUFFIXES = ("gamma", "beta", "moving_mean", "moving_variance")


def _quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# -- building --------------------------------------------------------------------------------


def build_tf2(out: Path) -> Path:
    _quiet()
    import keras
    import tensorflow as tf

    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=1000)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(out / "resnet50"))
    return Path(prefix)


def _tf1_resnet50(x, training):
    import tensorflow as tf

    layers = tf.compat.v1.layers

    def bn(h, name):
        return layers.batch_normalization(h, training=training, name=name)

    def block(h, filters, stride, name, project):
        shortcut = h
        if project:
            shortcut = layers.conv2d(h, 4 * filters, 1, stride, use_bias=False, name=f"{name}_0_conv")
            shortcut = bn(shortcut, f"{name}_0_bn")
        h = tf.nn.relu(bn(layers.conv2d(h, filters, 1, stride, use_bias=False, name=f"{name}_1_conv"), f"{name}_1_bn"))
        h = tf.nn.relu(bn(layers.conv2d(h, filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv"),
                          f"{name}_2_bn"))
        h = bn(layers.conv2d(h, 4 * filters, 1, use_bias=False, name=f"{name}_3_conv"), f"{name}_3_bn")
        return tf.nn.relu(h + shortcut)

    h = layers.conv2d(x, 64, 7, 2, padding="same", use_bias=False, name="conv1_conv")
    h = tf.nn.relu(bn(h, "conv1_bn"))
    h = layers.max_pooling2d(h, 3, 2, padding="same")
    for stage, (filters, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=2):
        for index in range(blocks):
            h = block(h, filters, stride if index == 0 else 1, f"conv{stage}_block{index + 1}", index == 0)
    h = tf.reduce_mean(h, axis=[1, 2])
    return layers.dense(h, 1000, name="predictions")


def build_tf1(out: Path) -> Path:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    _quiet()
    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    x = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="x")
    y = tf.compat.v1.placeholder(tf.int64, [None], name="y")
    logits = _tf1_resnet50(x, training=True)
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(y, logits)
    global_step = tf.compat.v1.train.get_or_create_global_step()
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=global_step)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        rng = np.random.default_rng(0)
        sess.run(train_op, {x: rng.normal(size=(2, 32, 32, 3)).astype("float32"), y: [1, 2]})
        prefix = tf.compat.v1.train.Saver().save(sess, str(out / "model.ckpt"), global_step=global_step)
    return Path(prefix)


# -- measuring (each in a fresh process) ------------------------------------------------------


def _bn_keys(reader, names) -> list[str]:
    """The batch-norm tensors' keys: by name (TF1), or by the variables' full names in the object graph (TF2).

    A TF2 checkpoint keys a Keras model's gamma under the optimizer's path
    (``optimizer/_trainable_variables/3``), so the object graph must be read to find it.
    """
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
        return [name for name in names if name.rsplit("/", 1)[-1] in ROLE_SUFFIXES]
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return [attribute.checkpoint_key for node in graph.nodes for attribute in node.attributes
            if attribute.name == "VARIABLE_VALUE" and attribute.full_name.rsplit("/", 1)[-1] in ROLE_SUFFIXES]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, prefix: str) -> dict:
    _quiet()
    started = time.perf_counter()
    if mode == "audit":
        from bnaudit.graph.command import audit
        from bnaudit.graph.protos import import_tensorflow_quietly

        import_tensorflow_quietly()
        imported, rss_imported = time.perf_counter(), _rss_mb()
        artifact, findings = audit(prefix)
        extra = {"layers": len(artifact.layers), "findings": sorted({f.code for f in findings})}
    else:
        import tensorflow  # noqa: F401
        from tensorflow.python.training import py_checkpoint_reader

        imported, rss_imported = time.perf_counter(), _rss_mb()
        reader = py_checkpoint_reader.NewCheckpointReader(prefix)
        names = reader.get_variable_to_shape_map()
        extra = {"variables": len(names)}
        if mode in ("read-bn", "read-all"):
            wanted = list(names) if mode == "read-all" else _bn_keys(reader, names)
            # Held, as a loaded model holds them.
            values = [reader.get_tensor(name) for name in wanted]
            total = sum(len(v) if isinstance(v, bytes) else v.nbytes for v in values)
            extra.update(tensors=len(wanted), bytes_read=total)
        if mode == "read-bn" and Path(prefix + ".meta").exists():
            # The graph is part of what an audit must read; parsing it is part of the floor.
            from tensorflow.core.protobuf import meta_graph_pb2

            meta = meta_graph_pb2.MetaGraphDef()
            meta.ParseFromString(Path(prefix + ".meta").read_bytes())
            extra["meta_nodes"] = len(meta.graph_def.node)
    done = time.perf_counter()
    return {"mode": mode, "seconds": done - imported, "process_seconds": done - started,
            "peak_rss_mb": _rss_mb(), "rss_over_import_mb": _rss_mb() - rss_imported, **extra}


def _run_measure(mode: str, prefix: Path) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, "--measure", mode, str(prefix)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _size_mb(prefix: Path) -> float:
    files = [p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + ".")]
    return sum(p.stat().st_size for p in files) / 2 ** 20


def bench(kind: str, out: Path, repeat: int) -> None:
    started = time.perf_counter()
    build = {"tf1": build_tf1, "tf2": build_tf2}[kind]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, __file__, "--build", kind, str(out)], check=True, env=env,
                   capture_output=True)
    prefix = Path((out / f"{kind}.prefix").read_text())
    size = _size_mb(prefix)
    print(f"\n== {kind}: {prefix.name}, {size:.1f} MB on disk (built in {time.perf_counter() - started:.0f} s)")
    rows = []
    for mode in ("audit", "list", "read-bn", "read-all"):
        runs = [_run_measure(mode, prefix) for _ in range(repeat)]
        best = dict(runs[0])
        best["seconds"] = statistics.median(r["seconds"] for r in runs)
        best["process_seconds"] = statistics.median(r["process_seconds"] for r in runs)
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        best["rss_over_import_mb"] = max(r["rss_over_import_mb"] for r in runs)
        rows.append(best)
    audit = rows[0]
    print(f"{'mode':9} {'after import (s)':>16} {'whole process (s)':>17} {'peak RSS (MB)':>14} "
          f"{'over import (MB)':>16}  notes")
    for row in rows:
        notes = {k: v for k, v in row.items()
                 if k not in ("mode", "seconds", "process_seconds", "peak_rss_mb", "rss_over_import_mb")}
        print(f"{row['mode']:9} {row['seconds']:16.3f} {row['process_seconds']:17.2f} {row['peak_rss_mb']:14.0f} "
              f"{row['rss_over_import_mb']:16.1f}  {notes}")
    floor = next(r for r in rows if r["mode"] == "read-bn")
    read_all = next(r for r in rows if r["mode"] == "read-all")
    print(f"audit / (list + read BN tensors{' + parse meta' if 'meta_nodes' in floor else ''}): "
          f"{audit['seconds'] / floor['seconds']:.2f}x time; "
          f"memory over the TensorFlow import {audit['rss_over_import_mb']:.0f} MB vs "
          f"{floor['rss_over_import_mb']:.0f} MB (holding every tensor: {read_all['rss_over_import_mb']:.0f} MB); "
          f"checkpoint {size:.0f} MB; "
          f"audit throughput {size / audit['seconds']:.0f} MB/s of checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("tf1", "tf2", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PREFIX"), help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if args.build:
        kind, directory = args.build
        prefix = (build_tf1 if kind == "tf1" else build_tf2)(Path(directory))
        (Path(directory) / f"{kind}.prefix").write_text(str(prefix))
        return
    kinds = ("tf2", "tf1") if args.kind == "both" else (args.kind,)
    with tempfile.TemporaryDirectory(prefix="bnaudit-bench-") as tmp:
        for kind in kinds:
            out = (args.out or Path(tmp)) / kind
            out.mkdir(parents=True, exist_ok=True)
            bench(kind, out, args.repeat)


if __name__ == "__main__":
    main()
