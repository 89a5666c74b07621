"""BN011 on TF1 artifacts, by editing the real protos: a serving path that can take the training branch.

The correct TF1 model normalizes through a cond on ``training = placeholder_with_default(False)``.
Its serving signature does not expose the flag, so the training branch is dead there; exposing the
flag (or flipping its default in the frozen graph) makes batch statistics reachable at inference.
"""

from __future__ import annotations

import shutil

import pytest

pytest.register_assert_rewrite("graph_fixtures")  # also loaded as a plugin: rewrite it before importing
from graph_fixtures import codes_of, graph_json  # noqa: E402

pytest_plugins = ["graph_fixtures"]  # one session of trained artifacts for every module


def test_signature_that_exposes_the_training_flag(artifact_path, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    target = tmp_path / "savedmodel"
    shutil.copytree(artifact_path("tf1-savedmodel"), target)
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((target / "saved_model.pb").read_bytes())
    signature = model.meta_graphs[0].signature_def["serving_default"]
    signature.inputs["training"].name = "training:0"
    (target / "saved_model.pb").write_bytes(model.SerializeToString())
    _, findings, _ = graph_json(target)
    assert codes_of(findings) == {"BN011"}
    by_layer = {f["layer"]: " ".join(f["details"]["evidence"]) for f in findings}
    assert "FusedBatchNorm with is_training=true" in by_layer["conv_bn"]
    assert "batch moments" in by_layer["fc_bn"]


def test_frozen_graph_whose_training_flag_defaults_to_true(artifact_path, tmp_path):
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(artifact_path("frozen-pb").read_bytes())
    default = next(node for node in graph.node if node.name == "training/input")
    default.attr["value"].tensor.bool_val[:] = [True]
    path = tmp_path / "frozen_training.pb"
    path.write_bytes(graph.SerializeToString())
    _, findings, _ = graph_json(path)
    assert codes_of(findings) == {"BN011"}
    assert {f["layer"] for f in findings} == {"conv_bn", "fc_bn"}
    assert all(f["details"]["entry_points"] == ["frozen graph"] for f in findings)
