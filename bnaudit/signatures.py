"""Where the APIs that rules read take their arguments: one table of positional parameters.

A rule asks ``arg(call, SAVER, "var_list")`` and never spells a position or a keyword of its own.
Each signature names an importable object of the pinned versions (TF 2.21, Keras 3, tf_keras);
tests/test_signatures.py compares the table with ``inspect.signature`` of each, so a parameter
that moves is a failing test, not a silent miss.  (The batch-norm APIs' own parameters are in
``catalogue.APIS``, checked by the same test.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the catalogue imports this table; values import nothing of bnaudit's
    from bnaudit.source import values as V


@dataclass(frozen=True)
class Signature:
    reference: str                # the object checked against, importable with the pinned versions
    params: tuple[str, ...]       # its parameters in positional order (``self`` left out)

    def index(self, name: str) -> int:
        return self.params.index(name)


SAVER = Signature("tensorflow.compat.v1.train.Saver", ("var_list", "reshape", "sharded", "max_to_keep"))
VARIABLE_SCOPE = Signature("tensorflow.compat.v1.variable_scope", (
    "name_or_scope", "default_name", "values", "initializer", "regularizer", "caching_device", "partitioner",
    "custom_getter", "reuse"))
COND = Signature("tensorflow.compat.v1.cond", ("pred", "true_fn", "false_fn", "strict", "name", "fn1", "fn2"))
MINIMIZE = Signature("tensorflow.compat.v1.train.Optimizer.minimize", ("loss", "global_step", "var_list"))
APPLY_GRADIENTS = Signature("tensorflow.compat.v1.train.Optimizer.apply_gradients",
                            ("grads_and_vars", "global_step", "name"))
SESSION_RUN = Signature("tensorflow.compat.v1.Session.run", ("fetches", "feed_dict", "options", "run_metadata"))
GET_COLLECTION = Signature("tensorflow.compat.v1.get_collection", ("key", "scope"))
FIT = Signature("keras.Model.fit", (
    "x", "y", "batch_size", "epochs", "verbose", "callbacks", "validation_split", "validation_data", "shuffle",
    "class_weight", "sample_weight", "initial_epoch", "steps_per_epoch"))
# A Keras layer or model called on its inputs: `model(x, training)`.
LAYER_CALL = Signature("keras.layers.BatchNormalization.call", ("inputs", "training", "mask"))
SET_LEARNING_PHASE = Signature("tensorflow.compat.v1.keras.backend.set_learning_phase", ("value",))
EXPONENTIAL_MOVING_AVERAGE = Signature("tensorflow.compat.v1.train.ExponentialMovingAverage",
                                       ("decay", "num_updates", "zero_debias", "name"))
ASSIGN_MOVING_AVERAGE = Signature("tensorflow.python.training.moving_averages.assign_moving_average",
                                  ("variable", "value", "decay", "zero_debias", "name"))
NORMALIZE_MOMENTS = Signature("tensorflow.nn.normalize_moments", ("counts", "mean_ss", "variance_ss", "shift"))

SIGNATURES = (SAVER, VARIABLE_SCOPE, COND, MINIMIZE, APPLY_GRADIENTS, SESSION_RUN, GET_COLLECTION, FIT, LAYER_CALL,
              SET_LEARNING_PHASE, EXPONENTIAL_MOVING_AVERAGE, ASSIGN_MOVING_AVERAGE, NORMALIZE_MOMENTS)


def arg(call: V.Call, signature: Signature, name: str) -> V.Value | None:
    """The value passed as ``name`` to a call of ``signature``: by keyword, or at its position."""
    return call.arg(name, signature.index(name))
