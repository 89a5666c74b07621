"""BN004: a saver or checkpoint over trainable variables only, which drops the moving statistics."""

from __future__ import annotations

import re

from bnaudit import catalogue
from bnaudit.fixes import TF1, Applicability, Edit, Fix
from bnaudit.signatures import SAVER, arg
from bnaudit.source import values as V
from bnaudit.source.program import Frame, Program
from bnaudit.source.rules import Rule

_BN_NAME_FILTER = re.compile(r"moving|batchnorm|batch_norm|bn\b|/bn|bn/", re.IGNORECASE)
_ALL_VARIABLES = frozenset({
    "tensorflow.global_variables", "tensorflow.all_variables", "tensorflow.moving_average_variables",
    "tensorflow.contrib.framework.get_variables", "tensorflow.contrib.slim.get_variables", "tf_slim.get_variables",
})
_MODEL_VARIABLES = frozenset({
    "tensorflow.model_variables", "tensorflow.contrib.framework.get_model_variables",
    "tensorflow.contrib.slim.get_model_variables", "tf_slim.get_model_variables",
})
_PASSTHROUGH = frozenset({"builtins.list", "builtins.sorted", "builtins.tuple", "builtins.set"})

# What a variable list is made of.
TRAINABLE, MODEL, ALL, EXTRA = "trainable", "model", "all", "extra"


def variable_kinds(program: Program, value: V.Value, frame: Frame | None, depth: int = 0) -> set[str] | None:
    """The kinds of variables a list is built from, or None when bnaudit cannot tell.

    ``trainable``: trainable variables only (also what is left after filtering batch-norm names out);
    ``model``: tf.model_variables(); ``all``: every global variable; ``extra``: a hand-written list.
    """
    if depth > 8:
        return None
    located = program.deref(value, frame)
    current, frame = located.value, located.frame
    if isinstance(current, V.Attr):
        if current.attr in catalogue.TRAINABLE_ATTRIBUTES:
            return {TRAINABLE}
        if current.attr in ("variables", "weights", "non_trainable_variables", "non_trainable_weights"):
            return {ALL}
        return None
    if isinstance(current, V.Call):
        name = program.qualname(current.func, frame)
        if name in catalogue.TRAINABLE_VARIABLE_CALLS:
            return {TRAINABLE}
        if name in _ALL_VARIABLES:
            return {ALL}
        if name in _MODEL_VARIABLES:
            return {MODEL}
        if name in catalogue.GET_COLLECTION and current.args:
            key = program.deref(current.args[0], frame).value
            if isinstance(key, V.Dotted):
                for suffix, kind in (("TRAINABLE_VARIABLES", TRAINABLE), ("GLOBAL_VARIABLES", ALL),
                                     ("MODEL_VARIABLES", MODEL)):
                    if key.name.endswith(suffix):
                        return {kind}
            return None
        if name in _PASSTHROUGH and current.args:
            return variable_kinds(program, current.args[0], frame, depth + 1)
        return None
    if isinstance(current, V.BinOp) and current.op == "+":
        left = variable_kinds(program, current.left, frame, depth + 1)
        right = variable_kinds(program, current.right, frame, depth + 1)
        return left | right if left is not None and right is not None else None
    if isinstance(current, V.Comprehension):
        source = variable_kinds(program, current.iter, frame, depth + 1)
        if source and current.negated and any(_BN_NAME_FILTER.search(w) for w in current.words):
            return {TRAINABLE}  # [v for v in tf.global_variables() if 'moving' not in v.name]
        return source
    if isinstance(current, V.Seq):
        return {EXTRA}
    return None


def omits_moving_stats(kinds: set[str] | None, uses: list) -> bool:
    """A list of trainable variables (plus extras) lacks the moving statistics; model variables add
    them only for layers that register them there (contrib/slim, bnaudit; not tf.layers or Keras)."""
    if not kinds or ALL in kinds or TRAINABLE not in kinds:
        return False
    if MODEL in kinds:
        return any(not use.api.model_variables for use in uses)
    return True


def moving_stats_trainable(program: Program, use) -> bool:
    """contrib/slim ``variables_collections=[tf.GraphKeys.TRAINABLE_VARIABLES]`` (or a dict naming it for
    moving_mean and moving_variance) puts the moving statistics in tf.trainable_variables()."""
    given = program.arg(use, use.api.variables_collections) if use.api.variables_collections else None
    if given is None:
        return False

    def trainable(value, frame) -> bool:
        final = program.deref(value, frame)
        items = final.value.items if isinstance(final.value, V.Seq) else (final.value,)
        return any(isinstance(d := program.deref(item, final.frame).value, V.Dotted)
                   and d.name.endswith("GraphKeys.TRAINABLE_VARIABLES") for item in items)

    if isinstance(given.value, V.Dict):
        wanted = {"moving_mean", "moving_variance"}
        found = {V.const(key) for key, item in given.value.items if key is not None and trainable(item, given.frame)}
        return wanted <= found
    return trainable(given.value, given.frame)


