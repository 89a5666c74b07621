"""Walking a GraphDef and its function library without executing anything.

Everything the structural checks ask of a graph is answered here from the
protos alone: which variable a tensor reads, what a small constant expression
evaluates to, which cond branches are dead for a given feed, which ops a tensor
depends on, and where the batch normalizations are.  Functions (TF2 SavedModels)
are walked through their call sites, with resource arguments bound to the
caller's variables so that a ``ReadVariableOp`` deep inside still has a name.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from bnaudit.graph.model import MAX_VALUES, MEAN, VARIANCE, split_role
from bnaudit.graph.protos import tf_module

# Ops that hand their first input through unchanged, as far as a value's origin goes.
PASS_OPS = frozenset({
    "Identity", "RefIdentity", "Snapshot", "StopGradient", "PreventGradient", "CheckNumerics",
    "EnsureShape", "Enter", "RefEnter", "Exit", "RefExit", "Switch", "RefSwitch", "ReadVariableOp",
    "Cast", "Squeeze", "Reshape", "ExpandDims", "IdentityN",
})
MERGE_OPS = frozenset({"Merge", "RefMerge"})
SWITCH_OPS = frozenset({"Switch", "RefSwitch"})
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "TemporaryVariable"})
ASSIGN_OPS = frozenset({
    "Assign", "AssignSub", "AssignAdd", "AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp",
})
FUSED_BN_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "_FusedBatchNormEx"})
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
APPLY_OP_RE = re.compile(r"^(Resource)?(Sparse)?Apply[A-Z]")
# Ops a variance may pass through between the moments and the normalization.
_STAT_OPS = PASS_OPS | MERGE_OPS | frozenset({"Sub", "Maximum", "Relu", "Add", "AddV2", "Mul", "RealDiv", "Abs"})
_MOMENT_OPS = frozenset({"Mean", "SquaredDifference"})
_ARITH = {
    "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b, "Add": lambda a, b: a + b,
    "AddV2": lambda a, b: a + b, "RealDiv": lambda a, b: a / b if b else None,
    "Maximum": max, "Minimum": min,
}


class Ref(NamedTuple):
    """One input edge: producer node (or function argument), output port, control or data."""

    node: str
    port: object = 0
    control: bool = False


class Body:
    """The nodes of the top-level graph or of one FunctionDef, indexed for walking."""

    def __init__(self, name: str, nodes: Iterable, args: Iterable[str] = (), is_function: bool = False):
        self.name = name
        self.nodes = {node.name: node for node in nodes}
        self.args = list(args)
        self.arg_set = set(self.args)
        self.is_function = is_function
        self._refs: dict[str, list[Ref]] = {}
        self._consumers: dict[str, list[tuple[str, Ref]]] | None = None

    def refs(self, name: str) -> list[Ref]:
        cached = self._refs.get(name)
        if cached is not None:
            return cached
        node = self.nodes.get(name)
        out: list[Ref] = []
        function = self.is_function
        for text in (list(node.input) if node is not None else ()):
            control = text[:1] == "^"
            if control:
                text = text[1:]
            head, sep, rest = text.partition(":")
            if not sep:
                out.append(Ref(head, 0, control))
            elif function:
                out.append(Ref(head, rest, control))
            else:
                out.append(Ref(head, int(rest) if rest.isdigit() else 0, control))
        self._refs[name] = out
        return out

    def data_refs(self, name: str) -> list[Ref]:
        return [ref for ref in self.refs(name) if not ref.control]

    def op(self, name: str) -> str | None:
        node = self.nodes.get(name)
        return node.op if node is not None else None

    def consumers(self, name: str) -> list[tuple[str, Ref]]:
        if self._consumers is None:
            index: dict[str, list[tuple[str, Ref]]] = {}
            for consumer in self.nodes:
                for ref in self.refs(consumer):
                    index.setdefault(ref.node, []).append((consumer, ref))
            self._consumers = index
        return self._consumers.get(name, [])


def const_elements(node) -> int:
    """How many elements a Const node's shape declares (what decoding it would build)."""
    size = 1
    for dim in node.attr["value"].tensor.tensor_shape.dim:
        size *= max(dim.size, 0)
    return size


