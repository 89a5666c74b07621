"""BN006, BN007, BN011: the training flag unset, tested in Python, or on at inference."""

from __future__ import annotations


from bnaudit import catalogue
from bnaudit.fixes import Applicability, Edit, Fix
from bnaudit.signatures import COND, LAYER_CALL, SET_LEARNING_PHASE, arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.executions import SitesByEntry
from bnaudit.source.program import BatchNormUse, Located, Program, Site
from bnaudit.source.rules import Rule



def trains(program: Program) -> bool:
    """The program builds or runs a training step."""
    cache = program.__dict__.setdefault("_trains", [])
    if not cache:
        cache.append(any(
            isinstance(call.value.func, V.Attr) and call.value.func.attr in catalogue.TRAIN_OP_METHODS | {"fit"}
            or isinstance(call.value.func, V.Dotted) and call.value.func.name in catalogue.UPDATING_TRAIN_OP_BUILDERS
            for module in program.modules for call in module.calls))
    return cache[0]


def training_arg(program: Program, use: BatchNormUse) -> Located | None:
    """The training flag as given (resolved), or None when it was not given."""
    key = f"call:{use.api.training}" if use.how == "apply" else use.api.training
    located = use.args.get(key) if key else None
    return program.deref(located.value, located.frame) if located is not None else None


def _batch_moments(program: Program, located) -> bool:
    value = located.value
    if isinstance(value, V.Subscript):
        value = program.deref(value.base, located.frame).value
    return isinstance(value, V.Call) and program.qualname(value.func, located.frame) in catalogue.MOMENTS


def in_cond_branch(program: Program, use: BatchNormUse) -> bool:
    """The layer is built inside a branch of a ``tf.cond`` (an argument of it, in a lambda)."""
    calls = program.calls_by_loc[id(use.module)]
    for loc in use.call.enclosing:
        outer = calls.get(loc)
        if outer is not None and program.qualname(outer.value.func, program.lexical(use.module, outer.scope)) \
                in catalogue.COND:
            return True
    return False


def batch_statistics_decision(program: Program, use: BatchNormUse) -> tuple[ModuleFacts, CallFact] | None:
    """Where a layer's flag is decided to be True (batch statistics): the call that passes the constant,
    the call that leaves a wrapper's default ``is_training=True`` in place, or the batch-norm call
    itself (its own default, a constant written there).  None when the flag is not a constant True."""
    if in_cond_branch(program, use):
        return None  # a branch of tf.cond(flag, ...) runs only when the flag tensor says so
    if use.api.kind == catalogue.OP and use.api.training is None:
        # Hand-written batch norm: tf.nn.batch_normalization(x, mean, variance, ...) normalizes with
        # batch statistics when `mean` is the batch's own (tf.nn.moments), in the branch that runs.
        mean = program.arg(use, "mean")
        if mean is None or not _batch_moments(program, mean) or program.live(use.module, use.call, use.site.frame) is False:
            return None
        return use.module, use.call
    key = f"call:{use.api.training}" if use.how == "apply" else use.api.training
    if key is None:
        return None
    given = use.args.get(key)
    if given is None:
        return (use.module, use.call) if use.api.training_default is True else None
    frames = list(use.site.frame.chain())
    path = [(frame, frame.site) for frame in frames]       # each frame with the call that created it
    located = given
    for _ in range(16):
        value, frame = located.value, located.frame
        if isinstance(value, V.Const):
            if value.value is not True:
                return None
            # The constant is written in `frame`: the call made there on the way down to the layer.
            for index, (candidate, _site) in enumerate(path):
                if candidate is frame:
                    if index == 0:
                        return use.module, use.call
                    below = path[index - 1][0]
                    return frame.module, below.site
            return use.module, use.call
        nxt = program.step(located)
        if nxt is None:
            return None
        if isinstance(value, V.Param) and isinstance(nxt.value, V.Const) and nxt.frame is not None and \
                nxt.frame.site is not None and nxt.frame.parent is not None:
            fn = nxt.frame.module.functions.get(value.function)
            if fn is not None and fn.defaults.get(value.name) is nxt.value:
                # A parameter's default: decided by the call that did not pass it.
                return (nxt.frame.parent.module, nxt.frame.site) if nxt.value.value is True else None
        located = nxt
    return None


def _feeds_held_out(run) -> bool:
    """A feed value spelled as held-out data: ``mnist.test.images``, ``x_val``, ``eval_batch[0]``."""
    for _, value in run.feed.items:
        for part in V.walk(value):
            name = part.name if isinstance(part, (V.Ref, V.Dotted)) else part.attr if isinstance(part, V.Attr) else ""
            if any(catalogue.words(word) & catalogue.HELD_OUT_WORDS for word in name.split(".")):
                return True
    return False


