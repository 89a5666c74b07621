"""What a graph declares: batch-norm variables, their decays, UPDATE_OPS and the train op.

Shared by every artifact that carries a graph (``.meta``, SavedModel, frozen
GraphDef).  The graph is the ground truth for what a layer *has*: a checkpoint
that lacks ``moving_mean`` is only a fault (BN004) because the graph has it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bnaudit.graph.model import (MOVING, Artifact, ArtifactError, BNLayer, TrainingGraph, bounded, natural_key,
                                 split_role)
from bnaudit.graph.oplayers import common_scope, layers_from_ops, origin, scope_of
from bnaudit.graph.protos import read_proto, tf_module
from bnaudit.graph.tfgraph import ASSIGN_OPS, VARIABLE_OPS, GraphView, const_elements, const_value, is_moving_stat

UPDATE_OPS = "update_ops"
TRAIN_OP = "train_op"


def parse_meta_graph(path: str, data: bytes | None = None):
    meta_graph_pb2 = tf_module("tensorflow.core.protobuf.meta_graph_pb2")

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


def graph_decays(view: GraphView, owners: dict[str, str]) -> dict[str, tuple[float, str]]:
    """``{scope: (decay, where it was read)}`` from the moving-average assign ops.

    ``owners`` maps the moving statistics of layers found from their ops (``pop_mean``) to
    their layer; any other variable counts by its name (``bn/moving_mean``).
    """
    out: dict[str, tuple[float, str]] = {}
    body = view.main

    def owner(variable: str | None) -> str | None:
        if variable in owners:
            return owners[variable]
        return split_role(variable)[0] if is_moving_stat(variable) else None

    for name, node in body.nodes.items():
        if node.op not in ASSIGN_OPS:
            continue
        scope = owner(view.assigned_variable(body, name))
        if scope is None:
            continue
        decay = view.moving_average_decay(body, name)
        if decay is None:
            continue
        if scope not in out or decay > out[scope][0]:
            out[scope] = (decay, name)
    for norm in view.normalizations(body):
        if norm.fused_training and norm.avg_factor != 1.0:
            scope = owner(view.resolve_variable(body, norm.mean))
            if scope is not None:
                out.setdefault(scope, (1.0 - norm.avg_factor, norm.node))
    return out


def _averaged_tensors(view: GraphView) -> dict[str, str]:
    """Tensor -> the variable a moving-average assign folds it into (``pop = pop*d + batch_mean*(1-d)``).

    A training graph's normalization uses the batch's moments; the variable that averages them
    is its moving statistic, whatever it is called.
    """
    body = view.main
    out: dict[str, str] = {}
    for name, node in body.nodes.items():
        if node.op not in ASSIGN_OPS:
            continue
        target = view.assigned_variable(body, name)
        data = body.data_refs(name)
        if target is None or len(data) < 2 or view.moving_average_decay(body, name) is None:
            continue
        frontier = [data[1].node]
        for _ in range(3):
            inputs = []
            for item in frontier:
                for ref in body.data_refs(item):
                    out.setdefault(origin(body, ref) or ref.node, target)
                    inputs.append(ref.node)
            frontier = inputs
    return out


def variable_locator(view: GraphView, read: Callable[[str], "np.ndarray | None"] | None):
    """Where an op reads a variable (or the batch moments a variable averages), and its saved
    value (None when nothing was saved for it)."""
    averaged: dict[str, str] | None = None

    def locate(body, ref, bindings):
        nonlocal averaged
        variable = view.resolve_variable(body, ref)
        if variable is None or body.op(variable) not in VARIABLE_OPS:
            if averaged is None:
                averaged = _averaged_tensors(view)
            variable = averaged.get(origin(body, ref) or ref.node)
        if variable is None:
            return None
        return variable, (read(variable) if read is not None else None)

    return locate


def apply_graph(artifact: Artifact, view: GraphView, frozen_values: bool = False,
                read: Callable[[str], "np.ndarray | None"] | None = None) -> None:
    """Merge what a graph declares into the layers read from the values.

    ``read`` gives a variable's saved value (from the checkpoint beside the graph): layers the
    names do not reveal are found from the ops that normalize, and read through it.
    """
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
                const = view.main.nodes[node]
                value = bounded(const_elements(const), lambda const=const: const_value(const))
                if value is not None:
                    layer.keys[role] = node
                    layer.values[role] = value
    declared = {layer.name for layer in artifact.layers if layer.declared}
    artifact.layers = [layer for layer in artifact.layers
                       if layer.name in declared or any(role in layer.keys for role in MOVING)]
    if not frozen_values:
        known = {key for layer in artifact.layers for key in layer.keys.values()}
        known |= {node for roles in declared_layers(view).values() for node in roles.values()}
        unnamed = layers_from_ops(view, [(view.main, {})], variable_locator(view, read), known,
                                  lambda norm, names: common_scope(names.values()) or scope_of(norm))
        if unnamed:
            artifact.layers += unnamed
            artifact.notes.append(f"{len(unnamed)} batch-norm layer(s) found from the ops that normalize "
                                  "(their variables carry no batch-norm names)")
    owners = {variable: layer.name for layer in artifact.layers for variable in layer.variables}
    for scope, (decay, source) in graph_decays(view, owners).items():
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


def apply_meta_graph(artifact: Artifact, meta, view: GraphView | None = None,
                     read: Callable[[str], "np.ndarray | None"] | None = None) -> GraphView:
    """A MetaGraph: its graph, plus the UPDATE_OPS and train_op collections BN001 needs."""
    view = view or GraphView.from_graph_def(meta.graph_def, "MetaGraph")
    apply_graph(artifact, view, read=read)
    collections = meta.collection_def
    update_ops = _node_names(collections[UPDATE_OPS].node_list.value) if UPDATE_OPS in collections else []
    train_ops = _node_names(collections[TRAIN_OP].node_list.value) if TRAIN_OP in collections else []
    if update_ops or train_ops:
        artifact.training = TrainingGraph(view, update_ops, train_ops,
                                          "the train_op collection" if train_ops else None)
    return view
