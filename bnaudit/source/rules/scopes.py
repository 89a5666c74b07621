"""BN002 and BN003: batch-norm variables created twice, never created, or reused by a tensor."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bnaudit import catalogue
from bnaudit.fixes import TF1, Applicability, Edit, Fix
from bnaudit.signatures import SESSION_RUN, VARIABLE_SCOPE, arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.executions import path_of
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Located, Program
from bnaudit.source.rules import Rule, to_bnaudit
from bnaudit.source.rules.cond import INSIDE, cond_layers

_SCOPED_FAMILIES = ("contrib/slim", "tf.layers")


@dataclass
class _Layer:
    use: BatchNormUse
    scope: str | None
    reuse: bool | None
    order: tuple[int, ...]
    chain: list[tuple[ModuleFacts, CallFact]]


class DuplicatedScope(Rule):
    code = "BN002"
    invalid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
a = tf.contrib.layers.batch_norm(x, scope='conv1')
b = tf.contrib.layers.batch_norm(x, is_training=False, scope='conv1')  # expect: BN002
""",
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
with tf.variable_scope('bnormalization') as scope:
    y = tf.contrib.layers.batch_norm(x, reuse=True, scope=scope)  # expect: BN002
""",
        """
import tensorflow.compat.v1 as tf
def discriminator(x, reuse=False):
    with tf.variable_scope('dis'):
        return tf.layers.batch_normalization(x, training=True)
x = tf.placeholder(tf.float32, [None, 4])
real = discriminator(x)
fake = discriminator(x, reuse=True)  # expect: BN002
""",
        """
import tensorflow.compat.v1 as tf
class Norm:
    def __init__(self, name):
        self.name = name
    def __call__(self, x):
        return tf.layers.batch_normalization(x, training=True, name=self.name)
norms = dict([("bn%d" % i, Norm("bn%d" % i)) for i in range(3)])
def discriminator(x):
    with tf.variable_scope("dis"):
        for i in range(3):
            x = norms["bn%d" % i](x)
        return x
real = discriminator(tf.placeholder(tf.float32, [None, 4]))
fake = discriminator(tf.placeholder(tf.float32, [None, 4]))  # expect: BN002
""",
        """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.layers.batch_normalization(x, training=True)
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
scores = tf.layers.batch_normalization(x, name="hist_bn", reuse=tf.AUTO_REUSE)  # expect: BN002
""",
        """
import tensorflow.compat.v1 as tf
def batchnorm(x, is_train, name):
    with tf.variable_scope(name):
        mean, var = tf.nn.moments(x, [0], name="moments")
        ema = tf.train.ExponentialMovingAverage(decay=0.5)
        update = ema.apply([mean, var])
        return tf.nn.batch_normalization(x, mean, var, None, None, 1e-5)
def discriminator(x, is_train, reuse=None):
    with tf.variable_scope("DIS", reuse=reuse):
        return batchnorm(x, is_train, "bn1")
is_train = tf.placeholder(tf.bool)
real = discriminator(tf.placeholder(tf.float32, [None, 4]), is_train)
fake = discriminator(tf.placeholder(tf.float32, [None, 4]), is_train, reuse=True)  # expect: BN002
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
a = tf.contrib.layers.batch_norm(x, scope='conv1')
b = tf.contrib.layers.batch_norm(x, is_training=False, reuse=True, scope='conv1')
""",
        """
import tensorflow.compat.v1 as tf
def discriminator(x, reuse=False):
    with tf.variable_scope('dis', reuse=reuse):
        return tf.layers.batch_normalization(x, training=True)
x = tf.placeholder(tf.float32, [None, 4])
real = discriminator(x)
fake = discriminator(x, reuse=True)
""",
        """
import tensorflow.compat.v1 as tf
class Norm:
    def __init__(self, name):
        self.name = name
    def __call__(self, x):
        return tf.layers.batch_normalization(x, training=True, name=self.name)
norms = dict([("bn%d" % i, Norm("bn%d" % i)) for i in range(3)])
def discriminator(x):
    with tf.variable_scope("dis", reuse=tf.AUTO_REUSE):
        for i in range(3):
            x = norms["bn%d" % i](x)
        return x
