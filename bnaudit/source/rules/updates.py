"""BN001: moving-average updates left in UPDATE_OPS that the train op never runs."""

from __future__ import annotations

from functools import lru_cache

from bnaudit import catalogue
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Program, Site
from bnaudit.source.rules import Report, Rule


def collection_updates(program: Program, use: BatchNormUse) -> bool | None:
    """Whether a layer's updates wait in a collection: True, False (in place / managed), None (unknown)."""
    if use.api.updates != catalogue.COLLECTION or use.how == "apply":
        return False
    if use.api.updates_arg is None:
        return True
    given = use.args.get(use.api.updates_arg)
    if given is None:
        return None if use.unknown_args else True
    final = program.deref(given.value, given.frame).value
    if isinstance(final, V.Const) and final.value is None:
        return False
    return True


def collection_names(program: Program, uses: list[BatchNormUse]) -> frozenset[str]:
    """Custom collections named by ``updates_collections='updates-model1'``."""
    names = set()
    for use in uses:
        given = use.args.get(use.api.updates_arg) if use.api.updates_arg else None
        if given is not None:
            for value in V.walk(program.deref(given.value, given.frame).value):
                if isinstance(value, V.Const) and isinstance(value.value, str):
                    names.add(value.value)
    return frozenset(names)


def reachable_modules(program: Program, module: ModuleFacts) -> set[int]:
    """The module and every checked module it imports, transitively."""
    seen = {id(module)}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in current.imports:
            target = program.module_of(name)
            if target is not None and id(target) not in seen:
                seen.add(id(target))
                todo.append(target)
    return seen


class UnrunUpdateOps(Rule):
    code = "BN001"
    invalid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))  # expect: BN001
""",
        """
import tensorflow.compat.v1 as tf
def model(x, training):
    return tf.layers.batch_normalization(x, training=training)
x = tf.placeholder(tf.float32, [None, 4])
update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
loss = tf.reduce_mean(model(x, True))
with tf.control_dependencies(update_ops):
    train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)  # expect: BN001
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True)
update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
with tf.control_dependencies(update_ops):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
""",
        """
