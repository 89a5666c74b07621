"""Batch-norm layers in a checkpoint, found by name (TF1) or through the object graph (TF2).

A TF1 checkpoint names tensors after their variables (``conv_bn/moving_mean``).
A TF2 checkpoint names them after *one* path through the object graph, and that
path need not pass through the layer: a Keras 3 model saved with its optimizer
keeps gamma under ``optimizer/_trainable_variables/1``.  So TF2 layers are found
from the object graph's edges (a node with children ``moving_mean`` and
``moving_variance`` is a batch-norm layer), and a tensor is looked up by the key
the graph records for it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from bnaudit.graph.bundle import Bundle
from bnaudit.graph.model import MOVING, PARAMS, ROLES, Artifact, BNLayer, bounded, natural_key, split_role

STEP_NAMES = ("global_step", "iterations", "_iterations", "iter", "iteration")
_VALUE_ATTR = "VARIABLE_VALUE"


def _looks_like_batch_norm(scope: str) -> bool:
    last = scope.rsplit("/", 1)[-1].lower()
    return "batch_norm" in last or "batchnorm" in last or last.startswith("bn") or last.endswith("bn") \
        or "_bn_" in last or last.startswith("norm")


def group_by_scope(names) -> dict[str, dict[str, str]]:
    """``{scope: {role: name}}`` for every name whose last part is a batch-norm role."""
    scopes: dict[str, dict[str, str]] = {}
    for name in names:
        parts = split_role(name)
        if parts is None:
            continue
        scope, role = parts
        scopes.setdefault(scope, {}).setdefault(role, name)
    return scopes


def node_paths(graph) -> dict[int, str]:
    """Shortest child-name path from the root to every object-graph node."""
    paths = {0: ""}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths and child.node_id < len(graph.nodes):
                base = paths[node_id]
                paths[child.node_id] = f"{base}/{child.local_name}" if base else child.local_name
                queue.append(child.node_id)
    return paths


def variable_keys(graph) -> dict[int, tuple[str, str]]:
    """Object-graph node id -> (checkpoint key of its value, the variable's full name)."""
    keys = {}
    for node_id, node in enumerate(graph.nodes):
        for attribute in node.attributes:
            if attribute.name == _VALUE_ATTR:
                keys[node_id] = (attribute.checkpoint_key, attribute.full_name)
    return keys


def object_graph_layers(graph) -> dict[str, dict[str, str]]:
    """``{layer: {role: key}}`` from a TF2 object graph.

    A variable's role and layer come from its full name (``sequential/bn/moving_mean``)
    when the checkpoint recorded one, else from the edge that leads to it (a layer
    object's ``moving_mean`` child) and the path to that layer.
    """
    paths = node_paths(graph)
    keys = variable_keys(graph)
    edge_role: dict[int, tuple[int, str]] = {}
    for node_id, node in enumerate(graph.nodes):
        for child in node.children:
            if child.local_name in ROLES:
                edge_role.setdefault(child.node_id, (node_id, child.local_name))
    # An optimizer's slots (Adam's `m`/`v` of `fc_bn/gamma`) carry the variable's name under the
    # optimizer's (`Adam/v/fc_bn/gamma`): they are no layer.  TF2 optimizers list them as slot
    # variables; Keras optimizers track them as their own variables, reached only from the optimizer.
    slots = {slot.slot_variable_node_id for node in graph.nodes for slot in node.slot_variables}
    slots |= {node_id for node_id in keys if node_id not in edge_role
              and paths.get(node_id, "").split("/", 1)[0] == "optimizer"}
    scopes: dict[str, dict[str, str]] = {}
    for node_id, (key, full_name) in sorted(keys.items()):
        if node_id in slots:
            continue
        parts = split_role(full_name) if full_name else None
        if parts is None and node_id in edge_role:
            parent, role = edge_role[node_id]
            parts = (paths.get(parent, str(parent)), role)
        if parts is None:
            continue
        scope, role = parts
        scopes.setdefault(scope, {}).setdefault(role, key)
    return keep_batch_norm(scopes)


def keep_batch_norm(scopes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Scopes with moving statistics, or with gamma and beta alone under a batch-norm-like name."""
    return {scope: roles for scope, roles in scopes.items()
            if any(role in roles for role in MOVING)
            or (all(role in roles for role in PARAMS) and _looks_like_batch_norm(scope))}


def object_graph_step(graph, bundle: Bundle) -> tuple[int | None, str | None]:
    """The largest optimizer iteration count (or global step) the object graph records."""
    paths = node_paths(graph)
    keys = variable_keys(graph)
    best: tuple[int | None, str | None] = (None, None)
    for node in graph.nodes:
        for child in node.children:
            if child.local_name in STEP_NAMES and child.node_id in keys:
                key = keys[child.node_id][0]
                if bundle.shapes.get(key, (1,)) != ():
                    continue
                value = bundle.read_scalar(key)
                if value is not None and (best[0] is None or value > best[0]):
                    best = (value, paths.get(child.node_id, key))
    return best


def name_step(bundle: Bundle) -> tuple[int | None, str | None]:
    for name, shape in bundle.shapes.items():
        last = name.rsplit("/", 1)[-1]
        if last == "global_step" and shape in ((), (1,)):
            return bundle.read_scalar(name), name
    return None, None


def read_values(layer: BNLayer, bundle: Bundle) -> None:
    for role, key in layer.keys.items():
        size = int(np.prod(bundle.shapes.get(key) or (1,), dtype=np.int64))
        layer.values[role] = bounded(size, lambda key=key: bundle.read(key))


def checkpoint_artifact(bundle: Bundle, kind: str | None = None) -> Artifact:
    """Every batch-norm layer a checkpoint holds, with its values, and the step count."""
    graph = bundle.object_graph()
    if graph is not None:
        artifact = Artifact(bundle.path, kind or "TF2 checkpoint", has_values=True)
        scopes = object_graph_layers(graph)
        artifact.step, artifact.step_source = object_graph_step(graph, bundle)
    else:
        artifact = Artifact(bundle.path, kind or "TF1 checkpoint", has_values=True)
        scopes = keep_batch_norm(group_by_scope(bundle.shapes))
        artifact.step, artifact.step_source = name_step(bundle)
    for scope, roles in sorted(scopes.items(), key=lambda item: natural_key(item[0])):
        layer = BNLayer(scope, keys=dict(roles))
        read_values(layer, bundle)
        artifact.layers.append(layer)
    return artifact