def const_value(node) -> np.ndarray | None:
    """A Const node's value, decoded from its proto (never executed)."""
    if node is None or node.op != "Const" or "value" not in node.attr:
        return None
    tensor_util = tf_module("tensorflow.python.framework.tensor_util")

    tensor = node.attr["value"].tensor
    if const_elements(node) > MAX_VALUES:
        return None  # one float_val and a 10**9 shape would expand to gigabytes
    try:
        return np.asarray(tensor_util.MakeNdarray(tensor))
    except Exception:
        return None


@dataclass
class GraphView:
    """A top-level graph plus its function library."""

    main: Body
    library: dict = field(default_factory=dict)  # function name -> FunctionDef
    _bodies: dict = field(default_factory=dict)

    @classmethod
    def from_graph_def(cls, graph_def, name: str = "graph") -> "GraphView":
        library = {fn.signature.name: fn for fn in graph_def.library.function}
        return cls(Body(name, graph_def.node), library)

    def function(self, name: str) -> Body | None:
        body = self._bodies.get(name)
        if body is None and name in self.library:
            fn = self.library[name]
            body = Body(name, fn.node_def, [arg.name for arg in fn.signature.input_arg], is_function=True)
            self._bodies[name] = body
        return body

    # -- calls -----------------------------------------------------------------------------

    def callees(self, body: Body, name: str) -> list[tuple[str, int]]:
        """Functions a node calls, each with the index of its first input that maps to argument 0."""
        node = body.nodes.get(name)
        if node is None:
            return []
        out: list[tuple[str, int]] = []
        if node.op in CALL_OPS and node.attr["f"].func.name:
            return [(node.attr["f"].func.name, 0)]
        if node.op in ("If", "StatelessIf"):
            return [(node.attr[key].func.name, 1) for key in ("then_branch", "else_branch")
                    if node.attr[key].func.name]
        if node.op in ("While", "StatelessWhile"):
            return [(node.attr[key].func.name, 0) for key in ("cond", "body") if node.attr[key].func.name]
        for value in node.attr.values():
            if value.HasField("func") and value.func.name:
                out.append((value.func.name, -1))
        return out

    def bind(self, body: Body, name: str, first: int, bindings: dict[str, str], callee: Body) -> dict[str, str]:
        """Bindings (callee argument -> variable name) for one call site."""
        if first < 0:
            return {}
        refs = body.data_refs(name)[first:]
        out = {}
        for arg, ref in zip(callee.args, refs):
            var = self.resolve_variable(body, ref, bindings)
            if var:
                out[arg] = var
        return out

    def reachable_functions(self, body: Body, nodes: Iterable[str], bindings: dict[str, str]) -> Iterator[tuple[Body, dict[str, str]]]:
        """Every function called from ``nodes`` (transitively), with its argument bindings."""
        seen: set[tuple[str, tuple]] = set()
        queue = deque([(body, list(nodes), bindings)])
        while queue:
            current, names, binds = queue.popleft()
            for name in names:
                for fname, first in self.callees(current, name):
                    callee = self.function(fname)
                    if callee is None:
                        continue
                    new = self.bind(current, name, first, binds, callee)
                    key = (fname, tuple(sorted(new.items())))
                    if key in seen:
                        continue
                    seen.add(key)
                    yield callee, new
                    queue.append((callee, list(callee.nodes), new))

    # -- values ----------------------------------------------------------------------------

    def resolve_variable(self, body: Body, ref: Ref, bindings: dict[str, str] | None = None,
                         live=None) -> str | None:
        """The variable a tensor reads, through reads, identities, switches and merges."""
        seen = set()
        stack = [ref]
        while stack:
            ref = stack.pop()
            if ref.node in seen:
                continue
            seen.add(ref.node)
            if body.is_function and ref.node in body.arg_set and ref.node not in body.nodes:
                var = (bindings or {}).get(ref.node)
                if var:
                    return var
                continue
            node = body.nodes.get(ref.node)
            if node is None:
                continue
            if node.op in VARIABLE_OPS:
                return node.name
            if node.op == "Const" and split_role(node.name):
                return node.name  # a frozen graph keeps the variable's name on its constant
            if node.op in PASS_OPS:
                data = body.data_refs(node.name)
                if data:
                    stack.append(data[0])
            elif node.op in MERGE_OPS:
                for data in body.data_refs(node.name):
                    if live is None or live.is_live(data):
                        stack.append(data)
        return None

    def scalar_values(self, body: Body, ref: Ref, depth: int = 10) -> set[float] | None:
        """Every value a small scalar expression can take (both sides of a cond), or None."""
        if depth <= 0:
            return None
        node = body.nodes.get(ref.node)
        if node is None:
            return None
        if node.op == "Const":
            value = const_value(node)
            if value is None or value.size != 1:
                return None
            try:
                return {float(value.reshape(()))}
            except (TypeError, ValueError):
                return None
        data = body.data_refs(node.name)
        if node.op in PASS_OPS or node.op == "PlaceholderWithDefault":
            return self.scalar_values(body, data[0], depth - 1) if data else None
        if node.op in MERGE_OPS:
            out: set[float] = set()
            for item in data:
                values = self.scalar_values(body, item, depth - 1)
                if values is None:
                    return None
                out |= values
            return out
        if node.op == "Neg" and data:
            values = self.scalar_values(body, data[0], depth - 1)
            return {-v for v in values} if values is not None else None
        if node.op in _ARITH and len(data) == 2:
            left = self.scalar_values(body, data[0], depth - 1)
            right = self.scalar_values(body, data[1], depth - 1)
            if left is None or right is None or len(left) * len(right) > 16:
                return None
            out = set()
            for a in left:
                for b in right:
                    value = _ARITH[node.op](a, b)
                    if value is not None:
                        out.add(float(value))
            return out
        return None

    def bool_values(self, body: Body, ref: Ref, fed: set[str], depth: int = 10) -> set[bool]:
        """Values a predicate can take when only ``fed`` placeholders are fed."""
        both = {True, False}
        node = body.nodes.get(ref.node)
        if node is None or depth <= 0:
            return both
        data = body.data_refs(node.name)
        if node.op == "Const":
            value = const_value(node)
            if value is not None and value.size == 1:
                return {bool(value.reshape(()))}
            return both
        if node.op == "PlaceholderWithDefault":
            if node.name in fed or not data:
                return both
            return self.bool_values(body, data[0], fed, depth - 1)
        if node.op in ("Identity", "Snapshot", "StopGradient", "Switch", "Enter", "Cast") and data:
            return self.bool_values(body, data[0], fed, depth - 1)
        if node.op == "LogicalNot" and data:
            return {not v for v in self.bool_values(body, data[0], fed, depth - 1)}
        return both

    # -- batch norm structure --------------------------------------------------------------

    def moving_average_decay(self, body: Body, assign: str) -> float | None:
        """The decay of one moving-average assign (``v -= (v - x) * (1 - d)`` or ``v = v*d + x*(1-d)``)."""
        node = body.nodes.get(assign)
        data = body.data_refs(assign)
        if node is None or len(data) < 2:
            return None
        value = body.nodes.get(data[1].node)
        candidates: set[float] = set()
        if node.op in ("AssignSub", "AssignSubVariableOp"):
            if value is None or value.op != "Mul":
                return None
            for item in body.data_refs(value.name):
                factors = self.scalar_values(body, item)
                if factors:
                    candidates = {1.0 - f for f in factors}
                    break
        elif node.op in ("Assign", "AssignVariableOp"):
            target = self.resolve_variable(body, data[0])
            if value is None or value.op not in ("Add", "AddV2"):
                return None
            for term in body.data_refs(value.name):
                mul = body.nodes.get(term.node)
                if mul is None or mul.op != "Mul":
                    continue
                refs = body.data_refs(mul.name)
                if len(refs) != 2:
                    continue
                for a, b in ((refs[0], refs[1]), (refs[1], refs[0])):
                    if target and self.resolve_variable(body, a) == target:
                        factors = self.scalar_values(body, b)
                        if factors:
                            candidates = set(factors)
        if not candidates:
            return None
        # A tensor-valued training flag makes the inference side a no-op update (decay 1).
        if len(candidates) > 1:
            candidates.discard(1.0)
        return max(candidates) if candidates else None

    def assigned_variable(self, body: Body, name: str, bindings=None) -> str | None:
        node = body.nodes.get(name)
        if node is None or node.op not in ASSIGN_OPS:
            return None
        data = body.data_refs(name)
        return self.resolve_variable(body, data[0], bindings) if data else None

    def find_assigns(self, body: Body, start: str, limit: int = 6) -> list[str]:
        """Assign ops at or just above ``start`` (an UPDATE_OPS entry may be a cond's Merge)."""
        out, seen = [], {start}
        queue = deque([(start, 0)])
        while queue:
            name, dist = queue.popleft()
            if body.op(name) in ASSIGN_OPS:
                out.append(name)
                continue
            if dist >= limit:
                continue
            for ref in body.refs(name):
                if ref.node not in seen:
                    seen.add(ref.node)
                    queue.append((ref.node, dist + 1))
        return out

    def normalizations(self, body: Body) -> list["Norm"]:
        """Every batch normalization in a body: fused ops and ``tf.nn.batch_normalization`` subgraphs."""
        out = []
        for name, node in body.nodes.items():
            if node.op in FUSED_BN_OPS:
                data = body.data_refs(name)
                if len(data) < 5:
                    continue
                training = node.attr["is_training"].b if "is_training" in node.attr else True
                factor = node.attr["exponential_avg_factor"].f if "exponential_avg_factor" in node.attr else 1.0
                out.append(Norm(body, name, node.op, data[0], data[1], data[2], data[3], data[4],
                                fused_training=training, avg_factor=factor))
            elif node.op == "Rsqrt":
                norm = self._unfused(body, name)
                if norm is not None:
                    out.append(norm)
        return out

    def _unfused(self, body: Body, rsqrt: str) -> "Norm | None":
        data = body.data_refs(rsqrt)
        if not data:
            return None
        variance = data[0]
        add = body.nodes.get(variance.node)
        if add is not None and add.op in ("Add", "AddV2"):
            refs = body.data_refs(add.name)
            consts = [r for r in refs if body.op(r.node) == "Const"]
            others = [r for r in refs if body.op(r.node) != "Const"]
            if len(consts) == 1 and len(others) == 1:
                variance = others[0]
        inv, scale = rsqrt, None
        for mul in _forward_uses(body, rsqrt, "Mul"):
            if len(_forward_uses(body, mul, "Mul")) >= 2:
                inv = mul
                scale = next((r for r in body.data_refs(inv) if r.node != rsqrt), None)
                break
        x_ref = mean_ref = offset_ref = None
        for consumer in _forward_uses(body, inv, "Mul"):
            other = next((r for r in body.data_refs(consumer) if r.node != inv), None)
            if other is None:
                continue
            uses = {body.op(c): c for c in _forward_uses(body, consumer)}
            if "Sub" in uses or "Neg" in uses:
                mean_ref = other
                sub = uses.get("Sub")
                if sub:
                    offset_ref = next((r for r in body.data_refs(sub) if r.node != consumer), None)
            elif "Add" in uses or "AddV2" in uses:
                x_ref = other
        if x_ref is None or mean_ref is None:
            return None
        return Norm(body, rsqrt, "batchnorm", x_ref, scale, offset_ref, mean_ref, variance)

    def batch_statistics(self, norm: "Norm", live=None) -> bool:
        """Whether a normalization uses the moments of its batch (not the moving averages)."""
        if norm.fused_training is not None:
            return bool(norm.fused_training)
        seen, stack = set(), [(norm.variance, 0)]
        while stack:
            ref, depth = stack.pop()
            if ref.node in seen or depth > 8:
                continue
            seen.add(ref.node)
            op = norm.body.op(ref.node)
            if op in _MOMENT_OPS:
                return True
            if op in _STAT_OPS:
                for item in norm.body.data_refs(ref.node):
                    if op in MERGE_OPS and live is not None and not live.is_live(item):
                        continue
                    if op in SWITCH_OPS and item is not norm.body.data_refs(ref.node)[0]:
                        continue
                    stack.append((item, depth + 1))
        return False

    def norm_variables(self, norm: "Norm", bindings=None, live=None) -> list[str]:
        names = []
        for ref in (norm.scale, norm.offset, norm.mean, norm.variance):
            if ref is None:
                continue
            var = self.resolve_variable(norm.body, ref, bindings, live)
            if var:
                names.append(var)
        return names

    def cond_trail(self, body: Body, ref: Ref) -> tuple[tuple[str, object], frozenset]:
        """The tensor a cond branch captured, and the (predicate, branch) pairs it went through."""
        trail = set()
        for _ in range(64):
            node = body.nodes.get(ref.node)
            if node is None:
                break
            if node.op in SWITCH_OPS:
                data = body.data_refs(node.name)
                pred = self._base(body, data[1]) if len(data) > 1 else None
                trail.add((pred, ref.port))
                ref = data[0]
            elif node.op in ("Identity", "Enter", "RefEnter", "Snapshot"):
                data = body.data_refs(node.name)
                if not data:
                    break
                ref = data[0]
            else:
                break
        return (ref.node, ref.port), frozenset(trail)

    def _base(self, body: Body, ref: Ref) -> str:
        for _ in range(32):
            node = body.nodes.get(ref.node)
            if node is None or node.op not in ("Identity", "Snapshot", "Enter"):
                break
            data = body.data_refs(node.name)
            if not data:
                break
            ref = data[0]
        return ref.node

    # -- reachability ----------------------------------------------------------------------

    def ancestors(self, body: Body, starts: Iterable[str], live=None) -> set[str]:
        """Every node a set of nodes depends on, by data or control edges (live edges only if given)."""
        seen = set()
        queue = deque(name for name in starts if name in body.nodes)
        seen.update(queue)
        while queue:
            name = queue.popleft()
            for ref in body.refs(name):
                if ref.node in seen or ref.node not in body.nodes:
                    continue
                if live is not None and not ref.control and not live.is_live(ref):
                    continue
                seen.add(ref.node)
                queue.append(ref.node)
        return seen


