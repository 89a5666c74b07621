"""SavedModel directories, TF1 (a graph and its signatures) and TF2 (an object graph and functions).

Only ``saved_model.pb`` is parsed and ``variables/`` read as a checkpoint;
``tf.saved_model.load`` is never called, so no function in the model runs.
A TF2 SavedModel's variables are matched to layers through the SavedObjectGraph,
whose node ids are those of the checkpoint's object graph, and whose variables
carry their Python-side names (``bn1/moving_mean``).
"""

from __future__ import annotations

import json
import os
import re

from bnaudit.graph.bundle import Bundle
from bnaudit.graph.checkpoint import (checkpoint_artifact, node_paths, object_graph_layers, object_graph_step,
                                      read_values, variable_keys)
from bnaudit.graph.metagraph import apply_meta_graph
from bnaudit.graph.model import Artifact, ArtifactError, BNLayer, InferencePath, natural_key
from bnaudit.graph.oplayers import common_scope, layers_from_ops, origin, scope_of
from bnaudit.graph.protos import read_proto, tf_module
from bnaudit.graph.tfgraph import GraphView

_INFERENCE_NAME = re.compile(r"serv|predict|infer", re.IGNORECASE)
_SKIP_SIGNATURES = {"__saved_model_init_op", "__saved_model_train_op"}


def parse_saved_model(directory: str, display: str):
    saved_model_pb2 = tf_module("tensorflow.core.protobuf.saved_model_pb2")

    binary = os.path.join(directory, "saved_model.pb")
    text = os.path.join(directory, "saved_model.pbtxt")
    path = binary if os.path.exists(binary) else text
    model = read_proto(path, saved_model_pb2.SavedModel(), display=display, what="a SavedModel",
                       text=path != binary)
    if not model.meta_graphs:
        raise ArtifactError(display, f"expected a SavedModel; {os.path.basename(path)} holds no MetaGraph")
    return model


def _pick_meta_graph(model):
    for meta in model.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    return model.meta_graphs[0]


def read_saved_model(directory: str, display: str | None = None) -> Artifact:
    display = display or directory
    model = _pick_meta_graph(parse_saved_model(directory, display))
    prefix = os.path.join(directory, "variables", "variables")
    bundle = Bundle(prefix, display) if os.path.exists(prefix + ".index") else None
    view = GraphView.from_graph_def(model.graph_def, "SavedModel")
    if model.HasField("object_graph_def") and len(model.object_graph_def.nodes) > 0:
        # Its main graph only restores variables and calls functions: nothing to declare.
        artifact = _tf2_layers(display, directory, model, bundle, view)
        artifact.graph = view
    elif bundle is not None:
        artifact = checkpoint_artifact(bundle, kind="TF1 SavedModel")
        apply_meta_graph(artifact, model, view, read=bundle.saved)
    else:
        artifact = Artifact(display, "TF1 SavedModel (no variables)")
        apply_meta_graph(artifact, model, view)
    artifact.inference = _inference_paths(model, view)
    return artifact


def _tf2_layers(display: str, directory: str, model, bundle: Bundle | None, view: GraphView) -> Artifact:
    artifact = Artifact(display, "TF2 SavedModel", has_values=bundle is not None)
    if bundle is None:
        variables = sum(node.WhichOneof("kind") == "variable" for node in model.object_graph_def.nodes)
        if variables:
            artifact.damage.append(f"its object graph holds {variables} variables but variables/ holds no "
                                   "checkpoint (variables.index): the model cannot be loaded, nothing was audited")
        return artifact
    ckpt_graph = bundle.object_graph()
    if ckpt_graph is None:
        raise ArtifactError(display, "expected a TF2 SavedModel's variables to carry an object graph; none found")
    # The SavedObjectGraph has the same node ids and knows each variable's name, even where the
    # checkpoint's object graph recorded none.
    objects = model.object_graph_def
    for node_id, node in enumerate(objects.nodes):
        if node.WhichOneof("kind") == "variable" and node.variable.name and node_id < len(ckpt_graph.nodes):
            for attribute in ckpt_graph.nodes[node_id].attributes:
                if not attribute.full_name:
                    attribute.full_name = node.variable.name.split(":", 1)[0]
    copies = _copies(ckpt_graph, _served_nodes(model))
    for scope, roles in sorted(object_graph_layers(ckpt_graph).items(), key=lambda item: natural_key(item[0])):
        layer = BNLayer(scope, keys={role: copies.get(key, (key, []))[0] for role, key in roles.items()})
        read_values(layer, bundle)
        _compare_copies(artifact, layer, copies, bundle)
        artifact.layers.append(layer)
    _keras_metadata(directory, objects, ckpt_graph, artifact)
    unnamed = _function_layers(model, view, ckpt_graph, bundle,
                               known={key for layer in artifact.layers for key in layer.keys.values()})
    if unnamed:
        artifact.layers = sorted(artifact.layers + unnamed, key=lambda layer: natural_key(layer.name))
        artifact.notes.append(f"{len(unnamed)} batch-norm layer(s) found from the ops that normalize in the "
                              "model's functions (their variables carry no batch-norm names)")
    artifact.step, artifact.step_source = object_graph_step(ckpt_graph, bundle)
    return artifact