def _calls_on_training_paths(program: Program) -> set[int]:
    """The calls on the way to every layer built where a model may be trained (memoized)."""
    memo = program.__dict__.get("_training_path_calls")
    if memo is None:
        memo = program.__dict__["_training_path_calls"] = {
            id(call) for use in program.batch_norms if program.dataflow.trains(use.site) is not False
            for _, call in use.chain}
    return memo


# A layer of an evaluation copy: the calls of its own path, the layer, and where its flag is decided.
_CopyLayer = tuple[list[tuple[ModuleFacts, CallFact]], BatchNormUse, tuple[ModuleFacts, CallFact]]


def _common_prefix(a: list[tuple[ModuleFacts, CallFact]], b: list[tuple[ModuleFacts, CallFact]]
                   ) -> list[tuple[ModuleFacts, CallFact]]:
    out = []
    for x, y in zip(a, b):
        if x[1] is not y[1]:
            break
        out.append(x)
    return out


def _twin(program: Program, use: BatchNormUse, trained: list[BatchNormUse], together: bool) -> BatchNormUse | None:
    """The trained instance of the same layer: the same batch-norm call reached along the longest
    common tail of calls (the same layer of the model in the other copy, not another layer), or a
    call of its own with the same known variables (a sampler that repeats the generator's code)."""
    def tail(a: list, b: list) -> int:
        count = 0
        for x, y in zip(reversed(a), reversed(b)):
            if x[1] is not y[1]:
                break
            count += 1
        return count
    best, length = None, -1
    scope = S.variable_scope_of(program, use)
    for sibling in trained:
        if sibling.call is not use.call and scope is None:
            continue
        other = S.variable_scope_of(program, sibling)
        if sibling.call is not use.call and other != scope:
            continue
        if scope is not None and other is not None and scope != other:
            continue  # another layer that happens to be built by the same helper
        if together and not program.executions.together(sibling.site, use.site):
            continue
        shared = tail(sibling.chain, use.chain)
        if shared > length:
            best, length = sibling, shared
    return best


def _same_callee_where_paths_part(program: Program, a: BatchNormUse, b: BatchNormUse) -> bool:
    pa, pb = program.executions.path(a.site), program.executions.path(b.site)
    for level, (sa, sb) in enumerate(zip(pa.steps, pb.steps)):
        if sa is not sb:
            if level + 1 >= len(pa.frames) or level + 1 >= len(pb.frames):
                return False
            fa, fb = pa.frames[level + 1], pb.frames[level + 1]
            return fa.module is fb.module and fa.function == fb.function
    return False


def _result_unused(module: ModuleFacts, call: CallFact) -> bool:
    """The call's result is assigned to a name that its function never reads."""
    if not call.target:
        return False
    def reads(value) -> bool:
        return any(isinstance(v, V.Ref) and v.name == call.target and v.scope == call.scope for v in V.walk(value))
    if any(other.scope == call.scope and other is not call and reads(other.value) for other in module.calls):
        return False
    for (scope, _name), assigns in module.assigns.items():
        if any(a.function == call.scope and reads(a.value) for a in assigns):
            return False
    fn = module.functions.get(call.scope)
    return not (fn is not None and any(reads(ret) for ret in fn.returns))


def _trains_by_default(program: Program, model: V.Value, frame) -> bool:
    """A subclassed model whose ``call(self, x, training=True)`` defaults to training mode."""
    method = S.call_method(program, model, frame)
    default = method.defaults.get("training") if method is not None else None
    return isinstance(default, V.Const) and default.value is True


def _is_tape(program: Program, ctx, module: ModuleFacts) -> bool:
    return isinstance(ctx.value, V.Call) and \
        program.qualname(ctx.value.func, program.lexical(module, ctx.scope)) in catalogue.GRADIENT_TAPE


