"""BN008: ``tf.cond`` choosing between two batch-norm layers instead of passing the flag to one."""

from __future__ import annotations

from dataclasses import dataclass

from bnaudit import catalogue, faults
from bnaudit.fixes import Applicability, Edit, Fix
from bnaudit.signatures import COND, arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Frame, Program
from bnaudit.source.rules import Rule, to_bnaudit

INSIDE, OUTSIDE = "inside", "outside"


class CondDuplicatedBatchNorm(Rule):
    code = "BN008"
    invalid = (
        """
import tensorflow as tf
from tensorflow.contrib.layers import batch_norm
def batch_norm_layer(x, train_phase, scope_bn):
    bn_train = batch_norm(x, decay=0.9, is_training=True, updates_collections=None, scope=scope_bn)
    bn_inference = batch_norm(x, decay=0.9, is_training=False, updates_collections=None, reuse=True,
                              scope=scope_bn)
    z = tf.cond(train_phase, lambda: bn_train, lambda: bn_inference)  # expect: BN008
    return z
""",
    )
    valid = (
        """
import tensorflow as tf
from tensorflow.contrib.layers import batch_norm
def batch_norm_layer(x, train_phase, scope_bn):
    return batch_norm(x, decay=0.9, is_training=train_phase, updates_collections=None, scope=scope_bn)
def pick(flag, a, b):
    return tf.cond(flag, lambda: tf.nn.relu(a), lambda: tf.identity(b))
""",
        # A hand-written batch norm: tf.nn.batch_normalization is math on the statistics it is given,
        # so a cond between the batch's moments and the averages is the only way to write it.
        """
import tensorflow as tf
def batch_norm(x, is_training, decay=0.99):
    scale, offset = tf.Variable(tf.ones([8])), tf.Variable(tf.zeros([8]))
    pop_mean = tf.Variable(tf.zeros([8]), trainable=False)
    pop_var = tf.Variable(tf.ones([8]), trainable=False)
    def batch():
        mean, var = tf.nn.moments(x, [0])
        with tf.control_dependencies([tf.assign(pop_mean, pop_mean * decay + mean * (1 - decay)),
                                      tf.assign(pop_var, pop_var * decay + var * (1 - decay))]):
            return tf.nn.batch_normalization(x, mean, var, offset, scale, 1e-3)
    return tf.cond(is_training, batch,
                   lambda: tf.nn.batch_normalization(x, pop_mean, pop_var, offset, scale, 1e-3))
""",
    )

    fixes = (
        ("""
import tensorflow.compat.v1 as tf
def bn(x, is_training):
    return tf.cond(is_training,
                   lambda: tf.layers.batch_normalization(x, training=True, name="bn"),
                   lambda: tf.layers.batch_normalization(x, training=False, name="bn", reuse=True))
x = tf.placeholder(tf.float32, [None, 4])
flag = tf.placeholder(tf.bool, [])
y = bn(x, flag)
""", """
import tensorflow.compat.v1 as tf
import bnaudit.layers
def bn(x, is_training):
    return bnaudit.layers.batch_norm(x, is_training, name="bn")
x = tf.placeholder(tf.float32, [None, 4])
flag = tf.placeholder(tf.bool, [])
y = bn(x, flag)
"""),
    )

    def check(self, program: Program) -> None:
        for cond in cond_layers(program):
            if OUTSIDE in cond.kinds:
                self.report(cond.module, cond.call.loc,
                           "tf.cond picks between two batch-norm layers built outside it: both run on every step",
                           fix="Build one batch norm and pass the boolean tensor as its "
                               "`is_training`/`training` argument.")
            elif cond.stateless:
                continue  # math on one set of variables, built once outside the cond: a hand-written layer
            elif cond.shared is not False:
                self.report(cond.module, cond.call.loc,
                           "tf.cond picks between two batch-norm layers that share variables: correct, but "
                           "the graph holds two layers and duplicated moments",
                           fix="Use one layer and pass the boolean tensor as `is_training`/`training`.",
                           severity=faults.WARNING, autofix=self._one_layer(cond))
            else:
                self.report(cond.module, cond.call.loc,
                           "tf.cond picks between two batch-norm layers that do not share variables: the "
                           "evaluation branch normalizes with statistics that are never trained",
                           fix="Use one layer and pass the boolean tensor as `is_training`/`training`.",
                           autofix=self._one_layer(cond))

    @staticmethod
    def _one_layer(cond: CondLayers) -> Fix | None:
        """`tf.cond(flag, lambda: bn(x, training=True), lambda: bn(x, training=False, reuse=True))` becomes
        `bnaudit.layers.batch_norm(x, flag)`: one layer, given the flag tensor."""
        pred = arg(cond.call.value, COND, "pred")
        layers = sorted(cond.written, key=lambda use: use.call.loc)
        if not isinstance(pred, V.Ref) or len(layers) != 2 or not all(to_bnaudit.can_convert(u) for u in layers):
            return None
        first, second = (use.args.get(use.api.params[0]) for use in layers)
        if first is None or second is None or not _same(first.value, second.value):
            return None   # the branches normalize different inputs
        return Fix("Build one `bnaudit.layers.batch_norm` given the flag tensor",
                   (*to_bnaudit.convert(layers[0], training=pred.name),
                    Edit.hoist(cond.call.loc, layers[0].call.loc)), Applicability.UNSAFE)


