"""Frozen GraphDefs (``.pb``/``.pbtxt``): variables became constants that keep their names.

A frozen graph is an inference graph by construction, so the whole of it is one
inference path for BN011, with every ``PlaceholderWithDefault`` at its default.
"""

from __future__ import annotations

import os

from bnaudit.graph.metagraph import apply_graph
from bnaudit.graph.model import Artifact, ArtifactError, InferencePath
from bnaudit.graph.tfgraph import GraphView


def parse_graph_def(path: str):
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ArtifactError(path, f"cannot read the file ({exc.strerror})") from None
    graph = graph_pb2.GraphDef()
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), graph)
        else:
            graph.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(path, f"expected a frozen GraphDef; it does not parse ({_short(exc)})") from None
    if not graph.node or any(not node.op or not node.name for node in graph.node):
        raise ArtifactError(path, "expected a frozen GraphDef; the file holds no graph nodes")
    return graph


def read_graph_def(path: str) -> Artifact:
    graph = parse_graph_def(path)
    view = GraphView.from_graph_def(graph, os.path.basename(path))
    artifact = Artifact(path, "frozen GraphDef")
    apply_graph(artifact, view, frozen_values=True)
    artifact.has_values = any(layer.values for layer in artifact.layers)
    fed = {node.name for node in graph.node if node.op == "Placeholder"}
    artifact.inference = [InferencePath("frozen graph", view, fed=fed)]
    return artifact


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