real = discriminator(tf.placeholder(tf.float32, [None, 4]))
fake = discriminator(tf.placeholder(tf.float32, [None, 4]))
""",
        """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.layers.batch_normalization(x, training=True, name="hist_bn")
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
scores = tf.layers.batch_normalization(x, name="hist_bn", reuse=tf.AUTO_REUSE)
""",
    )

    fixes = (
        ("""
import tensorflow.compat.v1 as tf
def block(x, is_training):
    return tf.layers.batch_normalization(x, training=is_training, name="bn")
x = tf.placeholder(tf.float32, [None, 4])
train_out = block(x, True)
eval_out = block(x, False)
""", """
import tensorflow.compat.v1 as tf
import bnaudit.layers
def block(x, is_training):
    return bnaudit.layers.batch_norm(x, is_training, name="bn")
x = tf.placeholder(tf.float32, [None, 4])
train_out = block(x, True)
eval_out = block(x, False)
"""),
    )

    def check(self, program: Program) -> None:
        layers = []
        for use in program.batch_norms:
            if use.api.family not in _SCOPED_FAMILIES or use.api.kind != catalogue.FUNCTION:
                continue
            sites = S.call_chain(use)
            layers.append(_Layer(use, S.variable_scope_of(program, use), S.reuse_of(program, use),
                                 tuple(call.loc for _, call in sites), sites))
            own = use.args.get(use.api.scope) if use.api.scope else None
            if own is not None and S.is_name_scope(program, own.value, own.frame):
                self.report(use.module, use.call.loc,
                           "the scope comes from `tf.name_scope(...) as scope`; variables ignore name scopes, "
                           "so this layer's variables are not where the name says and are not shared",
                           fix="Use `tf.variable_scope(...)` (or pass a plain string) as the layer's scope.")
        # Layers collide only within one graph: same top-level code, same `tf.Graph().as_default()`.
        for cond in cond_layers(program):
            if cond.kinds == [INSIDE, INSIDE] and cond.shared is False and cond.later is not None:
                module, call = cond.later
                self.report(module, call.loc,
                           "the two branches of this tf.cond build separate batch-norm variables: the layer "
                           "used for evaluation has its own moving statistics, which training never updates",
                           fix="Build one layer with the flag tensor as `training`/`is_training` (or give the "
                               "second branch the same scope with reuse=True).")
        self._averages_under_reuse(program)
        # Layers collide only when they are built in one graph of one execution.
        by_entry: dict[tuple, list[_Layer]] = {}
        for layer in layers:
            by_entry.setdefault(path_of(layer.use.site).entry, []).append(layer)
        for group in by_entry.values():
            group.sort(key=lambda layer: layer.order)
            self._duplicates(program, group)
            self._missing(program, group, layers)

    def _averages_under_reuse(self, program: Program) -> None:
        """A hand-written batch norm's ``ExponentialMovingAverage.apply([mean, var])`` names its variables
        after the moments' ops, whose name scope (``DIS_1/``) is new on every build, so under
        ``reuse=True`` the variables it asks for never exist."""
        reported: set[tuple[int, int]] = set()
        for module in program.modules:
            for call in module.calls:
                func = call.value.func
                if not (isinstance(func, V.Attr) and func.attr == "apply" and call.value.args):
                    continue
                for site in program.sites(module, call):
                    if program.live(module, call, site.frame) is False:
                        continue   # `if train:` around it, and this build passes train=False
                    owner = program.deref(func.base, site.frame)
                    if not isinstance(owner.value, V.Call) or \
                            program.qualname(owner.value.func, owner.frame) not in catalogue.EXPONENTIAL_MOVING_AVERAGE:
                        break
                    if not S.contains(program, call.value.args[0], site.frame, lambda v, f: isinstance(v, V.Call)
                                      and program.qualname(v.func, f) in catalogue.MOMENTS):
                        break
                    # Where reuse is turned on: a `variable_scope(..., reuse=True)`, a `reuse_variables()`.
                    turned_on = {f.function for c, f, _ in S.variable_scopes(program, site)
                                 if S.reuse_state(program, reuse := S.variable_scope_reuse(program, c, f)) is True
                                 and not S.is_auto_reuse(program, reuse)}
                    turned_on |= {other.scope for live, other in S.reuse_variables_on_the_way(program, site) if live}
                    if not turned_on:
                        continue
                    where, top = _entering(site.chain, turned_on)
                    if (id(where), top.loc) not in reported:
                        reported.add((id(where), top.loc))
                        self.report(where, top.loc,
                                   "`ExponentialMovingAverage.apply` under `reuse=True` asks for averages that do not "
                                   "exist (named by this build's name scope)",
                               fix="Share one batch-norm layer that keeps its moving statistics as variables "
                                   "(`bnaudit.layers.batch_norm`), or build the averages outside the reused scope.")

    def _duplicates(self, program: Program, group: list[_Layer]) -> None:
        for i, later in enumerate(group):
            if later.reuse is not False:
                continue
            for earlier in group[:i]:
                if program.executions.together(earlier.use.site, later.use.site) is not True:
                    continue
                same_call = earlier.use.call is later.use.call
                if earlier.scope is not None and earlier.scope == later.scope:
                    kind, shown = "scope", later.scope
                elif same_call and earlier.scope is None and self._same_build(earlier, later) and \
                        (pattern := S.scope_pattern(program, later.use)) is not None and \
                        pattern == S.scope_pattern(program, earlier.use):
                    # `scope='bn%d' % i` in a loop: the second build asks for the same series of names.
                    kind, shown = "scope", pattern[0]
                elif same_call and earlier.scope is None and later.scope is None and \
                        self._evaluation_copy(program, earlier, later):
                    kind = "rebuilt"
                elif same_call and self._default_named(later) and \
                        (enclosing := S.enclosing_scope(program, later.use)) and \
                        enclosing == S.enclosing_scope(program, earlier.use) and \
                        self._scope_entered_again(program, earlier, later):
                    # Re-entering `dis` restarts its default names (BatchNorm, BatchNorm_1, ...), so the
                    # second build asks for the first one's variables without reuse.
                    kind = "default"
                else:
                    continue
                module, call = self._divergence(earlier, later)
                fix = None
                if kind == "default":
                    message = (f"batch norm is built again in scope `{enclosing}` without reuse: its default "
                               f"layer names restart, so its variables already exist")
                elif kind == "scope":
                    message = f"batch-norm scope `{shown}` is created a second time without reuse"
                    # One call building its layer twice (a model built twice): a layer that shares by name
                    # is built once and reused after.  Two calls naming one scope may be a copy-paste slip
                    # (`name="conv1"` twice), where sharing would be wrong.
                    fix = to_bnaudit.fix(later.use) if same_call and later.use.module is module else None
                else:
                    message = ("the model is built a second time without `reuse=True`: batch norm "
                               f"{S.layer_label(program, later.use)} gets fresh, untrained variables")
                self.report(module, call.loc, message, autofix=fix)
                break

    @staticmethod
    def _default_named(layer: _Layer) -> bool:
        """The layer takes its variable scope's default name (no ``scope=``/``name=`` given)."""
        api = layer.use.api
        return api.scope is not None and api.scope not in layer.use.args and not layer.use.unknown_args

    @staticmethod
    def _scope_entered_again(program: Program, earlier: _Layer, later: _Layer) -> bool:
        """The two builds run in two entries of their innermost variable scope: two ``with`` statements,
        or one in two activations of its function.  Within one entry (a loop building a block six
        times) default names go on counting (BatchNorm_1, ...) and nothing collides."""
        scopes = S.variable_scopes(program, earlier.use.site), S.variable_scopes(program, later.use.site)
        if not scopes[0] or not scopes[1]:
            return True   # the graph's root scope: entered once per graph, builds in two graphs never meet
        (_, frame_a, with_a), (_, frame_b, with_b) = scopes[0][-1], scopes[1][-1]
        if with_a != with_b or frame_a is None or frame_b is None or frame_a.function != frame_b.function:
            return True
        inside = next((index for index, (_, call) in enumerate(later.chain) if call.scope == frame_b.function),
                      len(later.chain))
        return DuplicatedScope._parted_at(earlier, later) < inside

    @staticmethod
    def _same_build(earlier: _Layer, later: _Layer) -> bool:
        """The two paths part at two calls spelled alike (``self.discriminator(...)`` twice) and go the
        same way below them, so whatever picks the layer below is the same in both."""
        for level, ((_, a), (_, b)) in enumerate(zip(earlier.chain, later.chain)):
            if a is not b:
                rest_a, rest_b = earlier.chain[level + 1:], later.chain[level + 1:]
                return len(rest_a) == len(rest_b) and all(x is y for (_, x), (_, y) in zip(rest_a, rest_b)) \
                    and V.spelled_alike(a.value.func, b.value.func)
        return False

    @staticmethod
    def _parted_at(earlier: _Layer, later: _Layer) -> int:
        """The index in the call chains of the first call where the two builds' paths differ."""
        return next((index for index, ((_, a), (_, b)) in enumerate(zip(earlier.chain, later.chain)) if a is not b),
                    min(len(earlier.chain), len(later.chain)))

    @classmethod
    def _divergence(cls, earlier: _Layer, later: _Layer) -> tuple[ModuleFacts, CallFact]:
        """The later build's call where its path leaves the earlier one's (its last call if none)."""
        index = cls._parted_at(earlier, later)
        return later.chain[index] if index < min(len(earlier.chain), len(later.chain)) else later.chain[-1]

    @staticmethod
    def _evaluation_copy(program: Program, earlier: _Layer, later: _Layer) -> bool:
        """The later copy of the model is built beside the trained one, for evaluation: the earlier
        copy's output reaches a train op's loss and the later one's reaches none."""
        flow = program.dataflow
        from bnaudit.source.rules.training import _same_callee_where_paths_part
        return flow.feeds_training(earlier.use) is True and flow.feeds_training(later.use) is False and \
            _same_callee_where_paths_part(program, earlier.use, later.use)

    def _missing(self, program: Program, group: list[_Layer], everything: list[_Layer]) -> None:
        for layer in group:
            if layer.reuse is not True or layer.scope is None:
                continue
            explicit = layer.use.args.get(layer.use.api.reuse) if layer.use.api.reuse else None
            if S.is_auto_reuse(program, explicit) or \
                    any(S.is_auto_reuse(program, S.variable_scope_reuse(program, c, f))
                        for c, f, _ in S.variable_scopes(program, layer.use.site)):
                if self._fresh_copy(program, layer, group, everything):
                    self.report(layer.use.module, layer.use.call.loc,
                               f"`tf.AUTO_REUSE` finds no trained layer named `{layer.scope}`: this copy makes "
                               f"variables of its own, which training never updates",
                               fix="Give it the scope (name) of the trained layer, so it reuses that one.")
                continue
            if any(other.scope == layer.scope and other.reuse is not True for other in everything):
                continue
            self.report(layer.use.module, layer.use.call.loc,
                       f"`reuse=True` but nothing creates batch-norm scope `{layer.scope}` first: TF raises "
                       f"'Variable {layer.scope}/beta does not exist'",
                       fix="Create the layer once with reuse=None (or use tf.AUTO_REUSE), then reuse it.")

    @staticmethod
    def _fresh_copy(program: Program, layer: _Layer, group: list[_Layer], everything: list[_Layer]) -> bool:
        """A layer under AUTO_REUSE that is not trained, in an execution that trains, and whose scope no
        other layer can have: its variables are new, so it normalizes with mean 0 and variance 1."""
        if program.dataflow.feeds_training(layer.use) is not False:
            return False
        together = program.executions.together
        if any(other.use is not layer.use and other.scope == layer.scope and
               together(other.use.site, layer.use.site) is not False for other in everything):
            return False
        for other in group:
            if other.scope is None and other.use is not layer.use:
                default = other.use.api.default_scope
                if not DuplicatedScope._default_named(other) or default is None or \
                        re.fullmatch(re.escape(default) + r"(_\d+)?", layer.scope.rsplit("/", 1)[-1]):
                    return False  # a layer whose name bnaudit cannot tell may be the trained one
        return True


