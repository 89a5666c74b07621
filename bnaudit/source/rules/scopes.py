"""BN002 and BN003: batch-norm variables created twice, never created, or reused by a tensor."""

from __future__ import annotations

from dataclasses import dataclass

from bnaudit import catalogue
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.executions import path_of
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Located, Program
from bnaudit.source.rules import Report, Rule
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
    )

    def check(self, program: Program, report: Report) -> None:
        layers = []
        for use in program.batch_norms:
            if use.api.family not in _SCOPED_FAMILIES or use.api.kind != catalogue.FUNCTION:
                continue
            sites = S.call_chain(use)
            layers.append(_Layer(use, S.variable_scope_of(program, use), S.reuse_of(program, use),
                                 tuple(call.loc for _, call in sites), sites))
            own = use.args.get(use.api.scope) if use.api.scope else None
            if own is not None and S.is_name_scope(program, own.value, own.frame):
                report.add(self.code, use.module, use.call.loc,
                           "the scope comes from `tf.name_scope(...) as scope`; variables ignore name scopes, "
                           "so this layer's variables are not where the name says and are not shared",
                           fix="Use `tf.variable_scope(...)` (or pass a plain string) as the layer's scope.")
        # Layers collide only within one graph: same top-level code, same `tf.Graph().as_default()`.
        for cond in cond_layers(program):
            if cond.kinds == [INSIDE, INSIDE] and cond.shared is False and cond.later is not None:
                module, call = cond.later
                report.add(self.code, module, call.loc,
                           "the two branches of this tf.cond build separate batch-norm variables: the layer "
                           "used for evaluation has its own moving statistics, which training never updates",
                           fix="Build one layer with the flag tensor as `training`/`is_training` (or give the "
                               "second branch the same scope with reuse=True).")
        # Layers collide only when they are built in one graph of one execution.
        by_entry: dict[tuple, list[_Layer]] = {}
        for layer in layers:
            by_entry.setdefault(path_of(layer.use.site).entry, []).append(layer)
        for group in by_entry.values():
            group.sort(key=lambda layer: layer.order)
            self._duplicates(program, report, group)
            self._missing(program, report, group, layers)

    def _duplicates(self, program: Program, report: Report, group: list[_Layer]) -> None:
        for i, later in enumerate(group):
            if later.reuse is not False:
                continue
            for earlier in group[:i]:
                if program.executions.together(earlier.use.site, later.use.site) is not True:
                    continue
                same_call = earlier.use.call is later.use.call
                if earlier.scope is not None and earlier.scope == later.scope:
                    kind = "scope"
                elif same_call and earlier.scope is None and later.scope is None and \
                        self._evaluation_copy(program, earlier, later):
                    kind = "rebuilt"
                elif same_call and self._default_named(later) and \
                        (enclosing := S.enclosing_scope(program, later.use)) and \
                        enclosing == S.enclosing_scope(program, earlier.use):
                    # Re-entering `dis` restarts its default names (BatchNorm, BatchNorm_1, ...), so the
                    # second build asks for the first one's variables without reuse.
                    kind = "default"
                else:
                    continue
                module, call = self._divergence(earlier, later)
                if kind == "default":
                    message = (f"batch norm is built again in scope `{enclosing}` without reuse: re-entering "
                               f"the scope restarts its default layer names, so TF raises 'Variable "
                               f"{enclosing}/.../beta already exists' (or, renamed, the copies share nothing)")
                elif kind == "scope":
                    message = (f"batch-norm scope `{later.scope}` is created a second time without reuse: TF "
                               f"raises 'Variable {later.scope}/beta already exists', or, under a fresh name, "
                               f"this layer trains its own statistics instead of sharing them")
                else:
                    message = ("the model is built a second time without `reuse=True`: this copy of batch norm "
                               f"{S.layer_label(program, later.use)} gets fresh variables, so evaluation uses "
                               "untrained moving statistics (mean 0, variance 1)")
                report.add(self.code, module, call.loc, message)
                break

    @staticmethod
    def _default_named(layer: _Layer) -> bool:
        """The layer takes its variable scope's default name (no ``scope=``/``name=`` given)."""
        api = layer.use.api
        return api.scope is not None and api.scope not in layer.use.args and not layer.use.unknown_args

    @staticmethod
    def _divergence(earlier: _Layer, later: _Layer) -> tuple[ModuleFacts, CallFact]:
        for (_, a), (module, b) in zip(earlier.chain, later.chain):
            if a is not b:
                return module, b
        return later.chain[-1]

    @staticmethod
    def _evaluation_copy(program: Program, earlier: _Layer, later: _Layer) -> bool:
        """The later copy of the model is built beside the trained one, for evaluation: the earlier
        copy's output reaches a train op's loss and the later one's reaches none."""
        flow = program.dataflow
        from bnaudit.source.rules.training import _same_callee_where_paths_part
        return flow.feeds_training(earlier.use) is True and flow.feeds_training(later.use) is False and \
            _same_callee_where_paths_part(program, earlier.use, later.use)

    def _missing(self, program: Program, report: Report, group: list[_Layer], everything: list[_Layer]) -> None:
        for layer in group:
            if layer.reuse is not True or layer.scope is None:
                continue
            explicit = layer.use.args.get(layer.use.api.reuse) if layer.use.api.reuse else None
            if S.is_auto_reuse(program, explicit):
                continue
            if any(S.is_auto_reuse(program, S.variable_scope_reuse(program, c, f))
                   for c, f, _ in S.variable_scopes(program, layer.use.site)):
                continue
            if any(other.scope == layer.scope and other.reuse is not True for other in everything):
                continue
            report.add(self.code, layer.use.module, layer.use.call.loc,
                       f"`reuse=True` but nothing creates batch-norm scope `{layer.scope}` first: TF raises "
                       f"'Variable {layer.scope}/beta does not exist'",
                       fix="Create the layer once with reuse=None (or use tf.AUTO_REUSE), then reuse it.")


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

    def check(self, program: Program, report: Report) -> None:
        fed = _fed_names(program)
        for use in program.batch_norms:
            if use.api.reuse:
                given = use.args.get(use.api.reuse)
                if given is not None and self._is_runtime(program, given, fed):
                    report.add(self.code, use.module, use.call.loc, self._message("this batch norm"))
            for call, frame, loc in S.variable_scopes(program, use.site):
                given = S.variable_scope_reuse(program, call, frame)
                if given is not None and self._is_runtime(program, given, fed):
                    module = frame.module if frame is not None else use.module
                    report.add(self.code, module, loc, self._message("the variable scope around a batch norm"))

    @staticmethod
    def _message(what: str) -> str:
        return (f"`reuse` of {what} is a tensor (placeholder/variable/fed value); it must be a Python "
                f"True/False/None or tf.AUTO_REUSE fixed when the graph is built, so TF raises 'The reuse "
                f"parameter must be True or False or None' or silently ignores the fed value")

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


def _fed_names(program: Program) -> set[tuple[str, str]]:
    """Names used as keys of a ``feed_dict``: values that are fed, hence tensors."""
    fed = set()
    for module in program.modules:
        for call in module.calls:
            if not (isinstance(call.value.func, V.Attr) and call.value.func.attr == "run"):
                continue
            feed = call.value.kwarg("feed_dict") or (call.value.args[1] if len(call.value.args) > 1 else None)
            final = program.deref(feed, program.lexical(module, call.scope)).value if feed is not None else None
            if isinstance(final, V.Dict):
                for key, _ in final.items:
                    if isinstance(key, V.Ref):
                        fed.add((module.path, key.name))
    return fed
