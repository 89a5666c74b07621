"""Which kind of artifact a path is, decided from names and magic numbers, never by loading it."""

from __future__ import annotations

import os
import re
import stat

from bnaudit.graph.model import Artifact, ArtifactError

_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
EXPECTED = ("a checkpoint directory (with a `checkpoint` file), a checkpoint prefix, a .meta MetaGraph, "
            "a SavedModel directory, a .keras/.h5 Keras file, or a frozen .pb/.pbtxt GraphDef")


def _checkpoint(prefix: str, display: str) -> Artifact:
    from bnaudit.graph.bundle import Bundle
    from bnaudit.graph.checkpoint import checkpoint_artifact
    from bnaudit.graph.metagraph import apply_meta_graph, parse_meta_graph

    bundle = Bundle(prefix, display)
    artifact = checkpoint_artifact(bundle)
    meta_path = prefix + ".meta"
    if os.path.exists(meta_path):
        apply_meta_graph(artifact, parse_meta_graph(meta_path), read=bundle.saved)
        artifact.kind += " + MetaGraph"
    return artifact


def _meta(path: str) -> Artifact:
    from bnaudit.graph.metagraph import apply_meta_graph, parse_meta_graph

    prefix = path[: -len(".meta")]
    if os.path.exists(prefix + ".index"):
        return _checkpoint(prefix, path)
    artifact = Artifact(path, "MetaGraph (no checkpoint beside it)")
    apply_meta_graph(artifact, parse_meta_graph(path))
    artifact.notes.append("no checkpoint beside the MetaGraph: only the graph was audited")
    return artifact


def _checkpoint_dir(directory: str) -> Artifact:
    from bnaudit.graph.protos import read_proto, tf_module

    CheckpointState = tf_module("tensorflow.python.training.checkpoint_state_pb2").CheckpointState

    state_path = os.path.join(directory, "checkpoint")
    if not os.access(state_path, os.R_OK):
        raise ArtifactError(directory, "cannot read its `checkpoint` file (permission denied)")
    # Parsed here, not by tf.train.get_checkpoint_state, which logs its own warnings on a bad file.
    state = read_proto(state_path, CheckpointState(), display=directory,
                       what="a `checkpoint` file naming the latest checkpoint", text=True)
    if not state.model_checkpoint_path:
        raise ArtifactError(directory, f"expected {state_path} to name a checkpoint; it names none")
    named = state.model_checkpoint_path
    # Prefer the files in this directory: a copied directory keeps absolute paths to the original.
    local = os.path.join(directory, os.path.basename(named))
    prefix = local if os.path.exists(local + ".index") else os.path.join(directory, named)
    if not os.path.exists(prefix + ".index"):
        raise ArtifactError(directory, f"the `checkpoint` file names {named}, which has no .index file")
    return _checkpoint(prefix, prefix)


def _latest_version(directory: str) -> str | None:
    """TF Serving's layout: numbered version directories, each a SavedModel; the highest is served."""
    versions = []
    for entry in os.listdir(directory):
        child = os.path.join(directory, entry)
        if entry.isdigit() and (os.path.exists(os.path.join(child, "saved_model.pb"))
                                or os.path.exists(os.path.join(child, "saved_model.pbtxt"))):
            versions.append((int(entry), child))
    return max(versions)[1] if versions else None


# Formats people hand to `bnaudit graph` that hold no TF/Keras training state it can read.
UNSUPPORTED = {
    ".tflite": "a TensorFlow Lite flatbuffer (converted for inference: no moving statistics or training graph)",
    ".onnx": "an ONNX model",
    ".whl": "a Python wheel (unzip it and point bnaudit at the model files inside)",
    ".tar.gz": "a compressed archive (extract it first)",
    ".tgz": "a compressed archive (extract it first)",
}


def read_artifact(path: str) -> Artifact:
    """Detect the kind from the path and read it; raises ArtifactError for anything unusable."""
    from bnaudit.graph import graphdef, keras_file, savedmodel
    from bnaudit.graph.isolation import isolated

    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            raise ArtifactError(path, "cannot read the directory (permission denied)")
        if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(os.path.join(path, "saved_model.pbtxt")):
            return savedmodel.read_saved_model(path)
        if os.path.isfile(os.path.join(path, "checkpoint")):
            return _checkpoint_dir(path)
        version = _latest_version(path)
        if version is not None:
            return savedmodel.read_saved_model(version)
        raise ArtifactError(path, f"expected {EXPECTED}; this directory has no saved_model.pb and no `checkpoint` file")
    if not os.path.exists(path):
        if os.path.exists(path + ".index"):
            return _checkpoint(path, path)
        try:
            os.stat(path)
        except PermissionError:
            raise ArtifactError(path, "cannot reach the path (permission denied)") from None
        except OSError:
            pass
        raise ArtifactError(path, f"no such file or directory (expected {EXPECTED})")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ArtifactError(path, "not a regular file (a FIFO, socket or device is never read)")
    if not os.access(path, os.R_OK):
        raise ArtifactError(path, "cannot read the file (permission denied)")
    name = os.path.basename(path)
    data = _DATA_RE.match(path)
    if name == "checkpoint":
        return _checkpoint_dir(os.path.dirname(path) or ".")
    if name.endswith(".index"):
        return _checkpoint(path[: -len(".index")], path[: -len(".index")])
    if data:
        return _checkpoint(data.group("prefix"), data.group("prefix"))
    if name.endswith(".meta"):
        return _meta(path)
    if name in ("saved_model.pb", "saved_model.pbtxt"):
        return savedmodel.read_saved_model(os.path.dirname(path) or ".", path)
    unsupported = next((what for suffix, what in UNSUPPORTED.items() if name.lower().endswith(suffix)), None)
    if unsupported is not None:
        raise ArtifactError(path, f"not a supported artifact: {unsupported} (bnaudit graph reads {EXPECTED})")
    if name.endswith(".keras"):
        return isolated(path, keras_file.read_keras, path)
    if name.endswith((".h5", ".hdf5", ".weights.h5")):
        return isolated(path, keras_file.read_h5, path)
    if name.endswith((".pb", ".pbtxt")):
        return graphdef.read_graph_def(path)
    if keras_file.looks_like_hdf5(path):
        return isolated(path, keras_file.read_h5, path)
    if keras_file.looks_like_zip(path):
        return isolated(path, keras_file.read_keras, path)
    raise ArtifactError(path, f"expected {EXPECTED}; the file name and contents match none of them")