def saver_only_restores(program: Program, module, call) -> bool:
    """A saver that is only ever used to ``restore`` (pre-trained weights), never to ``save`` nor handed
    to anything else (a Supervisor, a Scaffold, a helper)."""
    roles: set[str] = set()
    saver = call.value
    for other_module in program.modules:
        for other in other_module.calls:
            if other is call:
                continue
            frame = program.lexical(other_module, other.scope)
            func = other.value.func
            if isinstance(func, V.Attr) and program.deref(func.base, frame).value is saver:
                roles.add("restore" if func.attr == "restore" else "other")
            elif any(program.deref(arg, frame).value is saver
                     for arg in (*other.value.args, *(v for _, v in other.value.kwargs))):
                roles.add("other")
    return roles == {"restore"}


class SaverOmitsMovingStats(Rule):
    code = "BN004"
    invalid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, updates_collections=None)
global_step = tf.train.get_or_create_global_step()
saver = tf.train.Saver(tf.trainable_variables() + [global_step])  # expect: BN004
""",
    )
    valid = (
        """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, updates_collections=None)
saver = tf.train.Saver([v for v in tf.global_variables() if 'Adam' not in v.name])
""",
    )

    fixes = (
        ("""
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, updates_collections=None)
saver = tf.train.Saver(tf.trainable_variables(), max_to_keep=3)
""", """
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.contrib.layers.batch_norm(x, updates_collections=None)
saver = tf.train.Saver(tf.global_variables(), max_to_keep=3)
"""),
        ("""
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.layers.batch_normalization(x, training=False)
step = tf.train.get_or_create_global_step()
saver = tf.train.Saver(var_list=tf.trainable_variables() + [step])
""", """
import tensorflow.compat.v1 as tf
x = tf.placeholder(tf.float32, [None, 4])
y = tf.layers.batch_normalization(x, training=False)
step = tf.train.get_or_create_global_step()
saver = tf.train.Saver(var_list=tf.global_variables())
"""),
    )

    def check(self, program: Program) -> None:
        uses = [use for use in program.batch_norms if use.api.stateful and use.how != "apply"
                and not moving_stats_trainable(program, use)]
        if not uses:
            return
        for module, call in program.calls_to(catalogue.SAVERS | catalogue.CHECKPOINTS):
            frame = program.lexical(module, call.scope)
            name = program.qualname(call.value.func, frame)
            if name in catalogue.SAVERS:
                var_list = arg(call.value, SAVER, "var_list")
                values, what = ([var_list] if var_list is not None else []), "saver"
            else:
                values, what = [v for _, v in call.value.kwargs] + list(call.value.dstar), "checkpoint"
            if not values or not any(variable_kinds(program, v, frame) for v in values):
                continue
            restores_only: bool | None = None
            for site in program.sites(module, call):
                # The layers of this saver's graph: the same execution, or one that may run inside it.
                nearby = [use for use in uses if program.executions.together(site, use.site) is not False]
                if not nearby or not any(omits_moving_stats(variable_kinds(program, v, site.frame), nearby)
                                         for v in values):
                    continue
                # Restoring pre-trained weights into a model that is then trained is fine: training
                # re-estimates the moving statistics, and whatever writes the result saves them.
                if restores_only is None:
                    restores_only = what == "saver" and saver_only_restores(program, module, call)
                if restores_only and program.dataflow.trains(site) is not False:
                    continue
                fix = None
                if what == "saver":
                    kinds = variable_kinds(program, values[0], site.frame)
                    fix = Fix("Save `tf.global_variables()`",
                              (Edit.argument(call.loc, "var_list", SAVER.index("var_list"),
                                             f"{TF1}.global_variables()"),),
                              # Only trainable variables: the checkpoint gains the moving statistics (and
                              # the optimizer's slots). Anything more was chosen by hand: keep it a choice.
                              Applicability.SAFE if kinds == {TRAINABLE} and not isinstance(
                                  program.deref(values[0], site.frame).value, V.Comprehension)
                              else Applicability.UNSAFE)
                self.report(module, call.loc, self._message(what), autofix=fix)
                break

    @staticmethod
    def _message(what: str) -> str:
        return (f"this {what} saves only trainable variables, so batch norm's moving_mean/moving_variance "
                f"(not trainable) are never saved")
