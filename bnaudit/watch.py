"""Batch-norm faults caught while a model trains: a Keras callback, a TF1 session hook, a check by hand.

The third place a fault shows, after the code (``check``) and the artifact (``graph``), is the run
itself: statistics that have not moved after a hundred steps, a variance gone negative, a NaN, a
momentum that cannot converge in the planned steps.  The running model is read into the same
``Artifact`` the graph readers fill and judged by the same checks, so a fault has one code and one
message wherever it is found.  Ships with the ``tf`` extra.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from bnaudit.findings import Finding
from bnaudit.graph import checks
from bnaudit.graph.keras_file import layer_from_config
from bnaudit.graph.model import MEAN, ROLES, VARIANCE, Artifact, BNLayer, split_role

ON_FAULT = ("warn", "stop", "raise")


class BatchNormFault(RuntimeError):
    """Raised with ``on_fault="raise"``; ``findings`` holds what was found."""

    def __init__(self, findings: list[Finding]):
        super().__init__("; ".join(f"{f.code} {f.message}" for f in findings))
        self.findings = findings


# -- reading a running Keras model -----------------------------------------------------------------


def keras_batch_norms(model) -> list[tuple[str, object]]:
    """Every batch-norm layer of a Keras model, nested models and backbones included, with its path."""
    found, seen = [], set()

    def walk(layer, parents: tuple[str, ...]):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if hasattr(layer, "moving_mean") and hasattr(layer, "moving_variance") and hasattr(layer, "momentum"):
            found.append(("/".join(parents + (layer.name,)), layer))
            return
        for child in getattr(layer, "layers", ()) or ():
            walk(child, parents + (layer.name,))

    for child in getattr(model, "layers", ()):
        walk(child, ())
    return found


def _value(variable) -> np.ndarray | None:
    if variable is None:
        return None
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)


def keras_artifact(model, step: int | None) -> Artifact:
    """The model's batch-norm layers as the graph package models them: values, initializers, momentum."""
    artifact = Artifact(getattr(model, "name", "model"), "running Keras model", has_graph=True, has_values=True)
    for name, layer in keras_batch_norms(model):
        entry = {"class_name": type(layer).__name__, "config": layer.get_config(),
                 "module": type(layer).__module__}
        bn = layer_from_config((name,), entry)
        for role in ROLES:
            value = _value(getattr(layer, role, None))
            if value is not None:
                bn.keys[role] = f"{name}/{role}"
                bn.values[role] = value
        artifact.layers.append(bn)
    artifact.step, artifact.step_source = step, "training steps run"
    return artifact


def judge(artifact: Artifact, total_steps: int | None) -> list[Finding]:
    """BN005, BN012 and BN010 on the state now; BN009 against the planned length of the run."""
    findings = [finding for code in ("BN005", "BN012", "BN010") for finding in checks.CHECKS[code](artifact, set())]
    if total_steps:
        step, source = artifact.step, artifact.step_source
        artifact.step, artifact.step_source = int(total_steps), "the planned training steps"
        findings += checks.CHECKS["BN009"](artifact, set())
        artifact.step, artifact.step_source = step, source
    return findings


def check(model, step: int | None = None, total_steps: int | None = None) -> list[Finding]:
    """Judge a Keras model once (a custom loop, a notebook): every fault its batch norms show now.

    ``step`` is how many training steps ran (it makes BN010 a finding: statistics at their
    initializer after that many steps); ``total_steps`` the plan BN009 judges the momentum against.
    """
    optimizer = getattr(model, "optimizer", None)
    if step is None and optimizer is not None and hasattr(optimizer, "iterations"):
        step = int(_value(optimizer.iterations))
    return judge(keras_artifact(model, step), total_steps)


