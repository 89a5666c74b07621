"""BN008: ``tf.cond`` choosing between two batch-norm layers instead of passing the flag to one."""

from __future__ import annotations

from bnaudit import catalogue, faults
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Frame, Program
from bnaudit.source.rules import Report, Rule
from bnaudit.source.rules.scopes import _reuse, _scope
from bnaudit.source.rules.updates import _building_functions

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
    )

    def check(self, program: Program, report: Report) -> None:
        if not program.batch_norms:
            return
        for module in program.modules:
            for call in module.calls:
                frame = program.lexical(module, call.scope)
                if program.qualname(call.value.func, frame) not in catalogue.COND:
                    continue
                branches = self._branches(call.value)
                if len(branches) != 2:
                    continue
                kinds = [self._kind(program, module, call, branch, frame) for branch in branches]
                if None in kinds:
                    continue
                if OUTSIDE in kinds:
                    report.add(self.code, module, call.loc,
                               "tf.cond picks between two batch-norm layers that are both built outside it, so "
                               "both run on every step: the moving averages are updated with evaluation data "
                               "and batch moments are computed at inference",
                               fix="Build one batch norm and pass the boolean tensor as its "
                                   "`is_training`/`training` argument.")
                elif self._shared(program, module, call):
                    report.add(self.code, module, call.loc,
                               "tf.cond picks between two batch-norm layers that share variables: correct, but "
                               "the graph holds two layers and duplicated moments",
                               fix="Use one layer and pass the boolean tensor as `is_training`/`training`.",
                               severity=faults.WARNING)
                else:
                    report.add(self.code, module, call.loc,
                               "tf.cond picks between two batch-norm layers that do not share variables: the "
                               "evaluation branch normalizes with statistics that are never trained",
                               fix="Use one layer and pass the boolean tensor as `is_training`/`training`.")

    @staticmethod
    def _branches(call: V.Call) -> list[V.Value]:
        found = list(call.args[1:3])
        for names in (("true_fn", "fn1"), ("false_fn", "fn2")):
            for name in names:
                if call.kwarg(name) is not None:
                    found.append(call.kwarg(name))
        return found[:2]

    def _kind(self, program: Program, module: ModuleFacts, cond: CallFact, branch: V.Value,
              frame: Frame) -> str | None:
        building = _building_functions(program)
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

    @staticmethod
    def _shared(program: Program, module: ModuleFacts, cond: CallFact) -> bool:
        """Whether the batch norms built in the branches share one scope (one of them reusing it)."""
        inside: list[BatchNormUse] = []
        for use in program.batch_norms:
            locs = [use.call.loc] + [frame.site.loc for frame in use.site.frame.chain() if frame.site is not None]
            modules = [use.module] + [frame.parent.module for frame in use.site.frame.chain()
                                      if frame.site is not None and frame.parent is not None]
            if any(m is module and cond.loc < loc <= cond.end for loc, m in zip(locs, modules)):
                inside.append(use)
        scopes = {_scope(program, use) for use in inside}
        return len(inside) >= 2 and len(scopes) == 1 and None not in scopes and \
            any(_reuse(program, use) for use in inside)