class TrainingFlagUnset(Rule):
    code = "BN006"
    invalid = (
        """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.layers.batch_normalization(x)  # expect: BN006
update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
with tf.control_dependencies(update_ops):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
""",
        """
import keras
import tensorflow as tf
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
optimizer = keras.optimizers.Adam()
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y, model(x))  # expect: BN006
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
""",
    )
    valid = (
        """
import keras
import tensorflow as tf
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
optimizer = keras.optimizers.Adam()
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y, model(x, True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
""",
    )

    fixes = (
        ("""
import keras
import tensorflow as tf
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
optimizer = keras.optimizers.Adam()
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
""", """
import keras
import tensorflow as tf
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
optimizer = keras.optimizers.Adam()
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
"""),
        ("""
import tensorflow.compat.v1 as tf
def block(x, is_training):
    return tf.layers.batch_normalization(
        tf.layers.dense(x, 4),
        momentum=0.9,
    )
x = tf.placeholder(tf.float32, [None, 4])
training = tf.placeholder_with_default(False, [])
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(block(x, training)))
""", """
import tensorflow.compat.v1 as tf
def block(x, is_training):
    return tf.layers.batch_normalization(
        tf.layers.dense(x, 4),
        momentum=0.9,
        training=is_training,
    )
x = tf.placeholder(tf.float32, [None, 4])
training = tf.placeholder_with_default(False, [])
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(block(x, training)))
"""),
    )

    def check(self, program: Program) -> None:
        if not trains(program):
            return
        for use in program.batch_norms:
            if use.api.training_default is not False or use.unknown_args:
                continue
            if use.how == "construct" or program.dataflow.feeds_training(use) is False:
                continue  # (a copy no train op trains is an inference path, where False is right)
            if training_arg(program, use) is None:
                self.report(use.module, use.call.loc,
                           f"`{use.api.training}` is not given: this batch norm runs in inference mode while "
                           f"the model trains", autofix=self._flag_fix(program, use))
        self._keras_layer_in_graph(program)
        if not any(_is_tape(program, ctx, module) for module in program.modules for ctx in module.contexts.values()):
            return
        for module in program.modules:
            for call in module.calls:
                if not isinstance(call.value.func, (V.Ref, V.Attr)):
                    continue
                given = S.object_call_training(call.value, program, program.lexical(module, call.scope))
                if given is not None and not (isinstance(given, V.Const) and given.value is None):
                    continue
                # Read lexically first: a callee that is plainly not a model needs no instantiation.
                lexical = program.deref(call.value.func, program.lexical(module, call.scope)).value
                if not isinstance(lexical, (V.Call, V.Param, V.Opaque)):
                    continue
                if isinstance(lexical, V.Call) and not S.holds_batch_norm(
                        program, call.value.func, program.lexical(module, call.scope)):
                    continue
                self._tape_call(program, module, call)

    def _keras_layer_in_graph(self, program: Program) -> None:
        """``BatchNormalization()(z)`` on a TF1 graph tensor trained by a session: without ``training``
        the layer follows Keras's learning phase, 0 unless the program feeds or sets it."""
        if program.calls_to(catalogue.SET_LEARNING_PHASE) or program.calls_to(catalogue.LEARNING_PHASE):
            return
        for use in program.batch_norms:
            if use.how != "apply" or use.unknown_args or training_arg(program, use) is not None or \
                    not S.graph_mode(program, use.module) or S.in_keras_call(program, use.site):
                continue
            if program.dataflow.feeds_training(use) is True:
                self.report(use.module, use.call.loc,
                           "a Keras batch norm on a TF1 graph tensor without `training`: it follows the learning "
                           "phase, which is 0 (inference) unless fed, so it trains in inference mode",
                           # Display only: in training mode its updates go to `layer.updates`, which a
                           # plain train op does not run either (BN001 then), so this alone fixes nothing.
                           autofix=Fix("Pass `training=True` (or the graph's flag tensor) and build the train op "
                                       "under `tf.control_dependencies(layer.updates)`",
                                       (Edit.keyword(use.call.loc, "training", "True"),), Applicability.DISPLAY))

    @staticmethod
    def _flag_fix(program: Program, use) -> Fix | None:
        """Pass the function's training flag when it has exactly one; else suggest ``True``."""
        if use.how != "direct":
            return None   # the flag belongs to the batch norm, not to the call that builds it here
        function = use.module.functions.get(use.call.scope)
        flags = [name for name in (function.params if function else ()) if _is_flag(V.Ref(name, "", 0))]
        if len(flags) == 1:
            return Fix(f"Pass `{use.api.training}={flags[0]}`", (Edit.keyword(use.call.loc, use.api.training, flags[0]),))
        return Fix(f"Pass `{use.api.training}=True` while training (a Python bool or a boolean tensor)",
                   (Edit.keyword(use.call.loc, use.api.training, "True"),), Applicability.DISPLAY)

    def _tape_call(self, program: Program, module: ModuleFacts, call: CallFact) -> None:
        for site in program.sites(module, call):
            tapes = [ctx for ctx, frame in site.contexts()
                     if isinstance(v := program.deref(ctx.value, frame).value, V.Call)
                     and program.qualname(v.func, frame) in catalogue.GRADIENT_TAPE]
            if tapes and S.holds_batch_norm(program, call.value.func, site.frame) and \
                    not _trains_by_default(program, call.value.func, site.frame) and not S.in_keras_call(program, site):
                # Written inside the tape's block, the call only ever trains; in a helper the tape
                # calls (`generate()`), it may also serve sampling or evaluation: then it is a choice.
                lexical = any(ctx.loc in call.ctx for ctx in tapes)
                self.report(module, call.loc,
                           "a model with batch norm is called in tf.GradientTape without `training=True`: "
                           "it trains in inference mode",
                           autofix=Fix("Call the model with `training=True` in the training step",
                                       (Edit.argument(call.loc, "training", LAYER_CALL.index("training"), "True")
                                        if S.object_call_training(call.value, program, site.frame) is not None
                                        else Edit.keyword(call.loc, "training", "True"),),
                                       Applicability.SAFE if lexical else Applicability.UNSAFE))
                return


