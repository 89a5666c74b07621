"""BN009: a moving-average decay too close to 1 for the number of training steps the program states."""

from __future__ import annotations

import math

from bnaudit import catalogue
from bnaudit.signatures import FIT, SESSION_RUN, arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import Program
from bnaudit.source.rules import Rule

RESIDUAL_LIMIT = 0.1
_STEP_METHODS = catalogue.TRAIN_OP_METHODS | {"train_on_batch"}


def _top(scope: str) -> str:
    return scope.split(".<lambda")[0]


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _range_count(program: Program, value: V.Value, frame) -> int | None:
    located = program.deref(value, frame)
    call = located.value
    for _ in range(3):   # tqdm.tqdm(range(n)), enumerate(range(n))
        if isinstance(call, V.Call) and call.args and \
                program.qualname(call.func, located.frame) in catalogue.LENGTH_PRESERVING:
            located = program.deref(call.args[0], located.frame)
            call = located.value
    if not (isinstance(call, V.Call) and program.qualname(call.func, located.frame) in catalogue.RANGES):
        return None
    bounds = [S.const_value(program, program.deref(arg, located.frame)) for arg in call.args]
    if not bounds or any(not isinstance(b, int) or isinstance(b, bool) for b in bounds):
        return None
    start, stop, step = (0, bounds[0], 1) if len(bounds) == 1 else (bounds + [1])[:3]
    if not step:
        return None
    # range(10**20) has more items than len() can count (it overflows a C ssize_t).
    return _int(max(0, (stop - start + step - (1 if step > 0 else -1)) // step))


def _steps_here(program: Program, module: ModuleFacts, call: CallFact) -> bool | None:
    """Whether the call itself runs a training step (``minimize``, ``sess.run(train_op)``); None when
    only the functions it calls can tell."""
    func = call.value.func
    if isinstance(func, V.Attr) and func.attr in _STEP_METHODS:
        return True
    if isinstance(func, V.Attr) and func.attr == "run" and (call.value.args or call.value.kwarg("feed_dict")):
        # sess.run(train_op, ...), and train_op.run(feed_dict=...)
        fetches = arg(call.value, SESSION_RUN, "fetches") or func.base
        frame = program.lexical(module, call.scope)
        return S.contains(program, fetches, frame, lambda v, f: isinstance(v, V.Call) and isinstance(
            v.func, V.Attr) and v.func.attr in _STEP_METHODS | {"group"} and _has_train_op(v))
    return None


def _has_train_op(call: V.Call) -> bool:
    return any(isinstance(v, V.Call) and isinstance(v.func, V.Attr) and v.func.attr in _STEP_METHODS
               for v in V.walk(call))


def _steps(program: Program) -> tuple[frozenset[tuple[int, str]], dict[int, bool]]:
    """The functions that run a training step themselves, and the calls that do or do not (by id;
    absent: only their callees can tell)."""
    found: set[tuple[int, str]] = set()
    direct: dict[int, bool] = {}
    for module in program.modules:
        for call in module.calls:
            here = _steps_here(program, module, call)
            if here is not None:
                direct[id(call)] = here
                if here and call.scope:
                    found.add((id(module), call.scope.split(".<lambda")[0]))
    return frozenset(found), direct


def _is_step(program: Program, call: CallFact, stepping: frozenset, direct: dict[int, bool]) -> bool:
    here = direct.get(id(call))
    if here is not None:
        return here
    return bool(stepping) and any((id(target[0]), target[1].qualname) in stepping for target in program.targets(call))


_TRAINING_CALLS = frozenset({"train", "fit", "train_and_evaluate"})


def _is_training_call(program: Program, call: CallFact, named: set[int]) -> bool:
    func = call.value.func
    if isinstance(func, V.Attr):
        return func.attr in _TRAINING_CALLS
    return id(call) in named


def training_lengths(program: Program) -> list[tuple[ModuleFacts, str, int]]:
    """Every training length the program states as literals, with the module and function that state it."""
    cache = program.__dict__.setdefault("_training_lengths", [])
    if cache:
        return cache[0]
    lengths: list[tuple[ModuleFacts, str, int]] = []
    stepping, direct = _steps(program)
    named = {id(call) for _, call in program.calls_named(lambda name: name.endswith(("TrainSpec", "learning.train")))
             if not isinstance(call.value.func, V.Attr)}
    for module in program.modules:
        module_steps = False
        for call in module.calls:
            frame = program.lexical(module, call.scope)
            if _is_training_call(program, call, named):
                for key, value in call.value.kwargs:
                    if key in catalogue.STEP_KEYWORDS and _int(S.const_value(program, program.deref(value, frame))):
                        lengths.append((module, _top(call.scope), S.const_value(program, program.deref(value, frame))))
                epochs = S.const_value(program, program.deref(arg(call.value, FIT, "epochs") or V.UNKNOWN, frame))
                per = S.const_value(program, program.deref(arg(call.value, FIT, "steps_per_epoch") or V.UNKNOWN, frame))
                if _int(epochs) and _int(per):
                    lengths.append((module, _top(call.scope), epochs * per))
            if _is_step(program, call, stepping, direct):
                module_steps = True
                enclosing = [loop for loop in module.loops
                             if loop.scope == call.scope and loop.loc < call.loc <= loop.end]
                counts = [_range_count(program, loop.iter, frame) for loop in enclosing]
                fn = module.functions.get(_top(call.scope))
                if fn is not None and fn.class_name and fn.qualname.rsplit(".", 1)[-1] in catalogue.STEP_HOOKS:
                    continue  # a loop inside Keras's train_step repeats within one step of fit()
                if enclosing and None not in counts:
                    lengths.append((module, _top(call.scope), math.prod(counts)))
        if module_steps:
            # NUM_STEPS = 1000 at the top of a training script.
            for (scope, name), assigns in module.assigns.items():
                if not scope and name.lower() in catalogue.STEP_NAMES:
                    lengths.extend((module, "", value) for a in assigns if (value := _int(V.const(a.value))))
    cache.append(lengths)
    return lengths


def _hand_written_averages(program: Program):
    """``tf.assign(pop_mean, pop_mean * decay + batch_mean * (1 - decay))`` into a variable that a
    hand-written ``tf.nn.batch_normalization`` normalizes with: each instantiation with its decay."""
    statistics: dict[int, set[tuple[str, str]]] = {}
    for use in program.batch_norms:
        if use.api.kind == catalogue.OP:
            for key in ("mean", "variance"):
                given = use.args.get(key)
                if given is not None and isinstance(given.value, V.Ref):
                    statistics.setdefault(id(use.module), set()).add((given.value.scope, given.value.name))
    for module in program.modules:
        names = statistics.get(id(module))
        if not names:
            continue
        for call in module.calls:
            args = call.value.args
            if len(args) < 2 or not isinstance(args[0], V.Ref) or (args[0].scope, args[0].name) not in names or \
                    program.qualname(call.value.func, program.lexical(module, call.scope)) not in catalogue.ASSIGN:
                continue
            complement = next((v.right for v in V.walk(args[1]) if isinstance(v, V.BinOp) and v.op == "-"
                               and V.const(v.left) == 1), None)
            if complement is None:
                continue
            for site in program.sites(module, call):
                decay = S.const_value(program, program.deref(complement, site.frame))
                if isinstance(decay, float) and 0.0 < decay < 1.0:
                    yield module, call, site, decay
                    break


class SlowMovingAverage(Rule):
    code = "BN009"
    invalid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)  # expect: BN009
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
with tf.Session() as sess:
    for step in range(1000):
        sess.run(train_op)
""",
        """
import tensorflow as tf
def bn(x, is_training, decay=0.999):
    pop_mean = tf.Variable(tf.zeros([4]), trainable=False)
    if is_training:
        mean, var = tf.nn.moments(x, [0])
        update = tf.assign(pop_mean, decay * pop_mean + (1 - decay) * mean)  # expect: BN009
        with tf.control_dependencies([update]):
            return tf.nn.batch_normalization(x, mean, var, None, None, 1e-3)
    return tf.nn.batch_normalization(x, pop_mean, 1.0, None, None, 1e-3)
x = tf.placeholder(tf.float32, [None, 4])
h = bn(x, True)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
with tf.Session() as sess:
    for step in range(1000):
        sess.run(train_op)
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.contrib.layers.batch_norm(x, decay=0.9, is_training=True, updates_collections=None)
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
with tf.Session() as sess:
    for step in range(1000):
        sess.run(train_op)
""",
    )

    def check(self, program: Program) -> None:
        uses = [use for use in program.batch_norms
                if use.api.stateful and use.api.decay and use.how != "apply" and use.api.family != "bnaudit"]
        averages = list(_hand_written_averages(program))
        if not uses and not averages:
            return
        lengths = training_lengths(program)
        if not lengths:
            return
        reported: set[tuple[int, str]] = set()
        for module, call, site, decay in averages:
            if (id(module), call.scope) in reported:
                continue   # the moving mean's finding covers the moving variance beside it
            calls = site.chain
            stated = [n for m, scope, n in lengths
                      if any(m is cm and (not scope or _top(c.scope) == scope or not c.scope) for cm, c in calls)]
            if stated and decay ** max(stated) > RESIDUAL_LIMIT:
                steps = max(stated)
                needed = math.ceil(math.log(0.01) / math.log(decay))
                reported.add((id(module), call.scope))
                self.report(module, call.loc,
                           f"decay {decay} over the {steps} training steps run leaves {decay ** steps:.2f} of this "
                           f"moving average's initial value (it needs {needed} steps)",
                           fix="Lower the decay (0.9 needs 44 steps), or use bnaudit.layers, whose moving "
                               "averages are bias-corrected.")
        for use in uses:
            # The longest run stated where this layer is built: in a function on its call chain, or at
            # the top level of a module on it.
            calls = S.call_chain(use)
            stated = [n for module, scope, n in lengths
                      if any(m is module and (not scope or _top(c.scope) == scope or not c.scope) for m, c in calls)]
            if not stated:
                continue
            steps = max(stated)
            given = program.arg(use, use.api.decay)
            if given is None:
                if use.unknown_args:
                    continue
                decay = use.api.decay_default
            else:
                decay = given.value.value if isinstance(given.value, V.Const) else None
            if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 < decay < 1.0:
                continue
            residual = decay ** steps
            if residual <= RESIDUAL_LIMIT:
                continue
            needed = math.ceil(math.log(0.01) / math.log(decay))
            source = "" if given is not None else f" (the default of {use.api.qualnames[0].rsplit('.', 1)[-1]})"
            module, loc = use.sources.get(use.api.decay, (use.module, use.call.loc))
            self.report(module, loc,
                       f"{use.api.decay}={decay}{source} over the {steps} training steps run leaves {residual:.2f} "
                       f"of the initializer in the moving statistics (they need {needed} steps)",
                       fix=f"Lower {use.api.decay} (0.9 needs {math.ceil(math.log(0.01) / math.log(0.9))} steps), "
                           f"or use bnaudit.layers, whose moving averages are bias-corrected.")