class TensorValuedReuse(Rule):
    code = "BN003"
    invalid = (
        """
import tensorflow as tf
reuse = tf.placeholder(tf.bool)
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, reuse=reuse, scope='bn')  # expect: BN003
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, reuse=tf.AUTO_REUSE, scope='bn')
""",
    )

    fixes = (
        ("""
import tensorflow as tf
reuse = tf.placeholder(tf.bool)
x = tf.placeholder(tf.float32, [None, 4])
with tf.variable_scope('net', reuse=reuse):
    y = tf.contrib.layers.batch_norm(x, scope='bn')
""", """
import tensorflow as tf
reuse = tf.placeholder(tf.bool)
x = tf.placeholder(tf.float32, [None, 4])
with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
    y = tf.contrib.layers.batch_norm(x, scope='bn')
"""),
    )

    def check(self, program: Program) -> None:
        fed = _fed_names(program)
        for use in program.batch_norms:
            if use.api.reuse:
                given = use.args.get(use.api.reuse)
                if given is not None and self._is_runtime(program, given, fed):
                    fix = self._fix(use.call.loc, use.api.reuse, use.api.param_index(use.api.reuse)) \
                        if use.how == "direct" and use.api.reuse not in use.sources else None
                    self.report(use.module, use.call.loc, self._message("this batch norm"), autofix=fix)
            for call, frame, loc in S.variable_scopes(program, use.site):
                given = S.variable_scope_reuse(program, call, frame)
                if given is not None and self._is_runtime(program, given, fed):
                    module = frame.module if frame is not None else use.module
                    # The scope's call written in the `with` itself is the node after the item.
                    literal = isinstance(getattr(module.contexts.get(loc), "value", None), V.Call)
                    fix = self._fix(loc + 1, "reuse", VARIABLE_SCOPE.index("reuse")) if literal else None
                    self.report(module, loc, self._message("the variable scope around a batch norm"),
                               autofix=fix)

    @staticmethod
    def _fix(call: int, keyword: str, index: int | None) -> Fix:
        # Unsafe: with AUTO_REUSE the first build creates the variables and later builds share them,
        # which may not be the sharing the fed value was meant to choose.
        return Fix("Pass `reuse=tf.AUTO_REUSE` (a Python value fixed when the graph is built)",
                   (Edit.argument(call, keyword, -1 if index is None else index, f"{TF1}.AUTO_REUSE"),),
                   Applicability.UNSAFE)

    @staticmethod
    def _message(what: str) -> str:
        return f"`reuse` of {what} is a tensor: TF rejects it or ignores the fed value"

    @staticmethod
    def _is_runtime(program: Program, given: Located, fed: set[tuple[str, str]]) -> bool:
        if S.is_tensor(program, given.value, given.frame):
            return True
        located: Located | None = given
        for _ in range(8):
            if located is None:
                break
            if isinstance(located.value, V.Ref) and located.frame is not None and \
                    (located.frame.module.path, located.value.name) in fed:
                return True
            located = program.step(located)
        return False


def _entering(chain: list[tuple[ModuleFacts, CallFact]], functions: set[str]) -> tuple[ModuleFacts, CallFact]:
    """The call that enters the first of ``functions`` on the way down (``self.discriminator(x,
    reuse=True)``, whose body turns reuse on), or the top of the chain."""
    for index, (_, call) in enumerate(chain):
        if call.scope in functions:
            return chain[index - 1] if index else chain[0]
    return chain[0]


def _fed_names(program: Program) -> set[tuple[str, str]]:
    """Names used as keys of a ``feed_dict``: values that are fed, hence tensors."""
    fed = set()
    for module in program.modules:
        for call in module.calls:
            if not (isinstance(call.value.func, V.Attr) and call.value.func.attr == "run"):
                continue
            feed = arg(call.value, SESSION_RUN, "feed_dict")
            final = program.deref(feed, program.lexical(module, call.scope)).value if feed is not None else None
            if isinstance(final, V.Dict):
                for key, _ in final.items:
                    if isinstance(key, V.Ref):
                        fed.add((module.path, key.name))
    return fed
