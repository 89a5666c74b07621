"""BN004: a saver or checkpoint over trainable variables only, which drops the moving statistics."""

from __future__ import annotations

import re

from bnaudit import catalogue
from bnaudit.source import values as V
from bnaudit.source.program import Frame, Program
from bnaudit.source.rules import Report, Rule
from bnaudit.source.rules.updates import reachable_modules

_BN_NAME_FILTER = re.compile(r"moving|batchnorm|batch_norm|bn\b|/bn|bn/", re.IGNORECASE)
_ALL_VARIABLES = frozenset({
    "tensorflow.global_variables", "tensorflow.all_variables", "tensorflow.model_variables",
    "tensorflow.moving_average_variables", "tensorflow.local_variables",
    "tensorflow.contrib.framework.get_variables", "tensorflow.contrib.slim.get_variables",
    "tensorflow.contrib.framework.get_model_variables", "tensorflow.contrib.slim.get_model_variables",
    "tf_slim.get_variables", "tf_slim.get_model_variables",
})
_PASSTHROUGH = frozenset({"builtins.list", "builtins.sorted", "builtins.tuple", "builtins.set"})


def trainable_only(program: Program, value: V.Value, frame: Frame | None, depth: int = 0) -> bool | None:
    """True: the list holds trainable variables only (plus extras); False: it has the others; None: unknown."""
    if depth > 8:
        return None
    located = program.deref(value, frame)
    current, frame = located.value, located.frame
    if isinstance(current, V.Attr) and current.attr in catalogue.TRAINABLE_ATTRIBUTES:
        return True
    if isinstance(current, V.Attr) and current.attr in ("variables", "weights", "non_trainable_variables"):
        return False
    if isinstance(current, V.Call):
        name = program.qualname(current.func, frame)
        if name in catalogue.TRAINABLE_VARIABLE_CALLS:
            return True
        if name in _ALL_VARIABLES:
            return False
        if name == "tensorflow.get_collection" and current.args:
            key = program.deref(current.args[0], frame).value
            if isinstance(key, V.Dotted) and key.name.endswith("TRAINABLE_VARIABLES"):
                return True
            if isinstance(key, V.Dotted) and key.name.endswith(("GLOBAL_VARIABLES", "MODEL_VARIABLES")):
                return False
        if name in _PASSTHROUGH and current.args:
            return trainable_only(program, current.args[0], frame, depth + 1)
        return None
    if isinstance(current, V.BinOp) and current.op == "+":
        left = trainable_only(program, current.left, frame, depth + 1)
        right = trainable_only(program, current.right, frame, depth + 1)
        if left is False or right is False:
            return False
        return True if left or right else None
    if isinstance(current, V.Comprehension):
        source = trainable_only(program, current.iter, frame, depth + 1)
        if source is True:
            return True
        if source is False and current.negated and any(_BN_NAME_FILTER.search(w) for w in current.words):
            return True  # [v for v in tf.global_variables() if 'moving' not in v.name]
        return source
    if isinstance(current, V.Seq):
        # An explicit list of extras ([global_step]) says nothing by itself.
        return None
    return None


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

    def check(self, program: Program, report: Report) -> None:
        uses = [use for use in program.batch_norms if use.api.stateful]
        if not uses:
            return
        for module in program.modules:
            reachable = reachable_modules(program, module)
            if not any(id(use.site.root.module) in reachable or id(use.module) in reachable for use in uses):
                continue
            for call in module.calls:
                frame = program.lexical(module, call.scope)
                name = program.qualname(call.value.func, frame)
                if name in catalogue.SAVERS:
                    var_list = call.value.args[0] if call.value.args else call.value.kwarg("var_list")
                    if var_list is not None and trainable_only(program, var_list, frame):
                        report.add(self.code, module, call.loc, self._message("saver"))
                elif name in catalogue.CHECKPOINTS:
                    values = [v for _, v in call.value.kwargs] + list(call.value.dstar)
                    if any(trainable_only(program, v, frame) for v in values):
                        report.add(self.code, module, call.loc, self._message("checkpoint"))

    @staticmethod
    def _message(what: str) -> str:
        return (f"this {what} saves only trainable variables, but moving_mean/moving_variance are not trainable: "
                f"they are never saved, and a restored model fails with 'uninitialized value .../moving_mean' or "
                f"runs inference with the initial statistics (mean 0, variance 1)")