import tensorflow as tf
slim = tf.contrib.slim
params = {'is_training': True, 'updates_collections': None}
x = tf.placeholder(tf.float32, [None, 4])
h = slim.fully_connected(x, 10, normalizer_fn=slim.batch_norm, normalizer_params=params)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
""",
    )

    def check(self, program: Program, report: Report) -> None:
        uses = [use for use in program.batch_norms if collection_updates(program, use)]
        if not uses:
            return
        collections = collection_names(program, uses)
        for module in program.modules:
            train_ops = [call for call in module.calls
                         if isinstance(call.value.func, V.Attr) and call.value.func.attr in catalogue.TRAIN_OP_METHODS]
            if not train_ops:
                continue
            reachable = reachable_modules(program, module)
            affected = [use for use in uses if id(use.site.root.module) in reachable]
            if not affected:
                continue
            for call in train_ops:
                self._judge(program, report, module, call, affected, collections)

    def _judge(self, program: Program, report: Report, module: ModuleFacts, call: CallFact,
               affected: list[BatchNormUse], collections: frozenset[str]) -> None:
        sites = program.sites(module, call)
        early = None
        for site in sites:
            handled, through = self._handled(program, module, site, collections)
            if not handled:
                break
            if through is not None and early is None:
                early = self._evaluated_too_early(program, through)
        else:
            if early is None:
                return
            first = affected[0]
            report.add(self.code, module, call.loc,
                       f"the UPDATE_OPS collection this train op depends on is read at {{0}}, before any "
                       f"batch-norm layer is built, so it is empty and the moving averages of "
                       f"{S.layer_label(program, first)} are never updated",
                       related=((early[0].path, early[1]),),
                       fix="Call tf.get_collection(tf.GraphKeys.UPDATE_OPS) after the model is built, right "
                           "before creating the train op.")
            return
        first = affected[0]
        layers = {(use.module.path, use.call.loc) for use in affected}
        more = f" and {len(layers) - 1} more" if len(layers) > 1 else ""
        report.add(self.code, module, call.loc,
                   f"this train op does not run the moving-average updates of batch norm "
                   f"{S.layer_label(program, first)} ({{0}}){more}: they wait in tf.GraphKeys.UPDATE_OPS, so "
                   f"moving_mean/moving_variance stay at their initial values and the model is wrong at "
                   f"inference (training accuracy fine, test accuracy near chance)",
                   related=((first.module.path, first.call.loc),))

    def _handled(self, program: Program, module: ModuleFacts, site: Site, collections: frozenset[str]
                 ) -> tuple[bool, tuple[V.Value, object] | None]:
        """Whether this train op runs the updates, and the update-ops value that it depends on."""
        for ctx, frame in site.contexts():
            located = program.deref(ctx.value, frame)
            value = located.value
            if isinstance(value, V.Call) and \
                    program.qualname(value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES and value.args:
                found = _find_update_ops(program, value.args[0], located.frame, collections)
                if found is not None:
                    return True, found
        call = site.call.value
        loss = call.args[0] if call.args else call.kwarg("loss") or call.kwarg("grads_and_vars")
        if loss is not None and _depends_on_updates(program, loss, site.frame, collections):
            return True, None
        train_value = call
        # Joined afterwards: tf.group(train_op, *update_ops), with_dependencies, sess.run([train_op, update_ops]).
        for other in site.module.calls:
            frame = site.frame if other.scope == site.call.scope else program.lexical(site.module, other.scope)
            name = program.qualname(other.value.func, frame)
            is_join = name in catalogue.GROUPING or (
                isinstance(other.value.func, V.Attr) and other.value.func.attr == "run")
            if not is_join:
                continue
            if S.contains(program, other.value, frame, lambda v, f: v is train_value) and \
                    S.has_update_ops(program, other.value, frame, collections):
                return True, None
        return False, None

    @staticmethod
    def _evaluated_too_early(program: Program, found: tuple[V.Value, object]) -> tuple[ModuleFacts, int] | None:
        value, _frame = found
        for module in program.modules:
            for call in module.calls:
                if call.value is value:
                    before, after = _bn_builds_around(program, module, call)
                    if after and not before:
                        return module, call.loc
                    return None
        return None


def _find_update_ops(program: Program, value: V.Value, frame, collections: frozenset[str]):
    hits: list[tuple[V.Value, object]] = []

    def predicate(v, f):
        if S.is_update_ops(program, v, f, collections):
            hits.append((v, f))
            return True
        return False

    return hits[0] if S.contains(program, value, frame, predicate) else None


def _depends_on_updates(program: Program, loss: V.Value, frame, collections: frozenset[str]) -> bool:
    """``loss = with_dependencies([updates], loss)`` or the loss computed under control_dependencies(updates)."""
    located = program.deref(loss, frame)
    value = located.value
    if isinstance(value, V.Call) and program.qualname(value.func, located.frame) in catalogue.GROUPING:
        return S.has_update_ops(program, value, located.frame, collections)
    return False


def _bn_builds_around(program: Program, module: ModuleFacts, call: CallFact) -> tuple[bool, bool]:
    """Whether batch norm is built before / after ``call`` in the same function."""
    building = _building_functions(program)
    before = after = False
    for other in module.calls:
        if other.scope != call.scope or other is call:
            continue
        builds = any(use.call is other for use in program.batch_norms)
        if not builds:
            target = program.callee(other.value, program.lexical(module, other.scope))
            builds = target is not None and (id(target[0]), target[1].qualname) in building
        if builds:
            if other.loc < call.loc:
                before = True
            else:
                after = True
    return before, after


@lru_cache(maxsize=8)
def _building_functions(program: Program) -> frozenset[tuple[int, str]]:
    """Functions that build a batch norm themselves or through the functions they call."""
    building = {(id(use.module), use.call.scope.split(".<lambda")[0]) for use in program.batch_norms}
    changed = True
    while changed:
        changed = False
        for module in program.modules:
            for other in module.calls:
                if not other.scope or (id(module), other.scope) in building:
                    continue
                target = program.callee(other.value, program.lexical(module, other.scope))
                if target is not None and (id(target[0]), target[1].qualname) in building:
                    building.add((id(module), other.scope))
                    changed = True
    return frozenset(building)