def _saved_metadata_class():
    """tf.keras's ``SavedMetadata`` message (keras_metadata.pb), declared here: no tf_keras import."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="bnaudit/keras_saved_metadata.proto", package="bnaudit.keras")
    saved_object = proto.message_type.add(name="SavedObject")
    for name, number, kind in (("node_id", 2, field.TYPE_INT32), ("node_path", 3, field.TYPE_STRING),
                               ("identifier", 4, field.TYPE_STRING), ("metadata", 5, field.TYPE_STRING)):
        saved_object.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    proto.message_type.add(name="SavedMetadata").field.add(
        name="nodes", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
        type_name=".bnaudit.keras.SavedObject")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bnaudit.keras.SavedMetadata"))


def _layer_metadata(directory: str, objects) -> dict[int, str]:
    """Object-graph node id -> the JSON tf.keras wrote for that layer (inline, or in keras_metadata.pb)."""
    out = {node_id: node.user_object.metadata for node_id, node in enumerate(objects.nodes)
           if node.WhichOneof("kind") == "user_object" and node.user_object.metadata}
    path = os.path.join(directory, "keras_metadata.pb")
    if os.path.isfile(path):
        try:
            metadata = read_proto(path, _saved_metadata_class()(), display=path, what="keras_metadata.pb")
        except ArtifactError:
            return out  # damaged metadata only costs the class names and momenta
        for node in metadata.nodes:
            out.setdefault(node.node_id, node.metadata)
    return out


def _served_nodes(model) -> set[int]:
    """Object-graph ids of the variables the model's functions capture: what serving reads."""
    return {node_id for concrete in model.object_graph_def.concrete_functions.values()
            for node_id in concrete.bound_inputs}


def _copies(ckpt_graph, served: set[int]) -> dict[str, tuple[str, list[str]]]:
    """Checkpoint key -> (the copy to read, every other copy of the same variable).

    Keras 3's ``model.export()`` saves each variable twice (``variables/N`` and ``_all_variables/M``,
    one variable name); the copy the serving functions capture is the one that is read.
    """
    by_name: dict[str, list[tuple[int, str]]] = {}
    for node_id, (key, full_name) in variable_keys(ckpt_graph).items():
        if full_name:
            by_name.setdefault(full_name, []).append((node_id, key))
    out = {}
    for entries in by_name.values():
        if len(entries) < 2:
            continue
        entries.sort(key=lambda entry: (entry[0] not in served, entry[0]))
        chosen = entries[0][1]
        for _, key in entries:
            out[key] = (chosen, [other for _, other in entries if other != chosen])
    return out


def _compare_copies(artifact: Artifact, layer: BNLayer, copies, bundle: Bundle) -> None:
    """A value saved twice must be saved the same twice (each read verifies its own checksum)."""
    import numpy as np

    for role, key in layer.keys.items():
        value = layer.values.get(role)
        if not isinstance(value, np.ndarray):
            continue
        for other in copies.get(key, (key, []))[1]:
            copy = bundle.saved(other)
            if copy is None or copy.shape != value.shape or not np.array_equal(copy, value, equal_nan=True):
                artifact.damage.append(f"layer {layer.name!r}: the two saved copies of its {role} differ "
                                       f"({key.split('/.ATTRIBUTES')[0]} and {other.split('/.ATTRIBUTES')[0]})")