@dataclass
class CondLayers:
    """A tf.cond whose two branches each yield a batch-norm layer."""
    module: ModuleFacts
    call: CallFact
    kinds: list[str]
    shared: bool | None
    # The call in the cond (a batch norm, or the wrapper that builds one) of the later branch.
    later: tuple[ModuleFacts, CallFact] | None
    # Every normalization inside is stateless math (tf.nn.batch_normalization) written in the branch
    # itself, not in a function the branch calls to build a layer: its variables were built outside.
    stateless: bool = False
    # The layers whose calls are written in the cond's branches themselves.
    written: tuple[BatchNormUse, ...] = ()


def cond_layers(program: Program) -> list[CondLayers]:
    cache = program.__dict__.setdefault("_cond_layers", [])
    if cache:
        return cache[0]
    found: list[CondLayers] = []
    if program.batch_norms:
        for module, call in program.calls_to(catalogue.COND):
            func = call.value.func
            # Spelled as a cond, not merely resolving to one through a checked module.
            if isinstance(func, V.Dotted) and func.name not in catalogue.COND or \
                    isinstance(func, V.Attr) and func.attr not in catalogue.COND_NAMES:
                continue
            frame = program.lexical(module, call.scope)
            branches = _branches(call.value)
            if len(branches) != 2:
                continue
            kinds = [_kind(program, branch, frame) for branch in branches]
            if None in kinds:
                continue
            inside = _inside(program, module, call)
            later = max(inside, key=lambda pair: pair[1][1].loc)[1] if inside else None
            stateless = bool(inside) and all(not use.api.stateful and where[1] is use.call for use, where in inside)
            written = tuple(use for use, where in inside if where[1] is use.call)
            found.append(CondLayers(module, call, kinds, _shared(program, [use for use, _ in inside]), later,
                                    stateless, written))
    cache.append(found)
    return found


def selected_layers(program: Program) -> set[int]:
    """Call values of layers built outside a tf.cond that picks between them (BN008's first case):
    what runs of the graph get from them is the cond's choice, not theirs."""
    out: set[int] = set()
    for cond in cond_layers(program):
        frame = program.lexical(cond.module, cond.call.scope)
        for branch in _branches(cond.call.value):
            located = program.deref(branch, frame)
            if isinstance(located.value, V.Lambda):
                out.add(id(program.deref(located.value.body, located.frame).value))
    return out


def _same(a: V.Value, b: V.Value) -> bool:
    """The same name, read in the two branches' lambdas (which bind nothing of their own)."""
    return isinstance(a, V.Ref) and isinstance(b, V.Ref) and a.name == b.name


def _branches(call: V.Call) -> list[V.Value]:
    """The two branch functions: `true_fn`/`false_fn`, by position or keyword, or TF 1.x's `fn1`/`fn2`."""
    found = [given for name in ("true_fn", "false_fn") if (given := arg(call, COND, name)) is not None]
    found += [given for name in ("fn1", "fn2") if (given := call.kwarg(name)) is not None]
    return found[:2]


def _kind(program: Program, branch: V.Value, frame: Frame) -> str | None:
    building = S.building_functions(program)
    located = program.deref(branch, frame)
    value = located.value
    if isinstance(value, V.FunctionRef):
        target = program.function(value)
        return INSIDE if target and (id(target[0]), target[1].qualname) in building else None
    if not isinstance(value, V.Lambda):
        return None
    body = value.body
    kind = INSIDE
    if isinstance(body, V.Ref):
        body = program.deref(body, frame).value
        kind = OUTSIDE
    if not isinstance(body, V.Call):
        return None
    if any(use.call.value is body for use in program.batch_norms if use.how != "construct"):
        return kind
    target = program.callee(body, frame)
    if target is not None and (id(target[0]), target[1].qualname) in building:
        return kind
    return None


def _inside(program: Program, module: ModuleFacts, cond: CallFact
            ) -> list[tuple[BatchNormUse, tuple[ModuleFacts, CallFact]]]:
    """The layers built within the cond's branches, each with its call inside the cond."""
    out = []
    for use in _uses_by_module(program).get(id(module), ()):
        for where in use.chain:
            if where[0] is module and cond.loc < where[1].loc <= cond.end:
                out.append((use, where))
                break
    return out


def _uses_by_module(program: Program) -> dict[int, list[BatchNormUse]]:
    """Layers indexed by every module their call chains pass through."""
    cache = program.__dict__.setdefault("_uses_by_module", [])
    if not cache:
        index: dict[int, list[BatchNormUse]] = {}
        for use in program.batch_norms:
            for module_id in {id(module) for module, _ in use.chain}:
                index.setdefault(module_id, []).append(use)
        cache.append(index)
    return cache[0]


def _shared(program: Program, inside: list[BatchNormUse]) -> bool | None:
    """Whether the branches' layers share variables: True (one reuses the other's scope), False (each
    creates its own), None (cannot tell).  Judged per activation of the cond (a wrapper called for
    several layers pairs each layer's two branches, not one layer's with another's)."""
    by_activation: dict[tuple, list[BatchNormUse]] = {}
    for use in inside:
        key = tuple(id(frame.site) for frame in use.site.frame.chain())
        by_activation.setdefault(key, []).append(use)
    verdicts = [_shared_pair(program, group) for group in by_activation.values()]
    if False in verdicts:
        return False
    if None in verdicts or not verdicts:
        return None
    return True


def _shared_pair(program: Program, inside: list[BatchNormUse]) -> bool | None:
    if len(inside) < 2:
        return None
    reuses = [S.reuse_of(program, use) for use in inside]
    if all(reuse is False for reuse in reuses):
        return False
    if any(reuse is True for reuse in reuses):
        scopes = {S.variable_scope_of(program, use) for use in inside}
        if None not in scopes and len(scopes) > 1:
            return False
        return True
    return None
