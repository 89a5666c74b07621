"""BN005: variances that can go negative (one-pass E[x^2]-E[x]^2), decays outside [0, 1], epsilon <= 0."""

from __future__ import annotations

from bnaudit import catalogue
from bnaudit.fixes import Applicability, Edit, Fix
from bnaudit.signatures import arg
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import ModuleFacts
from bnaudit.source.program import Frame, Program
from bnaudit.source.rules import Rule


def _square_of(program: Program, value: V.Value, frame: Frame | None) -> V.Value | None:
    located = program.deref(value, frame)
    current = located.value
    if isinstance(current, V.Call) and program.qualname(current.func, located.frame) in catalogue.SQUARE \
            and current.args:
        return current.args[0]
    if isinstance(current, V.BinOp) and current.op == "**" and V.const(current.right) == 2:
        return current.left
    if isinstance(current, V.BinOp) and current.op == "*" and current.left == current.right:
        return current.left
    return None


def _is_mean(program: Program, value: V.Value, frame: Frame | None) -> V.Value | None:
    located = program.deref(value, frame)
    current = located.value
    if isinstance(current, V.Call) and program.qualname(current.func, located.frame) in catalogue.MEAN \
            and current.args:
        return current.args[0]
    return None


def mean_of_squares(program: Program, value: V.Value, frame: Frame | None, depth: int = 0) -> bool:
    """Whether a value is E[x^2] as one-pass code builds it: ``mean(x**2)``, averaged across replicas
    (``allreduce(mean_sq)``, ``cross_replica_sum(mean_sq) / n``), mixed with a reference batch's
    (``a * mean_sq + b * ref_mean_sq``), plus epsilon, or rebuilt as ``variance + mean**2``."""
    if depth > 6:
        return False
    located = program.deref(value, frame)
    current, frame = located.value, located.frame
    if isinstance(current, V.Call):
        name = program.qualname(current.func, frame)
        if name in catalogue.MEAN:
            return bool(current.args) and _square_of(program, current.args[0], frame) is not None
        first = current.args[0] if current.args else (current.kwargs[0][1] if current.kwargs else None)
        if name in catalogue.SQUARE or first is None:
            return False
        # An average across replicas or devices: a function of the per-replica E[x^2].
        return mean_of_squares(program, first, frame, depth + 1)
    if isinstance(current, V.BinOp):
        if current.op in ("*", "/"):
            return any(mean_of_squares(program, side, frame, depth + 1) for side in (current.left, current.right))
        if current.op == "+":
            sides = (current.left, current.right)
            if any(mean_of_squares(program, side, frame, depth + 1) for side in sides):
                return True
            # shard_variance + tf.square(shard_mean): E[x^2] rebuilt from the moments
            return any(_square_of(program, side, frame) is not None for side in sides) and \
                not all(_square_of(program, side, frame) is not None for side in sides)
    return False


def is_one_pass_variance(program: Program, value: V.Value, frame: Frame | None) -> bool:
    """``mean(x**2) - mean(x)**2`` in any spelling (see ``mean_of_squares``)."""
    if not (isinstance(value, V.BinOp) and value.op == "-"):
        return False
    return _square_of(program, value.right, frame) is not None and mean_of_squares(program, value.left, frame)


def _feeds(program: Program, value: V.Value, frame: Frame | None, target: V.Value, depth: int = 0) -> bool:
    """Whether ``target`` flows into ``value`` without passing through a clamp to >= 0."""
    if depth > 8:
        return False
    located = program.deref(value, frame)
    current = located.value
    if current is target:
        return True
    if isinstance(current, V.Call) and program.qualname(current.func, located.frame) in catalogue.CLAMPS:
        return False
    if isinstance(current, (V.Seq, V.Starred, V.BinOp, V.Call, V.Subscript, V.Unary)):
        return any(_feeds(program, child, located.frame, target, depth + 1) for child in current.children()
                   if child is not getattr(current, "func", None))
    return False


# What may take a variance: a normalization op, an assignment or moving average, a square root.
_VARIANCE_CALLEES = frozenset(
    {name for api in catalogue.APIS if api.kind == catalogue.OP for name in api.qualnames}
    | catalogue.ASSIGN | set(catalogue.MOVING_AVERAGE_DECAY) | catalogue.ROOTS)


def _variance_consumers(program: Program, module: ModuleFacts):
    """(call, frame, argument values) for calls that normalize with, or average, a variance."""
    methods = [call for call in module.calls
               if isinstance(call.value.func, V.Attr) and call.value.func.attr in ("assign", "apply")]
    named = [call for _, call in program.calls_to(_VARIANCE_CALLEES, module)]
    for call in sorted({id(call): call for call in methods + named}.values(), key=lambda call: call.loc):
        frame = program.lexical(module, call.scope)
        name = program.qualname(call.value.func, frame)
        api = catalogue.lookup(name)
        args: list[V.Value] = []
        if api is not None and api.kind == catalogue.OP:
            index = api.param_index("variance")
            if index is not None and len(call.value.args) > index:
                args.append(call.value.args[index])
            if call.value.kwarg("variance") is not None:
                args.append(call.value.kwarg("variance"))
        elif name in catalogue.ASSIGN or name in catalogue.MOVING_AVERAGE_DECAY or name in catalogue.ROOTS or (
                isinstance(call.value.func, V.Attr) and call.value.func.attr in ("assign", "apply")):
            args.extend(call.value.args)
            args.extend(v for _, v in call.value.kwargs)
        if args:
            yield call, frame, args
    # A function that returns the variance (a `_moments` override, a sync-statistics helper) hands it
    # to whatever normalizes with it.
    for fn in module.functions.values():
        if fn.returns and not fn.is_lambda:
            yield None, program.lexical(module, fn.qualname), fn.returns


