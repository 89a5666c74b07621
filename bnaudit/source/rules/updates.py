"""BN001: moving-average updates left in UPDATE_OPS that the train op never runs."""

from __future__ import annotations

from bnaudit import catalogue
from bnaudit.fixes import TF1, Applicability, Edit, Fix
from bnaudit.signatures import APPLY_GRADIENTS, MINIMIZE, arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Program, Site
from bnaudit.source.rules import Rule


def collection_updates(program: Program, use: BatchNormUse) -> bool | None:
    """Whether a layer's updates wait in a collection: True, False (in place / managed, or none are
    created: a layer whose flag is the constant False builds no update ops), None (unknown)."""
    if use.api.updates != catalogue.COLLECTION or use.how == "apply":
        return False
    if use.api.training and not use.unknown_args:
        flag = program.arg(use, use.api.training)
        value = flag.value if flag is not None else V.Const(use.api.training_default)
        if isinstance(value, V.Const) and value.value is False:
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


UPDATE_OPS = catalogue.UPDATE_OPS_LITERAL


def collection_of(program: Program, use: BatchNormUse) -> str | None:
    """The collection a layer's updates go to: UPDATE_OPS, a custom name, or None when unknown."""
    given = use.args.get(use.api.updates_arg) if use.api.updates_arg else None
    if given is None:
        return UPDATE_OPS
    final = program.deref(given.value, given.frame).value
    if isinstance(final, V.Seq) and len(final.items) == 1:
        final = program.deref(final.items[0], given.frame).value
    if isinstance(final, V.Dotted) and final.name in catalogue.UPDATE_OPS_KEYS:
        return UPDATE_OPS
    if isinstance(final, V.Const) and isinstance(final.value, str):
        return final.value
    return None


def _whole_value(module: ModuleFacts, call: CallFact) -> bool:
    """The call is all its statement computes: `train_op = ...`, `self.train_op = ...`, `return ...`."""
    if call.target is not None:
        return True
    function = module.functions.get(call.scope)
    if function is not None and any(value is call.value for value in function.returns):
        return True
    return any(fact.value is call.value for facts in module.assigns.values() for fact in facts)


def _run_updates_fix(module: ModuleFacts, call: CallFact, collections: set[str | None]) -> Fix:
    """Build the train op under a control dependency on the collections its layers update."""
    spelled = [f"{TF1}.GraphKeys.UPDATE_OPS" if where == UPDATE_OPS else repr(where)
               for where in sorted(collections, key=lambda where: (where != UPDATE_OPS, where))]
    updates = " + ".join(f"{TF1}.get_collection({key})" for key in spelled)
    title = f"Build the train op under `tf.control_dependencies({updates.replace(TF1, 'tf')})`"
    # A statement that only builds the train op (`train_op = opt.minimize(loss)`, `return ...`) is
    # safe to wrap: the op it builds now also runs the updates, and nothing else it builds can be
    # reached but through the train op.  The fixer also refuses a line shared with other statements.
    return Fix(title, (Edit.wrap(call.loc, f"{TF1}.control_dependencies({updates})"),),
               Applicability.SAFE if _whole_value(module, call) else Applicability.DISPLAY)


