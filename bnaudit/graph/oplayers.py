"""Batch-norm layers found from the ops that normalize, where no name says ``moving_mean``.

TensorFlow 2 freezes a graph (``convert_variables_to_constants_v2``) into constants
named ``unknown_3`` or ``.../ReadVariableOp/resource``, and a TF2 SavedModel's
functions read their variables as captured resources.  The normalization itself
still says which tensor is which: a ``FusedBatchNorm*`` op by input position
(x, scale, offset, mean, variance), and the unfused pattern Keras 3 and
``tf.nn.batch_normalization`` leave (``Rsqrt``/``Mul``/``Sub``/``AddV2``) by its
shape.  An inference-mode normalization whose mean and variance are saved
values is a batch-norm layer, whatever its constants are called.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from bnaudit.graph.model import BETA, GAMMA, MEAN, MOVING, VARIANCE, BNLayer
from bnaudit.graph.tfgraph import PASS_OPS, Body, GraphView, Norm, Ref, const_value

# (body, ref, bindings) -> (where the value lives, the value or None when it was not saved), or None
# when the tensor is no variable or saved value (the moments of a batch).
Locate = Callable[[Body, Ref, dict], "tuple[str, np.ndarray] | None"]
# Scopes TF adds around a call (the graph of a frozen function, an inlined call).
_CALL_SCOPES = ("StatefulPartitionedCall", "PartitionedCall")


def origin(body: Body, ref: Ref, limit: int = 64) -> str | None:
    """The node (or function argument) a tensor is read from, through reads, casts and reshapes."""
    for _ in range(limit):
        if body.is_function and ref.node in body.arg_set and ref.node not in body.nodes:
            return ref.node
        node = body.nodes.get(ref.node)
        if node is None:
            return None
        if node.op not in PASS_OPS:
            return node.name
        data = body.data_refs(node.name)
        if not data:
            return None
        ref = data[0]
    return None


def frozen_constant(body: Body, ref: Ref, bindings: dict) -> tuple[str, np.ndarray] | None:
    """A frozen graph's saved value: the ``Const`` a tensor is read from."""
    name = origin(body, ref)
    node = body.nodes.get(name) if name else None
    value = const_value(node)
    return (name, value) if value is not None else None


def scope_of(norm: Norm) -> str:
    """``model/bn/FusedBatchNormV3`` and ``model/bn/batchnorm/Rsqrt`` -> ``model/bn``."""
    parts = norm.node.split("/")[:-1]
    if parts and parts[-1] == "batchnorm":
        parts = parts[:-1]
    while parts and parts[0] in _CALL_SCOPES:
        parts = parts[1:]
    return "/".join(parts) or norm.node


def common_scope(names: Iterable[str]) -> str:
    """The scope every name lies under (``a/bn`` for ``a/bn/scale`` and ``a/bn/ema/average``)."""
    parents = [name.split("/")[:-1] for name in names]
    common = []
    for parts in zip(*parents):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def _roles(norm: Norm) -> Iterable[tuple[str, Ref | None]]:
    return ((GAMMA, norm.scale), (BETA, norm.offset), (MEAN, norm.mean), (VARIANCE, norm.variance))


def layers_from_ops(view: GraphView, scans: Iterable[tuple[Body, dict]], locate: Locate,
                    known: set[str], name: Callable[[Norm, dict], str] = lambda norm, keys: scope_of(norm)
                    ) -> list[BNLayer]:
    """One layer per inference-mode normalization over saved moving statistics not in ``known``.

    ``known`` holds the keys that layers found by name already own, so a layer is
    never counted twice; a layer called on two inputs reads the same keys twice
    and is one layer.
    """
    layers: list[BNLayer] = []
    owned = set(known)
    taken: set[str] = set()
    for body, bindings in scans:
        for norm in view.normalizations(body):
            if norm.fused_training:
                continue  # normalizes with its batch: the mean and variance inputs are not read
            found = {}
            for role, ref in _roles(norm):
                hit = locate(body, ref, bindings) if ref is not None else None
                if hit is not None and (hit[1] is None or np.size(hit[1]) > 0):
                    found[role] = hit
            if not all(role in found for role in MOVING):
                continue
            sizes = {int(np.size(value)) for _, value in found.values() if value is not None}
            if len(sizes) > 1:
                continue  # not one value per channel: some other arithmetic around an Rsqrt
            names = {role: key for role, (key, _) in found.items()}
            if owned & set(names.values()):
                continue
            owned |= set(names.values())
            base = name(norm, names)
            label, count = base, 1
            while label in taken:
                count += 1
                label = f"{base} ({count})"
            taken.add(label)
            layers.append(BNLayer(label, declared=set(found), variables=set(names.values()),
                                  keys={role: key for role, (key, value) in found.items() if value is not None},
                                  values={role: value for role, (_, value) in found.items() if value is not None}))
    return layers
