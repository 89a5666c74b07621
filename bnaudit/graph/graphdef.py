"""Frozen GraphDefs (``.pb``/``.pbtxt``): variables became constants.

TF1's freezing keeps the variable's name on its constant (``bn/moving_mean``);
TF2's does not (``unknown_3``), so its layers are found from the ops that
normalize (``oplayers``).  A frozen graph is an inference graph by construction, so the whole of it is one
inference path for BN011, with every ``PlaceholderWithDefault`` at its default.
"""

from __future__ import annotations

import os

from bnaudit.graph.metagraph import apply_graph
from bnaudit.graph.model import Artifact, ArtifactError, InferencePath, natural_key
from bnaudit.graph.oplayers import frozen_constant, layers_from_ops
from bnaudit.graph.protos import read_proto, tf_module
from bnaudit.graph.tfgraph import GraphView


def parse_graph_def(path: str):
    graph_pb2 = tf_module("tensorflow.core.framework.graph_pb2")

    graph = read_proto(path, graph_pb2.GraphDef(), display=path, what="a frozen GraphDef",
                       text=path.endswith(".pbtxt"))
    if not graph.node or any(not node.op or not node.name for node in graph.node):
        raise ArtifactError(path, "expected a frozen GraphDef; the file holds no graph nodes")
    return graph


def read_graph_def(path: str) -> Artifact:
    graph = parse_graph_def(path)
    view = GraphView.from_graph_def(graph, os.path.basename(path))
    artifact = Artifact(path, "frozen GraphDef")
    apply_graph(artifact, view, frozen_values=True)
    known = {key for layer in artifact.layers for key in layer.keys.values()}
    scans = [(view.main, {})] + [(view.function(name), {}) for name in view.library]
    unnamed = layers_from_ops(view, scans, frozen_constant, known)
    if unnamed:
        artifact.layers = sorted(artifact.layers + unnamed, key=lambda layer: natural_key(layer.name))
        artifact.notes.append(f"{len(unnamed)} batch-norm layer(s) found from the ops that normalize "
                              "(their constants carry no variable names, as TF2's freezing leaves them)")
    artifact.has_values = any(layer.values for layer in artifact.layers)
    fed = {node.name for node in graph.node if node.op == "Placeholder"}
    artifact.inference = [InferencePath("frozen graph", view, fed=fed)]
    return artifact