def _keras_updates_fix(site: Site, layer_site: Site) -> Fix | None:
    """Build the train op under the Keras model's own updates, when the model is a name the train op's
    statement can see (the same function, or the module's top level, of the same file)."""
    model = layer_site.call.value.func
    if not isinstance(model, V.Ref) or layer_site.module is not site.module or "." in model.name:
        return None
    visible = model.scope == site.call.scope or ("", model.name) in site.module.assigns
    if not visible:
        return None
    title = f"Build the train op under `tf.control_dependencies({model.name}.updates)`"
    return Fix(title, (Edit.wrap(site.call.loc, f"{TF1}.control_dependencies({model.name}.updates)"),),
               Applicability.SAFE if _whole_value(site.module, site.call) else Applicability.DISPLAY)


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
        """
import tensorflow.compat.v1 as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization()])
x = tf.placeholder(tf.float32, [None, 4])
loss = tf.reduce_mean(model(x, training=True))
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)  # expect: BN001
""",
    )
    valid = (
        """
import tensorflow.compat.v1 as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization()])
x = tf.placeholder(tf.float32, [None, 4])
loss = tf.reduce_mean(model(x, training=True))
with tf.control_dependencies(model.updates):
    train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
""",
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

    fixes = (
        ("""
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.layers.batch_normalization(x, training=True)
# the train op
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
""", """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.layers.batch_normalization(x, training=True)
# the train op
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""),
        ("""
import tensorflow as tf
tf.compat.v1.disable_v2_behavior()
x = tf.compat.v1.placeholder(tf.float32, [None, 4])
h = tf.compat.v1.layers.batch_normalization(x, training=True)
train_op = tf.compat.v1.train.AdamOptimizer().minimize(tf.reduce_sum(h))
""", """
import tensorflow as tf
tf.compat.v1.disable_v2_behavior()
x = tf.compat.v1.placeholder(tf.float32, [None, 4])
h = tf.compat.v1.layers.batch_normalization(x, training=True)
with tf.compat.v1.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
    train_op = tf.compat.v1.train.AdamOptimizer().minimize(tf.reduce_sum(h))
"""),
        ("""
import tensorflow.compat.v1 as v1
class GAN:
    def build(self, x):
        self.loss = v1.reduce_sum(v1.layers.batch_normalization(x, training=True))
        self.d_op = v1.train.AdamOptimizer().minimize(self.loss)
""", """
import tensorflow.compat.v1 as v1
class GAN:
    def build(self, x):
        self.loss = v1.reduce_sum(v1.layers.batch_normalization(x, training=True))
        with v1.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            self.d_op = v1.train.AdamOptimizer().minimize(self.loss)
"""),
    )

    def check(self, program: Program) -> None:
        self._keras_in_graph(program)
        uses = [use for use in program.batch_norms if collection_updates(program, use)]
        if not uses:
            return
        for module in program.modules:
            for call in module.calls:
                if isinstance(call.value.func, V.Attr) and call.value.func.attr in catalogue.TRAIN_OP_METHODS:
                    self._judge(program, module, call, uses)

    def _keras_in_graph(self, program: Program) -> None:
        """A Keras model or layer with batch norm, called in training mode in a TF1 graph (sessions,
        placeholders, an Estimator's model_fn) and trained by a plain train op: Keras keeps the
        moving-average updates in ``model.updates``, never in UPDATE_OPS, so nothing runs them."""
        flow = program.dataflow
        executions = program.executions
        graph_ops = [site for site in flow.train_ops
                     if isinstance(site.call.value.func, V.Attr) and _graph_mode(program, site.module)]
        if not graph_ops:
            return
        ops_by_entry = executions.index(graph_ops, lambda site: site)
        layers = []   # the calls of Keras objects with batch norm in training mode
        for module in program.modules:
            for call in module.calls:
                if not isinstance(call.value.func, (V.Ref, V.Attr, V.Call)):
                    continue   # `model(x, ...)`, `self.bn(x, ...)`, `BatchNormalization()(x, ...)`
                given = S.object_call_training(call.value, program, program.lexical(module, call.scope))
                if given is None or V.const(given, "?") is False:
                    continue
                for layer_site in program.sites(module, call):
                    if next(executions.near(layer_site, ops_by_entry), None) is not None and \
                            _keras_batch_norm(program, call.value.func, layer_site.frame):
                        layers.append(layer_site)
        if not layers:
            return
        by_entry = executions.index(layers, lambda layer: layer)
        for site in graph_ops:
            near = [layer for layer in executions.near(site, by_entry)
                    if executions.together(site, layer) is not False]
            if not near or _runs_keras_updates(program, site):
                continue
            strings, _ = flow.reached(site)
            for layer_site in near:
                if S.feeds_from(strings, layer_site.chain):
                    self.report(site.module, site.call.loc,
                               "this train op does not run the Keras batch norm's updates (model called at {0}): "
                               "they are in `model.updates`, not UPDATE_OPS",
                               related=((layer_site.module.path, layer_site.call.loc),),
                               fix="Build the train op under `tf.control_dependencies(model.updates)` (or "
                                   "train with `model.fit`), or use `bnaudit.layers.batch_norm`.",
                               autofix=_keras_updates_fix(site, layer_site))
                    break

    def _judge(self, program: Program, module: ModuleFacts, call: CallFact,
               uses: list[BatchNormUse]) -> None:
        for site in program.sites(module, call):
            # Only layers that may be in this train op's graph: the same execution, or one that may
            # run inside it.
            candidates = [use for use in uses if program.executions.together(site, use.site) is not False]
            if not candidates:
                continue
            affected = _feeding(program, site, candidates)
            covered = self._covered(program, site)
            missed = [use for use in affected if S.ANY_COLLECTION not in covered
                      and collection_of(program, use) not in covered and collection_of(program, use) is not None]
            if missed:
                first = missed[0]
                layers = {(use.module.path, use.call.loc) for use in missed}
                more = f" and {len(layers) - 1} more" if len(layers) > 1 else ""
                where = collection_of(program, first)
                place = "tf.GraphKeys.UPDATE_OPS" if where == UPDATE_OPS else f"the collection {where!r}"
                why = (f"they wait in {place}" if not _loss_joined(program, site) else
                       "they are joined to a loss tensor that nothing evaluates")
                self.report(module, call.loc,
                           f"this train op does not run the moving-average updates of batch norm "
                           f"{S.layer_label(program, first)} ({{0}}){more}: {why}",
                           related=((first.module.path, first.call.loc),),
                           autofix=_run_updates_fix(module, call, {collection_of(program, use) for use in missed}))
                return
            early = self._read_too_early(program, site)
            if early is not None and affected:
                self.report(module, call.loc,
                           f"this train op depends on UPDATE_OPS read at {{0}}, before batch norm "
                           f"{S.layer_label(program, affected[0])} is built: the collection was empty",
                           related=((early[0].path, early[1]),),
                           fix="Call tf.get_collection(tf.GraphKeys.UPDATE_OPS) after the model is built, right "
                               "before creating the train op.")
                return

    def _covered(self, program: Program, site: Site) -> set[str]:
        """The update collections this train op runs."""
        covered: set[str] = set()
        for ctx, frame in site.contexts():
            located = program.deref(ctx.value, frame)
            value = located.value
            if isinstance(value, V.Call) and value.args and \
                    program.qualname(value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES:
                covered |= {key for key, _ in S.update_collections_in(program, value.args[0], located.frame)}
        call = site.call.value
        # What the train op is computed from: minimize's loss, apply_gradients' gradients.
        loss = arg(call, MINIMIZE, "loss") or arg(call, APPLY_GRADIENTS, "grads_and_vars")
        if loss is not None:
            located = program.deref(loss, site.frame)
            # `loss = with_dependencies([updates], loss)` runs the updates only if that loss tensor
            # itself is evaluated: gradients start from a constant of its (static) shape, not from it.
            if isinstance(located.value, V.Call) and \
                    program.qualname(located.value.func, located.frame) in catalogue.GROUPING and \
                    _evaluated_elsewhere(program, site, located.value):
                covered |= {key for key, _ in S.update_collections_in(program, located.value, located.frame)}
        # Joined afterwards: tf.group(train_op, *update_ops), with_dependencies, sess.run([train_op, update_ops]),
        # and a tensor made under control_dependencies(update_ops) that runs with the train op
        # (`EstimatorSpec(loss=loss, train_op=train_op)` after `with control_dependencies(update_ops):
        # loss = tf.identity(loss)`).
        for other in site.module.calls:
            frame = site.frame if other.scope == site.call.scope else program.lexical(site.module, other.scope)
            name = program.qualname(other.value.func, frame)
            is_join = name in catalogue.GROUPING or name in catalogue.ESTIMATOR_SPECS or (
                isinstance(other.value.func, V.Attr) and other.value.func.attr == "run")
            if is_join and S.contains(program, other.value, frame, lambda v, f: v is call):
                covered |= {key for key, _ in S.update_collections_in(program, other.value, frame, opaque=call)}
                for made in self._fetched(program, other.value, frame):
                    fact = program.call_fact(made)
                    if fact is not None:
                        covered |= self._dependencies(program, fact[0], fact[1])
        # A dependency of the op that is run: `with control_dependencies(update_ops): with
        # control_dependencies([optimizer, step_update]): train_op = tf.no_op()` (YunYang1994's
        # tensorflow-yolov3) runs the updates and the optimizer together.
        for loc, ctx in site.module.contexts.items():
            frame = site.frame if ctx.scope == site.call.scope else program.lexical(site.module, ctx.scope)
            located = program.deref(ctx.value, frame)
            value = located.value
            if isinstance(value, V.Call) and value.args and \
                    program.qualname(value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES and \
                    S.contains(program, value.args[0], located.frame, lambda v, f: v is call):
                made = [other for other in site.module.calls if loc in other.ctx]
                for other in made:
                    covered |= self._dependencies(program, site.module, other)
        return covered

    @staticmethod
    def _fetched(program: Program, join: V.Call, frame) -> list[V.Call]:
        """The calls a join runs with the train op: its arguments, and the items of fetch lists."""
        out: list[V.Call] = []
        pending = [(arg, frame) for arg in (*join.args, *(v for _, v in join.kwargs))]
        while pending and len(out) < 64:
            value, at = pending.pop()
            located = program.deref(value, at)
            made = located.value
            if isinstance(made, V.Call):
                out.append(made)
            elif isinstance(made, V.Seq):
                pending.extend((item, located.frame) for item in made.items)
            elif isinstance(made, V.Dict):
                pending.extend((item, located.frame) for _, item in made.items)
        return out

    @staticmethod
    def _dependencies(program: Program, module: ModuleFacts, call: CallFact) -> set[str]:
        """The update collections a call is made under (``with tf.control_dependencies(update_ops):``)."""
        out: set[str] = set()
        for loc in call.ctx:
            ctx = module.contexts[loc]
            located = program.deref(ctx.value, program.lexical(module, ctx.scope))
            value = located.value
            if isinstance(value, V.Call) and value.args and \
                    program.qualname(value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES:
                out |= {key for key, _ in S.update_collections_in(program, value.args[0], located.frame)}
        return out

    @staticmethod
    def _read_too_early(program: Program, site: Site) -> tuple[ModuleFacts, int] | None:
        """Where the UPDATE_OPS list around the train op is read, if that is before the model is built."""
        for ctx, frame in site.contexts():
            located = program.deref(ctx.value, frame)
            value = located.value
            if not (isinstance(value, V.Call) and value.args and
                    program.qualname(value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES):
                continue
            for _, found in S.update_collections_in(program, value.args[0], located.frame):
                for module in program.modules:
                    for call in module.calls:
                        if call.value is found:
                            before, after = _bn_builds_around(program, module, call)
                            if after and not before:
                                return module, call.loc
        return None


def _loss_joined(program: Program, site: Site) -> bool:
    call = site.call.value
    loss = arg(call, MINIMIZE, "loss")
    located = program.deref(loss, site.frame) if loss is not None else None
    return located is not None and isinstance(located.value, V.Call) and \
        program.qualname(located.value.func, located.frame) in catalogue.GROUPING and \
        bool(S.update_collections_in(program, located.value, located.frame))


def _evaluated_elsewhere(program: Program, site: Site, joined: V.Call) -> bool:
    """Whether a loss tensor is fetched or used beyond building the train op (summaries, specs, runs)."""
    for module in program.modules:
        for other in module.calls:
            func = other.value.func
            if isinstance(func, V.Attr) and func.attr in catalogue.TRAIN_OP_METHODS | {"compute_gradients"}:
                continue
            if other.value is joined:
                continue
            frame = site.frame if other.scope == site.call.scope and module is site.module \
                else program.lexical(module, other.scope)
            if S.contains(program, other.value, frame, lambda v, f: v is joined, opaque=site.call.value):
                return True
    return False


def _feeding(program: Program, site: Site, candidates: list[BatchNormUse]) -> list[BatchNormUse]:
    """The layers whose outputs the train op's loss is computed from (all of them if untraceable)."""
    flow = program.dataflow
    verdicts = [(use, flow.feeds(site, use)) for use in candidates]
    traced = [use for use, feeds in verdicts if feeds]
    return traced if traced or all(feeds is False for _, feeds in verdicts) else candidates


def _bn_builds_around(program: Program, module: ModuleFacts, call: CallFact) -> tuple[bool, bool]:
    """Whether batch norm is built before / after ``call`` in the same function."""
    building = S.building_functions(program)
    before = after = False
    for other in module.calls:
        if other.scope != call.scope or other is call:
            continue
        builds = any(use.call is other for use in program.batch_norms)
        if not builds:
            builds = any((id(target[0]), target[1].qualname) in building for target in program.targets(other))
        if builds:
            if other.loc < call.loc:
                before = True
            else:
                after = True
    return before, after


def _graph_mode(program: Program, module: ModuleFacts) -> bool:
    """Code that certainly builds a graph: placeholders or eager execution disabled, an Estimator's
    model_fn, or a session that runs a train op.  (A TF2 script may open a Session only to set GPU
    options, and still run eagerly.)"""
    for call in module.calls:
        if isinstance(call.value.func, (V.Dotted, V.Attr)):
            name = program.qualname(call.value.func, program.lexical(module, call.scope))
            if name in catalogue.GRAPH_ONLY_MARKERS or name in catalogue.ESTIMATOR_SPECS:
                return True
    flow = program.dataflow
    return any(run.module is module and flow.runs_train_op(run) for run in flow.runs)


def _keras_batch_norm(program: Program, func: V.Value, frame) -> bool:
    """A Keras object holding batch norm (tf.layers' own BatchNormalization class does add its
    updates to UPDATE_OPS)."""
    located = program.deref(func, frame)
    if not isinstance(located.value, V.Call):
        return False
    api = program.api_of(located.value.func, located.frame)
    if api is not None:
        return api.family == "keras" and api.kind != catalogue.OP
    name = program.qualname(located.value.func, located.frame) or ""
    keras = name in catalogue.KERAS_MODELS or name.startswith(catalogue.KERAS_APPLICATION_MODULES)
    cls = program.deref(located.value.func, located.frame).value
    if isinstance(cls, V.FunctionRef) and (module := program.module_at(cls.module)) is not None and \
            cls.function in module.classes:
        # A program class: Keras only if it derives from a Keras Model or Layer.
        keras = S.keras_class(program, module, cls.function)
    elif isinstance(cls, V.FunctionRef):
        keras = True   # a function of the program that returns a model (`model = build_resnet()`)
    return keras and S.holds_batch_norm(program, func, frame)


def _runs_keras_updates(program: Program, site: Site) -> bool:
    """The train op depends on, or is grouped with, ``model.updates`` / ``model.get_updates_for(...)``."""
    def mentions_updates(value: V.Value, frame) -> bool:
        return S.contains(program, value, frame, lambda v, f: isinstance(v, V.Attr) and v.attr == "updates"
                          or isinstance(v, V.Call) and isinstance(v.func, V.Attr)
                          and v.func.attr == "get_updates_for")
    for ctx, frame in site.contexts():
        located = program.deref(ctx.value, frame)
        if isinstance(located.value, V.Call) and located.value.args and \
                program.qualname(located.value.func, located.frame) in catalogue.CONTROL_DEPENDENCIES and \
                mentions_updates(located.value.args[0], located.frame):
            return True
    for other in site.module.calls:
        frame = program.lexical(site.module, other.scope)
        if program.qualname(other.value.func, frame) in catalogue.GROUPING and \
                S.contains(program, other.value, frame, lambda v, f: v is site.call.value) and \
                mentions_updates(other.value, frame):
            return True
    return False

