"""What every reader hands to the checks: batch-norm layers and the facts of one artifact.

Readers differ wildly (protos, tensor bundles, HDF5, zip+JSON); the checks must
not.  So each reader fills in the same small model, and a check never needs to
know which kind of file a value came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GAMMA = "gamma"
BETA = "beta"
MEAN = "moving_mean"
VARIANCE = "moving_variance"
ROLES = (GAMMA, BETA, MEAN, VARIANCE)
MOVING = (MEAN, VARIANCE)
PARAMS = (GAMMA, BETA)

# What a freshly built batch-norm layer holds before any training step.
DEFAULT_INITIAL = {GAMMA: 1.0, BETA: 0.0, MEAN: 0.0, VARIANCE: 1.0}

_SUFFIX_RE = re.compile(r"_\d+$")
_DIGITS_RE = re.compile(r"(\d+)")


# Elements one batch-norm vector may have before bnaudit refuses to materialize it (16M channels):
# a damaged or hostile file can declare 10**9 elements in a few bytes.
MAX_VALUES = 1 << 24


@dataclass(frozen=True)
class Unreadable:
    """A value a reader declined to materialize, and why (screened out before any check)."""

    reason: str


def bounded(size: int, read):
    """``read()``, unless ``size`` elements are more than a batch-norm vector can be."""
    if size > MAX_VALUES:
        return Unreadable(f"declares {size:,} elements, too many for a batch-norm vector; not read")
    return read()


class ArtifactError(Exception):
    """An input that cannot be audited; rendered as ``bnaudit: error: <path>: <message>``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def natural_key(name: str) -> tuple:
    """Sort key that puts ``batch_normalization_2`` before ``batch_normalization_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS_RE.split(name) if part)


def split_role(name: str) -> tuple[str, str] | None:
    """``scope/moving_mean:0`` -> (``scope``, ``moving_mean``); None when the last part is no role.

    A numeric suffix on the last part (``moving_mean_1``, as TF uniquifies graph
    nodes) is tolerated; the scope is kept as written.
    """
    name = name.split(":", 1)[0]
    scope, _, last = name.rpartition("/")
    if last not in ROLES:
        last = _SUFFIX_RE.sub("", last)
    if last in ROLES:
        return scope, last
    return None


@dataclass
class BNLayer:
    """One batch-norm layer, however the artifact spells it."""

    name: str
    # Roles the graph or config says the layer has (empty when the artifact has no graph).
    declared: set[str] = field(default_factory=set)
    # Graph variables (or constants) of a layer found from its ops, whose names say no role.
    variables: set[str] = field(default_factory=set)
    # Role -> where the saved value lives (checkpoint key, HDF5 dataset, Const node).
    keys: dict[str, str] = field(default_factory=dict)
    # Role -> the saved value, read by the reader (only batch-norm tensors are ever read).
    values: dict[str, np.ndarray] = field(default_factory=dict)
    initial: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_INITIAL))
    decay: float | None = None
    decay_source: str | None = None
    class_name: str | None = None
    # The project's own layer bias-corrects its averages, so a slow decay is harmless there.
    bias_corrected: bool = False

    @property
    def saved(self) -> set[str]:
        return set(self.keys)

    @property
    def channels(self) -> int | None:
        for role in ROLES:
            value = self.values.get(role)
            if value is not None:
                return int(np.size(value))
        return None

    def at_initializer(self, role: str) -> bool | None:
        """Whether a saved value still equals its initializer exactly (None when not saved)."""
        value = self.values.get(role)
        if value is None:
            return None
        init = self.initial.get(role)
        if init is None:
            return None
        return bool(np.all(np.asarray(value, dtype=np.float64) == init))

    def untouched(self) -> bool | None:
        """Every saved role still at its initializer: the layer never took a step."""
        flags = [self.at_initializer(role) for role in ROLES if role in self.values]
        flags = [flag for flag in flags if flag is not None]
        if not flags:
            return None
        return all(flags)


@dataclass
class TrainingGraph:
    """What BN001 needs: the graph, its UPDATE_OPS and what trains it."""

    graph: Any  # bnaudit.graph.tfgraph.GraphView
    update_ops: list[str]
    train_ops: list[str]
    train_ops_source: str | None = None


@dataclass
class InferencePath:
    """A serving signature or exported inference function (BN011)."""

    label: str  # "signature 'serving_default'", "function 'serve'", "frozen graph"
    graph: Any  # GraphView
    outputs: list[str] = field(default_factory=list)  # tensor names in the top-level graph
    fed: set[str] = field(default_factory=set)  # placeholders the caller feeds
    functions: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (function, arg bindings)


@dataclass
class Artifact:
    path: str
    kind: str
    layers: list[BNLayer] = field(default_factory=list)
    step: int | None = None
    step_source: str | None = None
    has_graph: bool = False  # a MetaGraph, GraphDef or Keras config declared the layers
    has_values: bool = False
    graph: Any = None  # GraphView used for BN002's structural check
    training: TrainingGraph | None = None
    inference: list[InferencePath] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What is wrong with the file itself (a value of the wrong type or length): reported as errors.
    damage: list[str] = field(default_factory=list)

    def layer(self, name: str) -> BNLayer | None:
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None

    def layer_for_variable(self, variable: str | None) -> BNLayer | None:
        """The layer that owns a variable name (``scope/moving_mean``), if any."""
        if not variable:
            return None
        node = variable.split(":", 1)[0]
        for layer in self.layers:
            if node in layer.variables:
                return layer
        parts = split_role(variable)
        if parts is None:
            return None
        scope, role = parts
        for layer in self.layers:
            if layer.name == scope or layer.keys.get(role, "").split(":")[0] == variable:
                return layer
        return None


def screen(artifact: Artifact) -> None:
    """Take out of every layer the values no batch norm can have, each recorded as damage.

    A moving statistic that is an integer, a scalar, empty, unreadable, or of another length than
    the layer's other vectors is a damaged file, not a value to judge: checks never see it.
    """
    for layer in artifact.layers:
        kept: dict[str, np.ndarray] = {}
        for role in ROLES:
            if role not in layer.values:
                continue
            value = layer.values[role]
            problem = None
            if isinstance(value, Unreadable):
                problem = value.reason
            else:
                value = np.asarray(value)
                if value.dtype.kind != "f":
                    problem = f"holds {value.dtype} values, not floating point"
                elif value.ndim == 0:
                    problem = "is a scalar, not one value per channel"
                elif value.size == 0:
                    problem = "is empty"
            if problem:
                artifact.damage.append(f"layer {layer.name!r}: {role} {problem}")
            else:
                kept[role] = value
        shapes = [value.shape for value in kept.values()]
        if len(set(shapes)) > 1:
            common = max(set(shapes), key=shapes.count)
            for role, value in list(kept.items()):
                if value.shape != common and shapes.count(common) > 1:
                    artifact.damage.append(f"layer {layer.name!r}: {role} has shape {list(value.shape)} where the "
                                           f"layer's other vectors have {list(common)}")
                    del kept[role]
        layer.values = kept
