"""What a graph declares: batch-norm variables, their decays, UPDATE_OPS and the train op.

Shared by every artifact that carries a graph (``.meta``, SavedModel, frozen
GraphDef).  The graph is the ground truth for what a layer *has*: a checkpoint
that lacks ``moving_mean`` is only a fault (BN004) because the graph has it.
"""

from __future__ import annotations

from bnaudit.graph.model import MOVING, Artifact, ArtifactError, BNLayer, TrainingGraph, natural_key, split_role
from bnaudit.graph.protos import read_proto
from bnaudit.graph.tfgraph import ASSIGN_OPS, VARIABLE_OPS, GraphView, const_value, is_moving_stat

UPDATE_OPS = "update_ops"
TRAIN_OP = "train_op"


def parse_meta_graph(path: str, data: bytes | None = None):
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = read_proto(path, meta_graph_pb2.MetaGraphDef(), display=path,
                      what="a MetaGraphDef (.meta) protobuf", data=data)
    if not meta.graph_def.node:
        raise ArtifactError(path, "expected a MetaGraphDef (.meta) with a graph; it holds no nodes")
    return meta


def declared_layers(view: GraphView) -> dict[str, dict[str, str]]:
    """``{scope: {role: node}}`` for the graph's variables (or a frozen graph's named constants)."""
    scopes: dict[str, dict[str, str]] = {}
    for name, node in view.main.nodes.items():
        if node.op not in VARIABLE_OPS and node.op != "Const":
            continue
        parts = split_role(name)
        if parts is None:
            continue
        scope, role = parts
        if node.op == "Const" and (name.endswith("/Initializer/zeros") or "Initializer" in name):
            continue
        scopes.setdefault(scope, {}).setdefault(role, name)
    return {scope: roles for scope, roles in scopes.items() if any(role in roles for role in MOVING)}


def graph_decays(view: GraphView) -> dict[str, tuple[float, str]]:
    """``{scope: (decay, where it was read)}`` from the moving-average assign ops."""
    out: dict[str, tuple[float, str]] = {}
    body = view.main
    for name, node in body.nodes.items():
        if node.op not in ASSIGN_OPS:
            continue
        target = view.assigned_variable(body, name)
        if not is_moving_stat(target):
            continue
        decay = view.moving_average_decay(body, name)
        if decay is None:
            continue
        scope = split_role(target)[0]
        if scope not in out or decay > out[scope][0]:
            out[scope] = (decay, name)
    for norm in view.normalizations(body):
        if norm.fused_training and norm.avg_factor != 1.0:
            var = view.resolve_variable(body, norm.mean)
            if is_moving_stat(var):
                scope = split_role(var)[0]
                out.setdefault(scope, (1.0 - norm.avg_factor, norm.node))
    return out


def apply_graph(artifact: Artifact, view: GraphView, frozen_values: bool = False) -> None:
    """Merge what a graph declares into the layers read from the values."""
    artifact.has_graph = True
    artifact.graph = view
    for scope, roles in declared_layers(view).items():
        layer = artifact.layer(scope)
        if layer is None:
            layer = BNLayer(scope)
            artifact.layers.append(layer)
        layer.declared |= set(roles)
        if frozen_values:
            for role, node in roles.items():
                value = const_value(view.main.nodes[node])
                if value is not None:
                    layer.keys[role] = node
                    layer.values[role] = value
    declared = {layer.name for layer in artifact.layers if layer.declared}
    artifact.layers = [layer for layer in artifact.layers
                       if layer.name in declared or any(role in layer.keys for role in MOVING)]
    for scope, (decay, source) in graph_decays(view).items():
        layer = artifact.layer(scope)
        if layer is not None:
            layer.decay, layer.decay_source = decay, source
    # bnaudit.layers.batch_norm counts its updates (num_updates) and bias-corrects its averages.
    for layer in artifact.layers:
        node = view.main.nodes.get(f"{layer.name}/num_updates")
        if node is not None and (node.op in VARIABLE_OPS or node.op == "Const"):
            layer.bias_corrected = True
            layer.class_name = "bnaudit.layers.batch_norm"
    artifact.layers.sort(key=lambda layer: natural_key(layer.name))


def _node_names(values) -> list[str]:
    return [value.split(":", 1)[0].lstrip("^") for value in values]


def apply_meta_graph(artifact: Artifact, meta, view: GraphView | None = None) -> GraphView:
    """A MetaGraph: its graph, plus the UPDATE_OPS and train_op collections BN001 needs."""
    view = view or GraphView.from_graph_def(meta.graph_def, "MetaGraph")
    apply_graph(artifact, view)
    collections = meta.collection_def
    update_ops = _node_names(collections[UPDATE_OPS].node_list.value) if UPDATE_OPS in collections else []
    train_ops = _node_names(collections[TRAIN_OP].node_list.value) if TRAIN_OP in collections else []
    if update_ops or train_ops:
        artifact.training = TrainingGraph(view, update_ops, train_ops,
                                          "the train_op collection" if train_ops else None)
    return view
