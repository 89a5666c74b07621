"""Every batch-norm entry point bnaudit knows, as data.

Rules never spell an API name: they ask this module what a call is and what
its arguments mean (which one is the training flag, what an omitted decay
defaults to, where the moving-average updates go).  Adding an API is adding
an entry here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bnaudit import signatures

# What kind of thing a qualified name is.
FUNCTION = "function"  # builds variables and normalizes in one call (contrib, tf.layers functional)
LAYER = "layer"        # a class: construct, then call on inputs (Keras, tf.layers.BatchNormalization)
OP = "op"              # stateless math: no variables, no moving averages (tf.nn.*)

# Where the moving-average updates of a layer go.
COLLECTION = "collection"  # tf.GraphKeys.UPDATE_OPS; someone must run them
INPLACE = "inplace"        # part of the layer's output in training; nothing to run
FRAMEWORK = "framework"    # Keras/tensorpack run them (fit(), trainers, eager)
NONE = "none"              # no moving averages at all


@dataclass(frozen=True)
class BatchNormAPI:
    key: str
    family: str
    qualnames: tuple[str, ...]
    kind: str
    # Positional order of the function's (or the class constructor's) parameters.
    params: tuple[str, ...]
    # The training flag: its argument name, what omitting it means, and whether it
    # is given to the constructor/function or to the layer call (Keras).
    training: str | None = None
    training_default: bool | None = None
    training_at_call: bool = False
    call_params: tuple[str, ...] = ()
    decay: str | None = None
    decay_default: float | None = None
    epsilon: str | None = None
    epsilon_default: float | None = None
    reuse: str | None = None
    scope: str | None = None
    # The variable scope a layer takes when ``scope`` is not given (uniquified: ``BatchNorm_1``).
    default_scope: str | None = None
    updates: str = NONE
    # An argument that redirects the updates; the value None makes them in place.
    updates_arg: str | None = None
    # Whether the call/class creates moving statistics (OPs do not).
    stateful: bool = True
    # A flag is mandatory (no silent default).
    training_required: bool = False
    # The moving statistics are in tf.GraphKeys.MODEL_VARIABLES (so tf.model_variables() saves them).
    model_variables: bool = False
    # The argument that names the collections the variables are added to.
    variables_collections: str | None = None
    # An object of the pinned versions whose signature ``params`` (and the call's, for a layer)
    # must match: tests/test_signatures.py.  None for APIs gone from them (contrib) or not installed.
    reference: str | None = None
    # How a call becomes `bnaudit.layers.batch_norm(inputs, training, ...)`: (parameter, its name
    # there; "" when it has no meaning there, such as reuse), and the defaults of this API that
    # differ from bnaudit's, given when the call leaves them out.  Empty: no such fix.
    to_bnaudit: tuple[tuple[str, str], ...] = ()
    to_bnaudit_defaults: tuple[tuple[str, str], ...] = ()

    def param_index(self, name: str) -> int | None:
        try:
            return self.params.index(name)
        except ValueError:
            return None


_CONTRIB_PARAMS = (
    "inputs", "decay", "center", "scale", "epsilon", "activation_fn", "param_initializers",
    "param_regularizers", "updates_collections", "is_training", "reuse", "variables_collections",
    "outputs_collections", "trainable", "batch_weights", "fused", "data_format",
    "zero_debias_moving_mean", "scope", "renorm", "renorm_clipping", "renorm_decay", "adjustment",
)
_TF_LAYERS_FN_PARAMS = (
    "inputs", "axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
    "moving_mean_initializer", "moving_variance_initializer", "beta_regularizer", "gamma_regularizer",
    "beta_constraint", "gamma_constraint", "training", "trainable", "name", "reuse", "renorm",
    "renorm_clipping", "renorm_momentum", "fused", "virtual_batch_size", "adjustment",
)
_KERAS_PARAMS = (
    "axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
    "moving_mean_initializer", "moving_variance_initializer", "beta_regularizer", "gamma_regularizer",
    "beta_constraint", "gamma_constraint",
)

APIS: tuple[BatchNormAPI, ...] = (
    BatchNormAPI(
        key="contrib.batch_norm", family="contrib/slim", kind=FUNCTION,
        qualnames=(
            "tensorflow.contrib.layers.batch_norm",
            "tensorflow.contrib.layers.python.layers.batch_norm",
            "tensorflow.contrib.layers.python.layers.layers.batch_norm",
            "tensorflow.contrib.slim.batch_norm",
            "tensorflow.contrib.slim.layers.batch_norm",
            "tf_slim.batch_norm",
            "tf_slim.layers.batch_norm",
            "tf_slim.layers.layers.batch_norm",
        ),
        params=_CONTRIB_PARAMS,
        training="is_training", training_default=True,
        decay="decay", decay_default=0.999, epsilon="epsilon", epsilon_default=0.001,
        reuse="reuse", scope="scope", default_scope="BatchNorm", updates=COLLECTION,
        updates_arg="updates_collections", model_variables=True, variables_collections="variables_collections",
        to_bnaudit=(("inputs", "inputs"), ("is_training", "training"), ("decay", "momentum"), ("center", "center"),
                    ("scale", "scale"), ("epsilon", "epsilon"), ("trainable", "trainable"),
                    ("data_format", "data_format"), ("scope", "name"), ("updates_collections", ""), ("reuse", ""),
                    ("variables_collections", ""), ("outputs_collections", ""), ("fused", ""),
                    ("zero_debias_moving_mean", "")),
        to_bnaudit_defaults=(("training", "True"), ("momentum", "0.999"), ("scale", "False")),
    ),
    BatchNormAPI(
        key="tf.layers.batch_normalization", family="tf.layers", kind=FUNCTION,
        qualnames=(
            "tensorflow.layers.batch_normalization",
            "tensorflow.python.layers.normalization.batch_normalization",
            "tensorflow.keras.__internal__.legacy.layers.batch_normalization",
            "tf_keras.__internal__.legacy.layers.batch_normalization",
        ),
        params=_TF_LAYERS_FN_PARAMS,
        training="training", training_default=False,
        decay="momentum", decay_default=0.99, epsilon="epsilon", epsilon_default=0.001,
        reuse="reuse", scope="name", default_scope="batch_normalization", updates=COLLECTION,
        reference="tensorflow.compat.v1.layers.batch_normalization",
        to_bnaudit=(("inputs", "inputs"), ("training", "training"), ("axis", "axis"), ("momentum", "momentum"),
                    ("epsilon", "epsilon"), ("center", "center"), ("scale", "scale"),
                    ("beta_initializer", "beta_initializer"), ("gamma_initializer", "gamma_initializer"),
                    ("moving_mean_initializer", "moving_mean_initializer"),
                    ("moving_variance_initializer", "moving_variance_initializer"),
                    ("beta_regularizer", "beta_regularizer"), ("gamma_regularizer", "gamma_regularizer"),
                    ("trainable", "trainable"), ("name", "name"), ("reuse", ""), ("fused", "")),
        to_bnaudit_defaults=(("training", "False"),),
    ),
    BatchNormAPI(
        key="tf.layers.BatchNormalization", family="tf.layers", kind=LAYER,
        qualnames=(
            "tensorflow.layers.BatchNormalization",
            "tensorflow.keras.__internal__.legacy.layers.BatchNormalization",
            "tf_keras.__internal__.legacy.layers.BatchNormalization",
        ),
        params=_KERAS_PARAMS,
        training="training", training_default=False, training_at_call=True, call_params=("inputs", "training"),
        decay="momentum", decay_default=0.99, epsilon="epsilon", epsilon_default=0.001,
        scope="name", updates=COLLECTION, reference="tensorflow.compat.v1.layers.BatchNormalization",
    ),
    BatchNormAPI(
        key="keras.BatchNormalization", family="keras", kind=LAYER,
        qualnames=(
            "keras.layers.BatchNormalization",
            "keras.layers.normalization.BatchNormalization",
            "keras.src.layers.BatchNormalization",
            "keras.src.layers.normalization.batch_normalization.BatchNormalization",
            "tensorflow.keras.layers.BatchNormalization",
            "tensorflow.python.keras.layers.BatchNormalization",
            "tf_keras.layers.BatchNormalization",
            "keras.layers.experimental.SyncBatchNormalization",
            "tensorflow.keras.layers.experimental.SyncBatchNormalization",
            "tf_keras.layers.experimental.SyncBatchNormalization",
        ),
        params=_KERAS_PARAMS,
        training="training", training_default=None, training_at_call=True, call_params=("inputs", "training"),
        decay="momentum", decay_default=0.99, epsilon="epsilon", epsilon_default=0.001,
        scope="name", updates=FRAMEWORK, reference="keras.layers.BatchNormalization",
    ),
    BatchNormAPI(
        key="tensorpack.BatchNorm", family="tensorpack", kind=FUNCTION,
        qualnames=("tensorpack.BatchNorm", "tensorpack.models.BatchNorm", "tensorpack.models.batch_norm.BatchNorm"),
        params=("variable_scope_name", "inputs", "axis", "training", "momentum", "epsilon", "center", "scale"),
        training="training", training_default=None,
        decay="momentum", decay_default=0.9, epsilon="epsilon", epsilon_default=1e-5,
        scope="variable_scope_name", updates=FRAMEWORK, model_variables=True,
    ),
    BatchNormAPI(
        key="bnaudit.batch_norm", family="bnaudit", kind=FUNCTION,
        qualnames=("bnaudit.layers.batch_norm",),
        params=("inputs", "training", "axis", "momentum", "epsilon", "center", "scale"),
        training="training", training_required=True,
        decay="momentum", decay_default=0.99, epsilon="epsilon", epsilon_default=0.001,
        scope="name", updates=INPLACE, model_variables=True, reference="bnaudit.layers.batch_norm",
    ),
    BatchNormAPI(
        key="bnaudit.BatchNorm", family="bnaudit", kind=LAYER,
        qualnames=("bnaudit.layers.BatchNorm",),
        params=("axis", "momentum", "epsilon", "center", "scale"),
        training="training", training_default=None, training_at_call=True, call_params=("inputs", "training"),
        decay="momentum", decay_default=0.99, epsilon="epsilon", epsilon_default=0.001,
        scope="name", updates=FRAMEWORK, reference="bnaudit.layers.BatchNorm",
    ),
    BatchNormAPI(
        key="tf.nn.batch_normalization", family="tf.nn", kind=OP, stateful=False,
        qualnames=("tensorflow.nn.batch_normalization",),
        params=("x", "mean", "variance", "offset", "scale", "variance_epsilon"),
        epsilon="variance_epsilon", reference="tensorflow.nn.batch_normalization",
    ),
    BatchNormAPI(
        # Keras 3's op takes the axis before offset and scale, and `epsilon` (default 1e-3).
        key="keras.ops.batch_normalization", family="keras", kind=OP, stateful=False,
        qualnames=("keras.ops.batch_normalization", "keras.ops.nn.batch_normalization",
                   "keras.src.ops.nn.batch_normalization"),
        params=("x", "mean", "variance", "axis", "offset", "scale", "epsilon"),
        epsilon="epsilon", epsilon_default=0.001, reference="keras.ops.batch_normalization",
    ),
    BatchNormAPI(
        # The TF 0.x op (``t, m, v, beta, gamma``), kept in ``tf.compat.v1.nn``; positions as above.
        key="tf.nn.batch_norm_with_global_normalization", family="tf.nn", kind=OP, stateful=False,
        qualnames=("tensorflow.nn.batch_norm_with_global_normalization",),
        params=("x", "mean", "variance", "offset", "scale", "variance_epsilon", "scale_after_normalization"),
        epsilon="variance_epsilon",
    ),
    BatchNormAPI(
        key="tf.nn.fused_batch_norm", family="tf.nn", kind=OP, stateful=False,
        qualnames=("tensorflow.nn.fused_batch_norm",),
        params=("x", "scale", "offset", "mean", "variance", "epsilon", "data_format", "is_training"),
        training="is_training", training_default=True, epsilon="epsilon", epsilon_default=0.001,
        reference="tensorflow.compat.v1.nn.fused_batch_norm",
    ),
)

# Spellings that name the same module; applied to a resolved dotted name before lookup.
CANONICAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("tensorflow.compat.v1.", "tensorflow."),
    ("tensorflow.compat.v2.", "tensorflow."),
    ("tensorflow._api.v2.compat.v1.", "tensorflow."),
    ("tensorflow._api.v2.", "tensorflow."),
    ("tensorflow.contrib.framework.", "tensorflow.contrib.slim."),
    ("tf_keras.src.", "tf_keras."),
    ("keras_core.", "keras."),          # Keras 3 under its preview name
    ("tensorflow.contrib.slim.python.slim.", "tensorflow.contrib.slim."),
)

# Names that mean the UPDATE_OPS collection key.
UPDATE_OPS_KEYS = frozenset({
    "tensorflow.GraphKeys.UPDATE_OPS",
    "tensorflow.python.framework.ops.GraphKeys.UPDATE_OPS",
    "tf_slim.ops.GraphKeys.UPDATE_OPS",
})
UPDATE_OPS_LITERAL = "update_ops"

GET_COLLECTION = frozenset({
    "tensorflow.get_collection", "tensorflow.get_collection_ref",
    "tensorflow.python.framework.ops.get_collection",
})
CONTROL_DEPENDENCIES = frozenset({
    "tensorflow.control_dependencies", "tensorflow.python.framework.ops.control_dependencies",
})
# Ops that join their arguments into one runnable thing.
GROUPING = frozenset({
    "tensorflow.group", "tensorflow.tuple", "tensorflow.python.ops.control_flow_ops.group",
    "tensorflow.python.ops.control_flow_ops.tuple", "tensorflow.python.ops.control_flow_ops.with_dependencies",
    "tensorflow.contrib.framework.with_dependencies", "tensorflow.with_dependencies", "tensorflow.identity",
})
# (callable, index of the dependencies argument, index of the output argument)
WITH_DEPENDENCIES = frozenset({
    "tensorflow.python.ops.control_flow_ops.with_dependencies", "tensorflow.contrib.framework.with_dependencies",
    "tensorflow.with_dependencies", "tensorflow.contrib.slim.with_dependencies",
})
# Train-op builders that run UPDATE_OPS themselves.
UPDATING_TRAIN_OP_BUILDERS = frozenset({
    "tensorflow.contrib.slim.learning.create_train_op",
    "tensorflow.contrib.training.create_train_op",
    "tensorflow.contrib.layers.optimize_loss",
    "tf_slim.learning.create_train_op",
    "tf_slim.training.create_train_op",
    "tf_slim.create_train_op",
})
# Methods that build a train op from an optimizer.
TRAIN_OP_METHODS = frozenset({"minimize", "apply_gradients"})
# Methods a framework calls once per training step (a loop inside one is not the training length).
STEP_HOOKS = frozenset({"train_step", "test_step", "call"})
# Keras methods that train a model (and run its batch-norm updates themselves).
FIT_METHODS = frozenset({"fit", "fit_generator", "train_on_batch"})
# Calls that read the tf.GraphKeys.LOSSES collection, which every tf.losses/slim.losses function adds to.
LOSS_COLLECTION_READERS = frozenset({
    "tensorflow.losses.get_total_loss", "tensorflow.losses.get_losses", "tensorflow.contrib.slim.losses.get_total_loss",
    "tensorflow.contrib.losses.get_total_loss", "tf_slim.losses.get_total_loss", "tensorflow.contrib.slim.losses.get_losses",
})
LOSS_FUNCTION_MODULES = ("tensorflow.losses.", "tensorflow.contrib.slim.losses.", "tensorflow.contrib.losses.",
                         "tf_slim.losses.")
# Ops whose output carries none of their arguments' data (no gradient, no model output flows through):
# inputs fed at run time, random and constant tensors, shapes.
DATA_FREE_OPS = frozenset(f"tensorflow.{name}" for name in (
    "placeholder", "random_normal", "random_uniform", "truncated_normal", "random.normal", "random.uniform",
    "random.truncated_normal", "zeros", "ones", "fill", "eye", "range", "shape", "size", "rank", "get_variable",
    "constant_initializer", "random_normal_initializer", "truncated_normal_initializer",
))
DATA_FREE_METHODS = frozenset({"get_shape", "as_list", "set_shape"})
# Methods that put a value into a Python container.
CONTAINER_MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "appendleft"})
# Specs that a framework runs as one step: the loss is fetched with the train op.
ESTIMATOR_SPECS = frozenset({
    "tensorflow.estimator.EstimatorSpec", "tensorflow.estimator.tpu.TPUEstimatorSpec",
    "tensorflow.contrib.tpu.TPUEstimatorSpec", "tensorflow.compat.v1.estimator.tpu.TPUEstimatorSpec",
    "tensorflow_estimator.estimator.EstimatorSpec",
})

# Library networks built from slim layers (`inception.inception_v3(images)` from slim's nets): under an
# arg_scope with normalizer_fn=batch_norm, their conv layers are batch-normalized with its params.
SLIM_NETS_PREFIXES = ("tensorflow.contrib.slim.nets.", "tensorflow.contrib.slim.python.slim.nets.", "tf_slim.nets.")

# Layers that apply `normalizer_fn=batch_norm` (given directly or through an arg_scope).
SLIM_NORMALIZED_LAYERS = frozenset(
    f"{module}.{layer}"
    for module in ("tensorflow.contrib.layers", "tensorflow.contrib.slim", "tf_slim", "tf_slim.layers")
    for layer in ("conv2d", "convolution2d", "convolution", "conv1d", "conv3d", "fully_connected",
                  "separable_conv2d", "separable_convolution2d", "conv2d_transpose", "convolution2d_transpose",
                  "conv2d_in_plane")
)
# Each of them opens a variable scope named by this keyword, or by a default name made unique per call.
SLIM_LAYER_SCOPE = "scope"

# Hand-written moving averages: (callable, index of the decay argument, its keyword).
MOVING_AVERAGE_DECAY = {   # each takes a `decay`
    "tensorflow.train.ExponentialMovingAverage": signatures.EXPONENTIAL_MOVING_AVERAGE,
    "tensorflow.python.training.moving_averages.assign_moving_average": signatures.ASSIGN_MOVING_AVERAGE,
    "tensorflow.python.training.moving_averages.ExponentialMovingAverage": signatures.EXPONENTIAL_MOVING_AVERAGE,
    "tensorflow.contrib.framework.assign_moving_average": signatures.ASSIGN_MOVING_AVERAGE,
}
EXPONENTIAL_MOVING_AVERAGE = frozenset(
    name for name in MOVING_AVERAGE_DECAY if name.endswith(".ExponentialMovingAverage"))
ASSIGN = frozenset({"tensorflow.assign", "tensorflow.python.ops.state_ops.assign"})
# Functions whose first argument is reduced to a mean, and those that square.
# Graph-side reductions only: NumPy works in float64 by default, where E[x^2] - E[x]^2 does not cancel
# the way it does in a float32 graph.
MEAN = frozenset({"tensorflow.reduce_mean", "tensorflow.math.reduce_mean", "keras.ops.mean"})
SQUARE = frozenset({"tensorflow.square", "tensorflow.math.square", "numpy.square", "keras.ops.square"})
# Batch moments: the statistics of the batch being normalized.
MOMENTS = frozenset({"tensorflow.nn.moments", "tensorflow.nn.weighted_moments"})
# Moments from sums of x and x^2: (position, keyword) of the shift that makes them two-pass-safe.
ONE_PASS_MOMENTS = {"tensorflow.nn.normalize_moments": signatures.NORMALIZE_MOMENTS}   # each takes a `shift`
ROOTS = frozenset({"tensorflow.sqrt", "tensorflow.math.sqrt", "tensorflow.rsqrt", "tensorflow.math.rsqrt",
                   "numpy.sqrt", "keras.ops.sqrt", "keras.ops.rsqrt"})
CLAMPS = frozenset({"tensorflow.maximum", "tensorflow.math.maximum", "tensorflow.nn.relu", "tensorflow.abs",
                    "tensorflow.clip_by_value", "numpy.maximum", "keras.ops.maximum", "keras.ops.relu"})

# Command-line flag objects: `FLAGS.steps` is the default of `DEFINE_integer('steps', ...)`.
FLAG_CONTAINERS = frozenset({"tensorflow.app.flags.FLAGS", "tensorflow.flags.FLAGS", "absl.flags.FLAGS",
                             "tensorflow.python.platform.flags.FLAGS"})
IMPORT_MODULE = frozenset({"importlib.import_module"})
# Calls that run a function they are given, in place (its body builds into the caller's graph):
# qualified name -> ((position, keyword) of each function argument).  ``app.run()`` without one runs
# the module's ``main``.
RUNS_FUNCTION: dict[str, tuple[tuple[int, str], ...]] = {
    "tensorflow.map_fn": ((0, "fn"),),
    "tensorflow.scan": ((0, "fn"),),
    "tensorflow.foldl": ((0, "fn"),),
    "tensorflow.foldr": ((0, "fn"),),
    "tensorflow.while_loop": ((0, "cond"), (1, "body")),
    "tensorflow.cond": ((1, "true_fn"), (2, "false_fn")),
    "tensorflow.app.run": ((0, "main"),),
    "tensorflow.python.platform.app.run": ((0, "main"),),
    "absl.app.run": ((0, "main"),),
    # slim's `repeat(inputs, repetitions, layer, ...)` and `stack(inputs, layer, stack_args)` call the
    # layer function in place, under the caller's arg_scopes (`is_training` of the batch norms inside).
    **{f"{module}.repeat": ((2, "layer"),) for module in ("tensorflow.contrib.slim", "tensorflow.contrib.layers",
                                                          "tf_slim", "tf_slim.layers")},
    **{f"{module}.stack": ((1, "layer"),) for module in ("tensorflow.contrib.slim", "tensorflow.contrib.layers",
                                                         "tf_slim", "tf_slim.layers")},
}
APP_RUN = frozenset({"tensorflow.app.run", "tensorflow.python.platform.app.run", "absl.app.run"})
# Methods that run the function they are given (distribution strategies).
RUNS_FUNCTION_METHODS = frozenset({"run", "experimental_run_v2", "call_for_each_replica"})
# Calls that return a callable wrapping a function: calling it calls the function
# (qualified name -> position and keyword of the function argument).
WRAPS_FUNCTION: dict[str, tuple[int, str]] = {
    "functools.partial": (0, "func"),
    "tensorflow.make_template": (1, "func_"),
    "tensorflow.function": (0, "func"),
}

ARG_SCOPE = frozenset({"tensorflow.contrib.slim.arg_scope", "tf_slim.arg_scope", "tensorflow.contrib.framework.arg_scope"})
PARTIAL = frozenset({"functools.partial"})

GRAPHS = frozenset({"tensorflow.Graph", "tensorflow.get_default_graph", "tensorflow.python.framework.ops.Graph"})
RESET_DEFAULT_GRAPH = frozenset({"tensorflow.reset_default_graph",
                                 "tensorflow.python.framework.ops.reset_default_graph",
                                 "tensorflow.keras.backend.clear_session", "keras.backend.clear_session",
                                 "tf_keras.backend.clear_session"})
VARIABLE_SCOPE = frozenset({"tensorflow.variable_scope", "tensorflow.python.ops.variable_scope.variable_scope"})
NAME_SCOPE = frozenset({"tensorflow.name_scope", "tensorflow.python.framework.ops.name_scope"})
AUTO_REUSE = frozenset({"tensorflow.AUTO_REUSE", "tensorflow.python.ops.variable_scope.AUTO_REUSE"})
REUSE_VARIABLES_METHOD = "reuse_variables"

COND = frozenset({"tensorflow.cond", "tensorflow.python.ops.control_flow_ops.cond",
                  "tensorflow.contrib.framework.smart_cond", "tensorflow.__internal__.smart_cond.smart_cond"})

COND_NAMES = frozenset(name.rsplit(".", 1)[1] for name in COND)

SAVERS = frozenset({"tensorflow.train.Saver", "tensorflow.python.training.saver.Saver"})
CHECKPOINTS = frozenset({"tensorflow.train.Checkpoint"})
# Calls and attributes whose value is a list of trainable variables only.
TRAINABLE_VARIABLE_CALLS = frozenset({
    "tensorflow.trainable_variables", "tensorflow.contrib.framework.get_trainable_variables",
    "tensorflow.contrib.slim.get_trainable_variables", "tf_slim.get_trainable_variables",
})
TRAINABLE_ATTRIBUTES = frozenset({"trainable_variables", "trainable_weights"})

# Keras's graph-mode training flag (a placeholder defaulting to 0), read by layers called without `training`.
LEARNING_PHASE = frozenset({
    "tensorflow.keras.backend.learning_phase", "tensorflow.python.keras.backend.learning_phase",
    "keras.backend.learning_phase", "tf_keras.backend.learning_phase",
})
# Values that are tensors when the graph is built.
TENSOR_FACTORIES = frozenset({
    "tensorflow.placeholder", "tensorflow.placeholder_with_default", "tensorflow.Variable",
    "tensorflow.get_variable", "tensorflow.constant", "tensorflow.convert_to_tensor", "tensorflow.cast",
    "tensorflow.equal", "tensorflow.not_equal", "tensorflow.less", "tensorflow.greater", "tensorflow.logical_not",
    "tensorflow.logical_and", "tensorflow.logical_or", "tensorflow.python.ops.array_ops.placeholder",
    "tensorflow.python.ops.array_ops.placeholder_with_default",
}) | LEARNING_PHASE
# Tensors a training flag is fed through.
FLAG_PLACEHOLDERS = frozenset({"tensorflow.placeholder", "tensorflow.placeholder_with_default"})
GRADIENT_TAPE = frozenset({"tensorflow.GradientTape", "tensorflow.contrib.eager.GradientTape"})
TF_FUNCTION = frozenset({"tensorflow.function"})
SET_LEARNING_PHASE = frozenset({
    "tensorflow.keras.backend.set_learning_phase", "keras.backend.set_learning_phase",
    "tf_keras.backend.set_learning_phase",
})

_BY_QUALNAME = {name: api for api in APIS for name in api.qualnames}

# Last components of every batch-norm name: a file mentioning none of them
# (and nothing else in PREFILTER_WORDS) cannot yield a finding.
BN_WORDS = frozenset(name.rsplit(".", 1)[1] for api in APIS for name in api.qualnames)


def canonical(qualname: str) -> str:
    for prefix, replacement in CANONICAL_PREFIXES:
        if qualname.startswith(prefix):
            return replacement + qualname[len(prefix):]
        if qualname + "." == prefix:      # the module itself (`import keras_core as keras`)
            return replacement[:-1]
    return qualname


def lookup(qualname: str | None) -> BatchNormAPI | None:
    """The API a fully qualified (already canonical) name refers to, if it is batch norm."""
    if not qualname:
        return None
    return _BY_QUALNAME.get(qualname)

# Keras containers that hold the layers they are given.
KERAS_MODELS = frozenset(
    f"{root}.{name}"
    for root in ("keras", "keras.models", "tensorflow.keras", "tensorflow.keras.models", "tf_keras", "tf_keras.models")
    for name in ("Sequential", "Model")
)
# keras.applications architectures that contain batch norm (matched on the last name component).
KERAS_APPLICATION_PREFIXES = ("ResNet", "MobileNet", "EfficientNet", "DenseNet", "Inception", "Xception", "NASNet")
KERAS_MODULES = ("keras.", "tensorflow.keras.", "tf_keras.")
KERAS_APPLICATION_MODULES = tuple(f"{prefix}applications." for prefix in KERAS_MODULES)

SAVED_MODEL_SAVE = frozenset({"tensorflow.saved_model.save", "tensorflow.keras.models.save_model",
                              "keras.models.save_model", "keras.saving.save_model",
                              "tensorflow.saved_model.simple_save"})
# Methods and functions that load trained weights.
RESTORE_METHODS = frozenset({"restore", "load_weights", "init_from_checkpoint", "restore_from_checkpoint"})
RESTORE_FUNCTIONS = frozenset({
    "tensorflow.train.init_from_checkpoint", "tensorflow.contrib.framework.assign_from_checkpoint_fn",
    "tensorflow.contrib.slim.assign_from_checkpoint_fn", "tf_slim.assign_from_checkpoint_fn",
    "tensorflow.contrib.slim.evaluation.evaluation_loop", "tensorflow.contrib.slim.evaluation.evaluate_once",
    "tf_slim.evaluation.evaluation_loop", "tf_slim.evaluation.evaluate_once", "tensorflow.saved_model.loader.load",
    "tensorflow.keras.models.load_model", "keras.models.load_model", "tf_keras.models.load_model",
})
# Methods whose call exports or serves a model.
EXPORT_METHODS = frozenset({"save", "export", "export_saved_model", "export_savedmodel", "save_weights"})
# Keyword arguments that state a training length.
STEP_KEYWORDS = frozenset({"max_steps", "number_of_steps", "num_steps", "steps", "train_steps", "total_steps",
                           "num_train_steps", "training_steps"})
STEP_NAMES = frozenset({"max_steps", "num_steps", "number_of_steps", "train_steps", "total_steps",
                        "num_train_steps", "training_steps", "n_steps", "steps", "num_iterations",
                        "max_iter", "iterations", "num_iters"})
# Calls that mean the graph is built TF1-style (placeholders and sessions).
# Calls that only graph-mode code makes (a TF2 script may open a Session just to set GPU options).
GRAPH_ONLY_MARKERS = frozenset({
    "tensorflow.placeholder", "tensorflow.placeholder_with_default", "tensorflow.disable_v2_behavior",
    "tensorflow.disable_eager_execution",
})
GRAPH_MODE_MARKERS = GRAPH_ONLY_MARKERS | {
    "tensorflow.Session", "tensorflow.InteractiveSession", "tensorflow.train.MonitoredTrainingSession"}

# Keyword names that, True, put the model a call builds in training mode (`phase_train=True`).
TRAINING_KEYWORDS = frozenset({"is_training", "training", "phase_train", "is_train", "train"})

# Top-level packages whose functions are library APIs, not a model bnaudit failed to read.
LIBRARY_ROOTS = frozenset({"tensorflow", "keras", "tf_keras", "numpy", "tensorpack", "sonnet", "torch", "jax",
                           "flax", "scipy", "sklearn"})

# Iterables as long as their first argument (`for i in tqdm.tqdm(range(n))`), and ranges by another name.
LENGTH_PRESERVING = frozenset({"builtins.enumerate", "builtins.list", "builtins.iter", "tqdm.tqdm", "tqdm.auto.tqdm",
                               "tqdm.notebook.tqdm", "tqdm.std.tqdm"})
RANGES = frozenset({"builtins.range", "builtins.xrange", "six.moves.range", "six.moves.xrange", "tqdm.trange",
                    "tqdm.auto.trange"})


# ------------------------------------------------------------------ naming conventions
# The words of the names users give evaluation code, read as evidence where the code itself cannot
# say which path is which.  One vocabulary; each reading leaves out the words that mislead it.
_WORD_SPLIT = re.compile(r"[_\W]+|(?<=[a-z0-9])(?=[A-Z])")


def words(name: str | None) -> set[str]:
    """``evalLoss``, ``eval_loss``, ``self.eval_loss`` -> {"eval", "loss"} (lower case)."""
    return {word.lower() for word in _WORD_SPLIT.split(name or "") if word}


EVALUATION_WORDS = frozenset({"eval", "evaluate", "evaluation", "valid", "validate", "validation", "val", "test",
                              "dev", "predict", "infer", "inference", "serve", "serving", "export"})
# Functions called on an evaluation path.  Not "inference": TF tutorials name the model-building
# function inference() and call it for training too; not "test"/"dev" (test helpers, dev builds).
EVAL_CALL_WORDS = EVALUATION_WORDS - {"inference", "test", "dev"}
# Results of an evaluation path (`eval_logits`); not "predict": predictions are what a training
# step computes too, and verbs do not name results.
EVAL_RESULT_WORDS = EVALUATION_WORDS - {"evaluate", "validate", "predict", "serve", "dev"}
# Data held out from training (`mnist.test.images`, `x_val`).
HELD_OUT_WORDS = frozenset({"test", "val", "valid", "validation", "eval", "dev"})
# Suffixes of a layer's evaluation copy in an artifact (`bn_eval`, beside the uniquifying `_1`).
COPY_SUFFIX_WORDS = EVALUATION_WORDS - {"evaluate", "evaluation", "validate", "dev", "serve", "export"}
# A training flag by its name (`is_training`, `phase_train`, `self.train_mode`, `bn_mode`).
FLAG_WORDS = frozenset({"train", "training", "phase", "learning", "mode", "istraining", "bn", "test", "eval"})
# Keyword names that, False, mean inference.
TRAINING_WORDS = frozenset({"train", "training", "istraining"})