def _keras_metadata(directory: str, objects, ckpt_graph, artifact: Artifact) -> None:
    """Class and momentum of the Keras batch-norm layers a SavedModel describes in JSON: the
    momentum is the decay BN009 needs."""
    keys = variable_keys(ckpt_graph)
    for node_id, text in _layer_metadata(directory, objects).items():
        if "BatchNormalization" not in text or node_id >= len(objects.nodes):
            continue
        try:
            metadata = json.loads(text)
        except ValueError:
            continue
        if not isinstance(metadata, dict) or "BatchNormalization" not in str(metadata.get("class_name")):
            continue
        children = {child.local_name: child.node_id for child in objects.nodes[node_id].children}
        key = keys.get(children.get("moving_mean", -1), ("",))[0]
        layer = next((layer for layer in artifact.layers if key and key in layer.keys.values()), None)
        if layer is None:
            continue
        layer.class_name = str(metadata["class_name"])
        config = metadata.get("config")
        momentum = config.get("momentum") if isinstance(config, dict) else None
        if isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and layer.decay is None:
            layer.decay, layer.decay_source = float(momentum), "SavedModel metadata momentum"


def _function_layers(model, view: GraphView, ckpt_graph, bundle: Bundle, known: set[str]) -> list[BNLayer]:
    """Layers whose variables only the normalizing op identifies, read through the captured resources.

    A concrete function's last inputs are the resources it captured (``bound_inputs``, object-graph
    node ids); each is bound to that variable's checkpoint key, and calls pass the binding on.
    """
    keys = variable_keys(ckpt_graph)
    paths = node_paths(ckpt_graph)
    path_of = {key: paths.get(node_id, key) for node_id, (key, _) in keys.items()}
    scans = []
    for name, concrete in model.object_graph_def.concrete_functions.items():
        body = view.function(name)
        bound = list(concrete.bound_inputs)
        if body is None or not bound:
            continue
        captured = body.args[len(body.args) - len(bound):]
        bindings = {arg: keys[node_id][0] for arg, node_id in zip(captured, bound) if node_id in keys}
        if bindings:
            scans.append((body, bindings))
            scans += list(view.reachable_functions(body, list(body.nodes), bindings))

    def locate(body, ref, bindings):
        key = bindings.get(origin(body, ref) or "")
        return (key, bundle.read(key)) if key in bundle.shapes else None

    def name(norm, roles):
        return common_scope(path_of.get(key, key) for key in roles.values()) or scope_of(norm)

    return layers_from_ops(view, scans, locate, known, name)


def _inference_paths(model, view: GraphView) -> list[InferencePath]:
    paths = []
    for key, signature in sorted(model.signature_def.items()):
        if key in _SKIP_SIGNATURES or "train" in signature.method_name:
            continue
        outputs = [tensor.name for tensor in signature.outputs.values() if tensor.name]
        fed = {tensor.name.split(":", 1)[0] for tensor in signature.inputs.values() if tensor.name}
        paths.append(InferencePath(f"signature {key!r}", view, outputs=outputs, fed=fed))
    if model.HasField("object_graph_def"):
        objects = model.object_graph_def
        names = {node_id: node.variable.name for node_id, node in enumerate(objects.nodes)
                 if node.WhichOneof("kind") == "variable"}
        for child in objects.nodes[0].children if objects.nodes else ():
            node = objects.nodes[child.node_id]
            if node.WhichOneof("kind") != "function" or not _INFERENCE_NAME.search(child.local_name) \
                    or "train" in child.local_name.lower():
                continue
            functions = []
            for concrete in node.function.concrete_functions:
                fn = view.library.get(concrete)
                if fn is None:
                    continue
                bound = list(objects.concrete_functions[concrete].bound_inputs)
                args = [arg.name for arg in fn.signature.input_arg]
                captured = args[len(args) - len(bound):] if bound else []
                bindings = {arg: names[node_id] for arg, node_id in zip(captured, bound) if names.get(node_id)}
                functions.append((concrete, bindings))
            if functions:
                paths.append(InferencePath(f"function {child.local_name!r}", view, functions=functions))
    return paths