def _is_flag(value: V.Value) -> bool:
    """A training flag by its name (``is_training``, ``phase_train``, ``self.train_mode``) or learning_phase()."""
    if isinstance(value, V.Ref):
        return bool(catalogue.words(value.name.rsplit(".", 1)[-1]) & catalogue.FLAG_WORDS)
    if isinstance(value, V.Attr):
        return bool(catalogue.words(value.attr) & catalogue.FLAG_WORDS)
    if isinstance(value, V.Call):
        return isinstance(value.func, V.Dotted) and "learning_phase" in value.func.name
    return False


class PythonBoolOnTensor(Rule):
    code = "BN007"
    invalid = (
        """
import tensorflow as tf
is_training = tf.placeholder(tf.bool, [])
def bn(x, is_training):
    if is_training:  # expect: BN007
        return tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)
    return tf.contrib.layers.batch_norm(x, is_training=False, updates_collections=None, reuse=True)
y = bn(tf.placeholder(tf.float32, [None, 4]), is_training)
""",
    )
    valid = (
        """
import tensorflow as tf
import argparse
args = argparse.ArgumentParser().parse_args()
is_training = args.train
x = tf.placeholder(tf.float32, [None, 4])
if is_training:
    y = tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)
""",
    )

    def check(self, program: Program) -> None:
        if not program.batch_norms:
            return
        for module in program.modules:
            if not module.tests or not S.graph_mode(program, module):
                continue
            for test in module.tests:
                if not _is_flag(test.value):
                    continue
                for frame in program.frames(module, test.scope):
                    if S.is_graph_tensor(program, test.value, frame):
                        self.report(module, test.loc, self._message(test.kind, test.value))
                        break

    @staticmethod
    def _message(kind: str, value: V.Value) -> str:
        name = value.name if isinstance(value, V.Ref) else "this value"
        how = {"if": "`if`", "while": "`while`", "not": "`not`", "and": "`and`", "or": "`or`",
               "ifexp": "a conditional expression", "bool": "`bool()`", "assert": "`assert`"}.get(kind, kind)
        return f"{how} asks for the Python truth value of `{name}`, a tensor while the graph is built"


def _in_training_tape(program: Program, module: ModuleFacts, call: CallFact) -> bool:
    """The call is written inside a `with tf.GradientTape()` block of a function that applies gradients
    (a `test_step` copied from the training step keeps its tape and applies nothing: not this)."""
    if not any(other.scope == call.scope and isinstance(other.value.func, V.Attr)
               and other.value.func.attr in catalogue.TRAIN_OP_METHODS for other in module.calls):
        return False
    frame = program.lexical(module, call.scope)
    for loc in call.ctx:
        context = module.contexts.get(loc)
        value = program.deref(context.value, frame).value if context is not None else None
        if isinstance(value, V.Call) and program.qualname(value.func, frame) in catalogue.GRADIENT_TAPE:
            return True
    return False


def _inference_flag_fix(call: CallFact, keywords: tuple[str, ...], positional: int = -1) -> Fix | None:
    """``training=True`` written at this call becomes ``False``.  Unsafe: batch statistics at inference
    are sometimes deliberate (test-time adaptation, a GAN's sampler)."""
    for keyword in keywords:
        given = call.value.kwarg(keyword)
        if given is None and positional >= 0 and len(call.value.args) > positional and \
                not any(isinstance(arg, V.Starred) for arg in call.value.args[:positional + 1]):
            given = call.value.args[positional]
        if isinstance(given, V.Const) and given.value is True:
            return Fix(f"Pass `{keyword}=False` on the inference path",
                       (Edit.argument(call.loc, keyword, positional, "False"),), Applicability.UNSAFE)
    return None