class _Reporting:
    """What the callback and the hook share: every_n_steps, what to do on a fault, the findings."""

    def _setup(self, every_n_steps: int, on_fault: str, total_steps: int | None, json_path):
        if on_fault not in ON_FAULT:
            raise ValueError(f"on_fault must be one of {', '.join(ON_FAULT)}, not {on_fault!r}")
        if int(every_n_steps) < 1:
            raise ValueError("every_n_steps must be at least 1")
        self.every_n_steps, self.on_fault, self.total_steps = int(every_n_steps), on_fault, total_steps
        self.json_path = Path(json_path) if json_path else None
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str | None]] = set()

    def _report(self, found: list[Finding], step: int) -> list[Finding]:
        new = [f for f in found if (f.code, f.layer) not in self._seen]
        for finding in new:
            self._seen.add((finding.code, finding.layer))
            self.findings.append(finding)
        if self.json_path is not None and new:
            self.json_path.write_text(json.dumps([f.to_graph_json() for f in self.findings], indent=2),
                                      encoding="utf-8")
        if new and self.on_fault == "raise":
            raise BatchNormFault(new)
        for finding in new:
            warnings.warn(f"bnaudit: step {step}: {finding.code} [{finding.severity}] {finding.message}",
                          RuntimeWarning, stacklevel=3)
        return new


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class BatchNormWatch(_keras_callback_base(), _Reporting):
    """``model.fit(..., callbacks=[BatchNormWatch()])``, or ``watch.step(model, step)`` in a custom loop.

    Every ``every_n_steps`` training batches it reads every batch-norm layer and reports BN010
    (statistics still at their initializer: the updates do not run, BN001, or the layers run in
    inference mode, BN006), BN005, BN012, and BN009 against ``total_steps`` (default: epochs x steps
    from ``fit``).  ``on_fault``: ``"warn"`` (a warning), ``"stop"`` (also ``model.stop_training``)
    or ``"raise"`` (``BatchNormFault``).  Findings accumulate in ``findings`` (and ``json_path``).

    ``probe`` (a batch of inputs) also measures the train/inference gap at each check: how far the
    model's output with ``training=False`` is from its output with ``training=True`` on that batch,
    relative to the latter (``gaps``, and ``bn_gap`` in the batch logs of ``fit``).  A gap that stays
    large means inference normalizes with statistics the batches do not have (BN010, BN009, BN006 at
    its root); it is a measurement, not a finding, since dropout and early training make one too.
    """

    def __init__(self, every_n_steps: int = 100, on_fault: str = "warn", total_steps: int | None = None,
                 json_path=None, probe=None):
        super().__init__()
        self._setup(every_n_steps, on_fault, total_steps, json_path)
        self._steps = 0
        self.probe = probe
        self.gaps: list[tuple[int, float]] = []

    def on_train_begin(self, logs=None):
        params = getattr(self, "params", None) or {}
        if self.total_steps is None and params.get("epochs") and params.get("steps"):
            self.total_steps = int(params["epochs"]) * int(params["steps"])

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self._steps % self.every_n_steps == 0:
            self.step(self.model, self._steps, force=True)
            if self.gaps and logs is not None:
                logs["bn_gap"] = self.gaps[-1][1]

    def step(self, model, step: int, force: bool = False) -> list[Finding]:
        """In a custom loop: call once per training step; the model is judged every ``every_n_steps``."""
        if not force and step % self.every_n_steps:
            return []
        if self.probe is not None:
            self.gaps.append((step, train_inference_gap(model, self.probe)))
        new = self._report(judge(keras_artifact(model, step), self.total_steps), step)
        if new and self.on_fault == "stop":
            model.stop_training = True
        return new


def train_inference_gap(model, batch) -> float:
    """mean |f(x, training=False) - f(x, training=True)| / mean |f(x, training=True)| on ``batch``.

    A training-mode call updates the moving statistics as a side effect; they are put back, so the
    probe leaves the run as it found it."""
    layers = [layer for _, layer in keras_batch_norms(model)]
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        inference = np.asarray(model(batch, training=False))
        training = np.asarray(model(batch, training=True))
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    scale = float(np.mean(np.abs(training))) or 1.0
    return float(np.mean(np.abs(inference - training)) / scale)


# -- TF1 graphs ------------------------------------------------------------------------------------


def _session_run_hook_base():
    import tensorflow as tf

    return tf.compat.v1.train.SessionRunHook


class BatchNormHook(_session_run_hook_base(), _Reporting):
    """A ``SessionRunHook`` for ``MonitoredTrainingSession`` and Estimators.

    Every ``every_n_steps`` runs it reads the graph's batch-norm variables and the global step; when
    the global step advanced but a layer's moving statistics never left their initializer it says
    BN001 (the update ops are not run), naming the train op the session ran.
    """

    def __init__(self, every_n_steps: int = 100, on_fault: str = "warn", total_steps: int | None = None,
                 json_path=None):
        self._setup(every_n_steps, on_fault, total_steps, json_path)
        self._runs = 0
        self._fetched: list[str] = []

    def begin(self):
        import tensorflow as tf

        self._layers: dict[str, dict[str, object]] = {}
        for variable in tf.compat.v1.global_variables():
            parts = split_role(variable.op.name)
            if parts is not None:
                self._layers.setdefault(parts[0], {})[parts[1]] = variable
        self._layers = {scope: roles for scope, roles in self._layers.items() if MEAN in roles and VARIANCE in roles}
        self._global_step = tf.compat.v1.train.get_global_step()
        self._first_step = None

    def before_run(self, run_context):
        fetches = run_context.original_args.fetches
        items = fetches if isinstance(fetches, (list, tuple)) else [fetches]
        for item in items:
            name = getattr(item, "name", None)
            if name and name.split(":")[0] not in self._fetched:
                self._fetched.append(name.split(":")[0])

    def after_run(self, run_context, run_values):
        self._runs += 1
        if self._runs % self.every_n_steps or not self._layers:
            return
        session = run_context.session
        values = session.run({scope: {role: v for role, v in roles.items()} for scope, roles in self._layers.items()})
        step = int(session.run(self._global_step)) if self._global_step is not None else self._runs
        artifact = Artifact("graph", "running TF1 graph", has_graph=True, has_values=True)
        for scope, roles in sorted(values.items()):
            layer = BNLayer(scope, declared=set(roles))
            for role, value in roles.items():
                layer.keys[role], layer.values[role] = f"{scope}/{role}", np.asarray(value)
            artifact.layers.append(layer)
        artifact.step, artifact.step_source = step, "global_step"
        found = []
        for finding in judge(artifact, self.total_steps):
            if finding.code == "BN010" and step > 0:
                train_ops = [name for name in self._fetched if "global_step" not in name] or ["(the fetched ops)"]
                finding = Finding(path=finding.path, line=None, column=None, code="BN001", layer=finding.layer,
                                  message=f"the moving statistics of {finding.layer!r} are still at their initializer "
                                          f"after {step} steps of {', '.join(repr(n) for n in train_ops[:4])}: "
                                          "the UPDATE_OPS are not run by the train op",
                                  details={"step": step, "train_ops": train_ops})
            found.append(finding)
        if self._report(found, step) and self.on_fault == "stop":
            run_context.request_stop()