class NegativeVariance(Rule):
    code = "BN005"
    invalid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
mean = tf.reduce_mean(x, 0)
var = tf.reduce_mean(tf.square(x), 0) - tf.square(mean)  # expect: BN005
y = tf.nn.batch_normalization(x, mean, var, None, None, 1e-3)
""",
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, decay=1.5, updates_collections=None)  # expect: BN005
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
mean = tf.reduce_mean(x, 0)
var = tf.maximum(tf.reduce_mean(tf.square(x), 0) - tf.square(mean), 0.)
y = tf.nn.batch_normalization(x, mean, var, None, None, 1e-3)
""",
    )

    fixes = (
        ("""
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.layers.batch_normalization(x, epsilon=0, training=True)
""", """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.layers.batch_normalization(x, epsilon=0.001, training=True)
"""),
    )

    def check(self, program: Program) -> None:
        for module in program.modules:
            self._one_pass(program, module)
            self._unshifted_moments(program, module)
            self._hand_written_decay(program, module)
        for use in program.batch_norms:
            if use.how == "apply":
                continue
            decay = S.const_value(program, program.arg(use, use.api.decay))
            if _number(decay) and not 0.0 <= decay <= 1.0:
                self.report(use.module, use.call.loc,
                           f"{use.api.decay}={decay} is outside [0, 1]: the moving variance can turn negative", fix=f"Use a {use.api.decay} in [0, 1), such as 0.9 or 0.99.",
                           autofix=_default_fix(use, use.api.decay, use.api.decay_default))
            epsilon = S.const_value(program, program.arg(use, use.api.epsilon))
            if _number(epsilon) and epsilon <= 0:
                self.report(use.module, use.call.loc,
                           f"{use.api.epsilon}={epsilon} is not positive: a channel with zero variance divides by "
                           f"zero (Inf/NaN outputs)", fix="Use a small positive epsilon such as 1e-3.",
                           autofix=_default_fix(use, use.api.epsilon, use.api.epsilon_default))

    def _one_pass(self, program: Program, module: ModuleFacts) -> None:
        candidates = [(loc, value) for loc, value in module.subtractions
                      if isinstance(value, V.BinOp) and value.op == "-"]
        if not candidates:
            return
        consumers = list(_variance_consumers(program, module))
        for loc, value in candidates:
            if not isinstance(value.right, (V.Call, V.BinOp, V.Ref)):
                continue
            # Read in each activation: `_normalize(self, x, mean, mean_sq)` gets its E[x^2] from a caller.
            scope = _scope_at(module, loc)
            frames = [program.lexical(module, scope)] + (program.frames(module, scope) if scope else [])
            if not any(is_one_pass_variance(program, value, frame) for frame in frames):
                continue
            if any(_feeds(program, arg, cframe, value) for _, cframe, args in consumers for arg in args):
                self.report(module, loc,
                           "one-pass variance E[x^2] - E[x]^2 feeds a batch norm unclamped: it can go negative",
                           fix="Use tf.nn.moments (two-pass) or clamp: tf.maximum(variance, 0.).")

    def _unshifted_moments(self, program: Program, module: ModuleFacts) -> None:
        """``tf.nn.normalize_moments(counts, mean_ss, variance_ss, shift=None)``: TF's own one-pass
        variance, from the sums of x and x^2 that ``tf.nn.sufficient_statistics`` returns unshifted."""
        for _, call in program.calls_to(catalogue.ONE_PASS_MOMENTS, module):
            frame = program.lexical(module, call.scope)
            shift = arg(call.value, catalogue.ONE_PASS_MOMENTS[program.qualname(call.value.func, frame)], "shift")
            if shift is None or isinstance(program.deref(shift, frame).value, V.Const) and \
                    program.deref(shift, frame).value.value is None:
                self.report(module, call.loc,
                           "normalize_moments without a shift computes a one-pass variance, which can go negative",
                           fix="Use tf.nn.moments (two-pass), or pass the shift (a mean estimate) to both "
                               "sufficient_statistics and normalize_moments, and clamp at 0.")

    def _hand_written_decay(self, program: Program, module: ModuleFacts) -> None:
        for _, call in program.calls_to(catalogue.MOVING_AVERAGE_DECAY, module):
            frame = program.lexical(module, call.scope)
            given = arg(call.value, catalogue.MOVING_AVERAGE_DECAY[program.qualname(call.value.func, frame)], "decay")
            decay = program.deref(given, frame).value if given is not None else None
            if isinstance(decay, V.Const) and _number(decay.value) and not 0.0 <= decay.value <= 1.0:
                self.report(module, call.loc,
                           f"moving-average decay {decay.value} is outside [0, 1]: the average diverges and a "
                           f"moving variance can turn negative", fix="Use a decay in [0, 1), such as 0.99.")


def _default_fix(use, name: str, default: float | None) -> Fix | None:
    """The API's default for an argument written at the call.  Display-only: which value the model
    needs is the author's call, and the default changes what the trained model computes."""
    if default is None or use.how != "direct" or name in use.sources:
        return None
    index = use.api.param_index(name)
    return Fix(f"Use the default {name}={default!r}",
               (Edit.argument(use.call.loc, name, -1 if index is None else index, repr(default)),),
               Applicability.DISPLAY)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scope_at(module: ModuleFacts, loc: int) -> str:
    """The innermost function containing node ``loc``."""
    best, start = "", -1
    for fn in module.functions.values():
        if fn.loc < loc <= fn.end and fn.loc > start and not fn.is_lambda:
            best, start = fn.qualname, fn.loc
    return best