class BatchStatsAtInference(Rule):
    code = "BN011"
    invalid = (
        """
import tensorflow as tf
def model(x, is_training=True):
    with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
        return tf.contrib.layers.batch_norm(x, is_training=is_training, updates_collections=None, scope='bn')
x = tf.placeholder(tf.float32, [None, 4])
train_logits = model(x)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(train_logits))
eval_logits = model(x)  # expect: BN011
eval_loss = tf.reduce_sum(eval_logits)
""",
    )
    valid = (
        """
import tensorflow as tf
def model(x, is_training=True):
    with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
        return tf.contrib.layers.batch_norm(x, is_training=is_training, updates_collections=None, scope='bn')
x = tf.placeholder(tf.float32, [None, 4])
train_logits = model(x)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(train_logits))
eval_logits = model(x, is_training=False)
eval_loss = tf.reduce_sum(eval_logits)
""",
    )

    fixes = (
        ("""
import keras
import tensorflow as tf
model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
model.compile(optimizer="adam", loss="mse")
@tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
def serve(features):
    return {"y": model(features, training=True)}
tf.saved_model.save(model, "/tmp/export", signatures={"serving_default": serve})
""", """
import keras
import tensorflow as tf
model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
model.compile(optimizer="adam", loss="mse")
@tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
def serve(features):
    return {"y": model(features, training=False)}
tf.saved_model.save(model, "/tmp/export", signatures={"serving_default": serve})
"""),
    )

    def check(self, program: Program) -> None:
        flow = program.dataflow
        uses = [use for use in program.batch_norms if use.how != "construct" and not use.unknown_args
                and (use.api.kind != catalogue.OP or use.api.training is None)]
        trained = [use for use in uses if flow.feeds_training(use)]
        from bnaudit.source.rules.cond import selected_layers
        picked = selected_layers(program)
        constant: list[BatchNormUse] = []   # layers in training mode whatever is fed
        restoring = program.executions.index(program.restores_and_exports, lambda site: site)
        copies: dict[int, list[_CopyLayer]] = {}   # the layers of each copy, by the call that starts it
        for use in uses:
            decision = batch_statistics_decision(program, use)
            if decision is None:
                continue
            stretch = self._untrained_copy(program, use, trained)
            if stretch:
                copies.setdefault(id(stretch[0][1]), []).append((stretch, use, decision))
                continue
            where = self._inference_execution(program, use, decision, trained, restoring) or self._serving(program, use)
            if where is not None:
                module, call = where
                self.report(module, call.loc, self._message(),
                           autofix=_inference_flag_fix(call, (use.api.training,) if use.api.training else ()))
            elif id(use.call.value) not in picked:
                constant.append(use)
        for layers in copies.values():
            self._report_copy(program, layers)
        self._evaluation_feeds(program, uses)
        self._evaluation_runs(program, constant)
        for use_module, call in self._keras_calls(program):
            self.report(use_module, call.loc, self._message(),
                       autofix=_inference_flag_fix(call, ("training",), positional=LAYER_CALL.index("training")))
        for use_module, call, keyword in self._restored_model_in_training_mode(program, restoring):
            self.report(use_module, call.loc,
                       f"a restored model is built with `{keyword}=True` in an execution that trains nothing: "
                       f"its batch norm runs with batch statistics", autofix=_inference_flag_fix(call, (keyword,)))
        self._learning_phase(program)

    def _report_copy(self, program: Program, layers: list[_CopyLayer]) -> None:
        """One finding per evaluation copy: at the one layer call that drops a ``train=False`` the copy
        asks for (the fix is there), else at the deepest call on the way that all its layers share
        (``self.sampler(z)``, not each of the layers a hand-copied ``sampler()`` repeats)."""
        decisions = {id(decision[1]): decision for _, _, decision in layers}
        if len(decisions) == 1 and any(self._asked_for_inference(program, use) for _, use, _ in layers):
            module, call = next(iter(decisions.values()))
            self.report(module, call.loc, self._dropped_flag_message())
            return
        common = layers[0][0]
        for stretch, _, _ in layers[1:]:
            common = _common_prefix(common, stretch)
        module, call = common[-1]
        self.report(module, call.loc, self._message())

    def _evaluation_feeds(self, program: Program, uses: list[BatchNormUse]) -> None:
        """Runs that evaluate with batch statistics: a run that trains nothing feeds True to the flag
        the layers read (``feed_dict={..., is_training: True}`` in a validation loop); and layers whose
        flag is the constant True in a program whose runs feed False to a mode flag, which therefore
        never reaches them (reported where the flag is set)."""
        flow = program.dataflow
        flags: dict[int, list[BatchNormUse]] = {}
        for use in uses:
            flag = training_arg(program, use)
            if flag is not None and isinstance(flag.value, V.Call) and \
                    program.qualname(flag.value.func, flag.frame) in catalogue.FLAG_PLACEHOLDERS:
                flags.setdefault(id(flag.value), []).append(use)
        # A flag that picks between layers through tf.cond is their flag too.
        from bnaudit.source.rules.cond import cond_layers
        for cond in cond_layers(program):
            predicate = arg(cond.call.value, COND, "pred")
            if predicate is not None:
                inside = [use for use in uses if any(m is cond.module and cond.call.loc < c.loc <= cond.call.end
                                                     for m, c in use.chain)]
                for site in program.sites(cond.module, cond.call):
                    flags.setdefault(id(program.deref(predicate, site.frame).value), []).extend(inside)
        training = [run for run in flow.runs if flow.runs_train_op(run)]
        training_feeds = {id(run.feed) for run in training if run.feed is not None}
        fed_false: list = []
        for run in flow.runs:
            if run.feed is None:
                continue
            for key, value in run.feed.items:
                if key is None:
                    continue
                placeholder = program.deref(key, run.feed_frame)
                fed = V.const(program.deref(value, run.feed_frame).value, "?")
                if not (isinstance(placeholder.value, V.Call) and program.qualname(
                        placeholder.value.func, placeholder.frame) in catalogue.FLAG_PLACEHOLDERS):
                    continue
                if fed is False:
                    fed_false.append((run, placeholder.value))
                elif fed is True and id(placeholder.value) in flags and id(run.feed) not in training_feeds \
                        and run not in training and self._apart_from_training(run, training) \
                        and not self._training_batch(program, run, training) \
                        and self._fetches_layers(program, run, self._evaluated(program, run,
                                                                               flags[id(placeholder.value)])):
                    self.report(run.module, run.call.loc, self._message())
        for run, placeholder in fed_false:
            if id(placeholder) in flags or not run.fetches:
                continue
            site = next(iter(program.sites(run.module, run.call)), None)
            for use in uses:
                decision = batch_statistics_decision(program, use)
                if decision is not None and site is not None and program.executions.together(site, use.site):
                    self.report(decision[0], decision[1].loc, self._message())

    def _evaluation_runs(self, program: Program, constant: list[BatchNormUse]) -> None:
        """A run of the training graph that never happens with a training run (`--mode test` running
        the graph that `--mode train` trains, a `test()` beside `train()`), or one apart from the
        training step that feeds other data (the test set every N steps), fetching layers built in
        training mode.  (Runs logging the training batch's loss every N steps are not it.)"""
        if not constant:
            return
        flow = program.dataflow
        training = [run for run in flow.runs if flow.runs_train_op(run)]
        if not training:
            return
        executions = program.executions
        training_feeds = {id(run.feed) for run in training if run.feed is not None}
        training_sites = executions.index((site for run in training for site in program.sites(run.module, run.call)),
                                          lambda site: site)
        constant_sites = executions.index(constant, lambda use: use.site)
        for run in flow.runs:
            if run in training or not run.fetches:
                continue
            sites = program.sites(run.module, run.call)
            if not sites:
                continue
            # Beside the training step: the trained layers themselves, on held-out data of its own
            # (`x: mnist.test.images` every N steps; sampling a GAN on other noise is not evaluation).
            beside = run.feed is not None and id(run.feed) not in training_feeds and _feeds_held_out(run) \
                and self._apart_from_training(run, training) and not self._training_batch(program, run, training)
            if not beside and any(executions.together(site, other) is not False
                                  for site in sites for other in executions.near(site, training_sites)):
                continue
            layers = list({id(use): use for site in sites for use in executions.near(site, constant_sites)
                           if executions.together(site, use.site)}.values())
            if beside:
                layers = [use for use in layers if program.dataflow.feeds_training(use) is True]
            if layers and self._fetches_layers(program, run, layers):
                self.report(run.module, run.call.loc, self._message())

    @staticmethod
    def _apart_from_training(run, training: list) -> bool:
        """A run of its own, not a forward pass beside the training step: in a function that runs no
        train op, in a loop of its own (a validation loop), or under an ``if`` the training runs are
        not under (every N steps), or after the training loop."""
        beside = [other for other in training if other.module is run.module and other.call.scope == run.call.scope]
        if not beside:
            return True
        scope_loops = [loop for loop in run.module.loops if loop.scope == run.call.scope]

        def inside(loop, one) -> bool:
            return loop.loc < one.call.loc <= loop.end
        loops = [loop for loop in scope_loops if inside(loop, run)]
        if any(not any(inside(loop, other) for other in beside) for loop in loops):
            return True
        if all(any(inside(loop, other) and not inside(loop, run) for loop in scope_loops) for other in beside):
            return True
        arms = set(run.call.branches)
        return any(not arms <= set(other.call.branches) for other in beside) and bool(arms)

    @staticmethod
    def _evaluated(program: Program, run, layers: list[BatchNormUse]) -> list[BatchNormUse]:
        """The layers a run evaluates rather than uses for training: in a program that trains, the
        trained ones (a DDPG target network, never trained by a loss, is run as part of training)."""
        site = next(iter(program.sites(run.module, run.call)), None)
        if site is None or program.dataflow.trains(site) is False:
            return layers
        return [use for use in layers if program.dataflow.feeds_training(use) is True]

    @staticmethod
    def _training_batch(program: Program, run, training: list) -> bool:
        """The run feeds the training data a training run feeds (logging the training loss every N
        steps, or the outputs over the whole training set: ``x: train_data`` beside ``x: train_data[idx]``)."""
        def source(value, frame) -> int | None:
            located = program.deref(value, frame)
            while isinstance(located.value, V.Subscript):
                located = program.deref(located.value.base, located.frame)
            return None if located.value is V.UNKNOWN else id(located.value)   # unknown: may be the same

        def fed(one, frame) -> dict[int, int | None]:
            return {id(program.deref(key, frame).value): source(value, frame)
                    for key, value in one.feed.items if key is not None}

        def frames(one) -> list:
            # A feed written in the run's function is read in each activation (`state_batch` is the
            # caller's batch, passed to both `train()` and `actions()`), else where it was written.
            if one.feed_frame is not one.frame:
                return [one.feed_frame]
            return [site.frame for site in program.sites(one.module, one.call)[:4]] or [one.feed_frame]
        mine_all = [fed(run, frame) for frame in frames(run)]
        for other in training:
            if other.feed is None:
                continue
            for theirs in (fed(other, frame) for frame in frames(other)):
                for mine in mine_all:
                    shared = [key for key in mine if key in theirs and (
                        mine[key] is None or theirs[key] is None or mine[key] == theirs[key])]
                    if len(shared) >= len(mine) - 1 and len(mine) > 1:   # all but the flag itself
                        return True
        return False

    @staticmethod
    def _fetches_layers(program: Program, run, layers: list[BatchNormUse]) -> bool:
        """The run computes something from the layers (not an initializer, not a summary op)."""
        if run.fetches is None:
            return False
        strings, _ = S.reached_calls(program, run.fetches, run.frame, budget=4000)
        return any(S.feeds_from(strings, use.chain) for use in layers)

    @staticmethod
    def _untrained_copy(program: Program, use: BatchNormUse, trained: list[BatchNormUse]
                        ) -> list[tuple[ModuleFacts, CallFact]]:
        """A copy of a trained layer, built beside it in the same graph, that no train op trains (an
        evaluation or sampling copy): the calls of its path from where it leaves the trained copy's."""
        if program.dataflow.feeds_training(use) is not False:
            return []
        sibling = _twin(program, use, trained, together=True)
        if sibling is None:
            return []
        stretch = program.executions.own_stretch(sibling.site, use.site)
        # A copy built only to create the variables (`unused = model(x, False)`) is no path.
        if not stretch or any(_result_unused(*step) for step in stretch):
            return []
        # A copy is the model built again: both paths call the same function where they part,
        # or both layers have the same (known) variables.  Otherwise it is another layer that
        # the same helper builds, which an incomplete trace only failed to see trained.
        scope = S.variable_scope_of(program, use)
        if scope is None or scope != S.variable_scope_of(program, sibling):
            if not _same_callee_where_paths_part(program, sibling, use):
                return []
        return stretch

    @staticmethod
    def _asked_for_inference(program: Program, use: BatchNormUse) -> bool:
        """A call on the way down to the layer passes False to a training parameter (``train=False``,
        ``is_training=False``) that the layer, in training mode all the same, never gets."""
        for frame in use.site.frame.chain():
            for name, (value, where) in (frame.bindings or {}).items():
                if catalogue.words(name) & catalogue.TRAINING_WORDS and V.const(program.deref(value, where).value, "?") is False:
                    return True
        return False

    @staticmethod
    def _inference_execution(program: Program, use: BatchNormUse, decision: tuple[ModuleFacts, CallFact],
                             trained: list[BatchNormUse], restoring: SitesByEntry[Site]
                             ) -> tuple[ModuleFacts, CallFact] | None:
        """An execution that trains nothing but restores or exports the model: reported where its path
        leaves the training path of the same entry (another ``--mode``), else where the flag is set if
        no training path runs that code, else at the call of the script that builds the model."""
        executions = program.executions
        if program.dataflow.trains(use.site) is not False:
            return None
        if not any(executions.together(site, use.site) for site in executions.near(use.site, restoring)):
            return None
        sibling = _twin(program, use, trained, together=False)
        if sibling is not None:
            where = executions.divergence(sibling.site, use.site)
            if where is not None:
                return where
        # Where the flag is decided, when only inference runs that code (`build_test_graph()` calling
        # `disp_net(x)` at its default is_training=True): the fix goes there.
        if id(decision[1]) not in _calls_on_training_paths(program):
            return decision
        # Else the call in the script itself that builds the model (one finding per inference path,
        # in the code that runs it, not in the model library the training path shares).
        path = executions.path(use.site)
        entry_module = path.frames[0].module
        for frame, step in reversed(list(zip(path.frames, path.steps))):
            if frame.module is entry_module:
                return entry_module, step
        return decision

    @staticmethod
    def _message() -> str:
        return "batch norm runs with batch statistics (training mode) on this inference path"

    @staticmethod
    def _dropped_flag_message() -> str:
        return ("the inference copy asks for `training=False`, but it never reaches this batch norm, "
                "which runs with batch statistics")

    @staticmethod
    def _is_serving(fn) -> bool:
        for decorator in fn.decorators:
            if isinstance(decorator, V.Call) and isinstance(decorator.func, V.Dotted) \
                    and decorator.func.name in catalogue.TF_FUNCTION and decorator.kwarg("input_signature"):
                return True
        return False

    def _serving(self, program: Program, use: BatchNormUse) -> tuple[ModuleFacts, CallFact] | None:
        """A layer built inside a serving signature (``tf.function(input_signature=...)``)."""
        for module, call in S.call_chain(use)[:-1]:
            fn = module.functions.get(call.scope.split(".<lambda")[0])
            if fn is not None and self._is_serving(fn):
                return module, call
        return None

    def _keras_calls(self, program: Program):
        """``model(x, training=True)`` on an inference path: in a serving signature, or a call whose
        result no train op's loss is computed from, in a program that trains (a `generate_images()`
        or `test_step()` beside the training step)."""
        flow = program.dataflow
        traces = [flow.reached(site) for site in flow.train_ops]
        for module in program.modules:
            for call in module.calls:
                if not isinstance(call.value.func, (V.Ref, V.Attr)):
                    continue
                given = S.object_call_training(call.value, program, program.lexical(module, call.scope))
                if not (isinstance(given, V.Const) and given.value is True):
                    continue
                if _in_training_tape(program, module, call):
                    continue   # a training step (BN006 asks for training=True here)
                fn = module.functions.get(call.scope.split(".<lambda")[0])
                serving = fn is not None and self._is_serving(fn)
                if not serving and (not traces or not all(complete for _, complete in traces)):
                    continue
                for site in program.sites(module, call):
                    if not S.holds_batch_norm(program, call.value.func, site.frame):
                        continue
                    chain = site.chain
                    if serving or not any(S.feeds_from(strings, chain) for strings, _ in traces):
                        yield module, call
                        break

    @staticmethod
    def _restored_model_in_training_mode(program: Program, restoring: SitesByEntry[Site]):
        """``network.inference(images, phase_train=True)`` into a model bnaudit cannot read (a module
        chosen by ``--model_def``, a library), in an execution that restores weights and trains
        nothing: a model built for inference with its training flag set."""
        executions = program.executions
        for module in program.modules:
            for call in module.calls:
                flags = [name for name, value in call.value.kwargs
                         if name in catalogue.TRAINING_KEYWORDS and V.const(value, "?") is True]
                if not flags or not isinstance(call.value.func, (V.Ref, V.Attr)):
                    continue
                for site in program.sites(module, call):
                    frame = site.frame
                    if program.callee(call.value, frame) is not None:
                        continue   # a program function: its layers are traced
                    final = program.deref(call.value.func, frame).value
                    if not (final is V.UNKNOWN or isinstance(final, V.Dotted)
                            and final.name.split(".", 1)[0] not in catalogue.LIBRARY_ROOTS):
                        continue   # a library API (dropout), or a value of its own
                    if program.dataflow.trains(site) is False and any(
                            executions.together(other, site) for other in executions.near(site, restoring)):
                        yield module, call, flags[0]
                        break

    def _learning_phase(self, program: Program) -> None:
        for module, call in program.calls_to(catalogue.SET_LEARNING_PHASE):
            frame = program.lexical(module, "")
            value = arg(call.value, SET_LEARNING_PHASE, "value")
            if value is None or program.deref(value, frame).value not in (V.Const(1), V.Const(True)):
                continue
            if any(other.loc > call.loc and self._exports(program, module, other) for other in module.calls):
                self.report(module, call.loc,
                           "the learning phase is set to 1 (training) before the model is exported: the export "
                           "normalizes with batch statistics",
                           fix="Call `set_learning_phase(0)` (or drop it) before building the model you export.")

    @staticmethod
    def _exports(program: Program, module: ModuleFacts, call: CallFact) -> bool:
        if isinstance(call.value.func, V.Attr) and (call.value.func.attr in catalogue.EXPORT_METHODS
                                                    or call.value.func.attr == "add_meta_graph_and_variables"):
            return True
        return program.qualname(call.value.func, program.lexical(module, call.scope)) in catalogue.SAVED_MODEL_SAVE