def _forward_uses(body: Body, name: str, op: str | None = None) -> list[str]:
    """Data consumers of a node on the forward path (gradient ops left out)."""
    return [consumer for consumer, ref in body.consumers(name)
            if not ref.control and (op is None or body.op(consumer) == op)
            and not consumer.startswith("gradients") and "/gradients" not in consumer]


@dataclass
class Norm:
    """One normalization site: the op and the tensors it normalizes with."""

    body: Body
    node: str
    op: str
    data: Ref
    scale: Ref | None
    offset: Ref | None
    mean: Ref
    variance: Ref
    fused_training: bool | None = None
    avg_factor: float = 1.0


class Liveness:
    """Which tensors of a TF1 graph can carry values, given which placeholders are fed.

    A ``Switch`` whose predicate is constant (a ``PlaceholderWithDefault`` nobody
    feeds, a ``Const``) kills one branch; deadness then flows forward exactly as
    in TF's executor: through every op, stopping only at a ``Merge`` with a live input.
    """

    def __init__(self, graph: GraphView, body: Body, fed: set[str]):
        self.body = body
        self.dead_nodes: set[str] = set()
        self.dead_ports: set[tuple[str, object]] = set()
        queue = deque()
        for name, node in body.nodes.items():
            if node.op in SWITCH_OPS:
                data = body.data_refs(name)
                if len(data) < 2:
                    continue
                values = graph.bool_values(body, data[1], fed)
                if values == {True}:
                    self.dead_ports.add((name, 0))
                    queue.append(name)
                elif values == {False}:
                    self.dead_ports.add((name, 1))
                    queue.append(name)
        while queue:
            name = queue.popleft()
            for consumer, ref in body.consumers(name):
                if consumer in self.dead_nodes:
                    continue
                if not self._edge_dead(ref):
                    continue
                if body.op(consumer) in MERGE_OPS:
                    if all(self._edge_dead(r) for r in body.data_refs(consumer)):
                        self.dead_nodes.add(consumer)
                        queue.append(consumer)
                else:
                    self.dead_nodes.add(consumer)
                    queue.append(consumer)

    def _edge_dead(self, ref: Ref) -> bool:
        if ref.node in self.dead_nodes:
            return True
        if ref.control:
            return False
        return (ref.node, ref.port) in self.dead_ports

    def is_live(self, ref: Ref) -> bool:
        return not self._edge_dead(ref)

    def node_live(self, name: str) -> bool:
        return name not in self.dead_nodes


def is_moving_stat(variable: str | None) -> bool:
    parts = split_role(variable or "")
    return bool(parts and parts[1] in (MEAN, VARIANCE))
