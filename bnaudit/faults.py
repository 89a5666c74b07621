"""The catalogue of batch-norm faults: one code, one name, one document each.

Both halves of bnaudit (the source analyzer and the graph inspector) report
under these codes, so a user reads one explanation whatever found the fault.
The long-form text lives in ``rules/BNxxx-name.md``; a test keeps the front
matter of those documents and this table in agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

ERROR = "error"
WARNING = "warning"

SOURCE = "source"
GRAPH = "graph"


@dataclass(frozen=True)
class Fault:
    code: str
    name: str
    severity: str
    detected_by: tuple[str, ...]
    summary: str
    fix: str

    @property
    def document_name(self) -> str:
        return f"{self.code}-{self.name}.md"


_FAULTS = (
    Fault(
        "BN000", "parse-error", ERROR, (SOURCE,),
        "The file could not be parsed as Python 3, so nothing in it was checked.",
        "Fix the syntax error (or port the file to Python 3) so the file can be analyzed.",
    ),
    Fault(
        "BN001", "unrun-update-ops", ERROR, (SOURCE, GRAPH),
        "Moving-average updates sit in the UPDATE_OPS collection and the train op never runs them.",
        "Build the train op under `tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS))`, "
        "or use `bnaudit.layers.batch_norm`, which updates in place.",
    ),
    Fault(
        "BN002", "duplicated-scope", ERROR, (SOURCE, GRAPH),
        "One batch-norm layer is built twice with separate variables, or reuses variables that do not exist.",
        "Build the layer once per scope and share it with `reuse=True`/`tf.AUTO_REUSE` on later calls, "
        "or use `bnaudit.layers.batch_norm`, which shares by name.",
    ),
    Fault(
        "BN003", "tensor-valued-reuse", ERROR, (SOURCE,),
        "`reuse` is given a tensor; it must be a Python bool, None or tf.AUTO_REUSE fixed when the graph is built.",
        "Pass `reuse=True`/`False`/`None`/`tf.AUTO_REUSE` as a Python value; switch train/eval with the "
        "training flag, not with reuse.",
    ),
    Fault(
        "BN004", "saver-omits-moving-stats", ERROR, (SOURCE, GRAPH),
        "The saver's variable list holds only trainable variables, so moving_mean/moving_variance are never saved.",
        "Save `tf.global_variables()` (or `trainable + tf.model_variables()`), or model.variables in TF2.",
    ),
    Fault(
        "BN005", "negative-variance", ERROR, (SOURCE, GRAPH),
        "A variance can become negative (one-pass E[x^2]-E[x]^2, bad decay or epsilon), and normalization yields NaN.",
        "Compute variance with `tf.nn.moments` (two-pass) or clamp with `tf.maximum(var, 0.)`; keep decay in "
        "[0, 1] and epsilon > 0.",
    ),
    Fault(
        "BN006", "training-flag-unset", ERROR, (SOURCE,),
        "The layer runs in inference mode during training: batch statistics are never used or accumulated.",
        "Pass `training=True` while training (a Python bool or a boolean tensor), or use `bnaudit.layers`, "
        "whose functional API requires the flag.",
    ),
    Fault(
        "BN007", "python-bool-on-tensor", ERROR, (SOURCE,),
        "A Python `if`/`not`/`and`/`bool()` is applied to a tensor-valued training flag.",
        "Pass the flag tensor straight to the layer's `training`/`is_training` argument, or use `tf.cond`.",
    ),
    Fault(
        "BN008", "cond-duplicated-bn", ERROR, (SOURCE,),
        "`tf.cond` selects between two batch-norm layers instead of passing the flag to one layer.",
        "Build one layer and pass the boolean tensor as its `is_training`/`training` argument.",
    ),
    Fault(
        "BN009", "slow-moving-average", WARNING, (SOURCE, GRAPH),
        "The moving-average decay is too close to 1 for the number of training steps.",
        "Lower the decay/momentum (e.g. 0.9) so that d**steps is small, or use `bnaudit.layers`, whose "
        "averages are bias-corrected.",
    ),
    Fault(
        "BN010", "stale-moving-stats", ERROR, (GRAPH,),
        "Training ran but the moving statistics are still at their initializer (mean 0, variance 1).",
        "Make sure the moving-average updates run during training (see BN001/BN006), then retrain.",
    ),
    Fault(
        "BN011", "batch-stats-at-inference", WARNING, (SOURCE, GRAPH),
        "An evaluation, serving or export path normalizes with batch statistics instead of the moving averages.",
        "Build the inference path with `is_training=False`/`training=False`; silence with "
        "`# bnaudit: ignore[BN011]` if batch statistics are deliberate.",
    ),
    Fault(
        "BN012", "nonfinite-bn-params", ERROR, (GRAPH,),
        "gamma, beta or a moving statistic holds NaN or Inf.",
        "Find the step that diverged (lower the learning rate, clip gradients), restore an earlier checkpoint "
        "and retrain.",
    ),
)

FAULTS: dict[str, Fault] = {fault.code: fault for fault in _FAULTS}
_BY_NAME = {fault.name: fault for fault in _FAULTS}

_CODE_RE = re.compile(r"^BN\d{3}$")


def get(code_or_name: str) -> Fault:
    """Look a fault up by code (``BN001``, case-insensitive) or by name."""
    key = code_or_name.strip()
    if _CODE_RE.match(key.upper()) and key.upper() in FAULTS:
        return FAULTS[key.upper()]
    if key.lower() in _BY_NAME:
        return _BY_NAME[key.lower()]
    raise KeyError(code_or_name)


def is_code(text: str) -> bool:
    return bool(_CODE_RE.match(text.strip().upper()))


def document(code_or_name: str) -> str:
    """The rule document shipped in the package (``rules/`` in the repository)."""
    fault = get(code_or_name)
    return resources.files("bnaudit.rules").joinpath(fault.document_name).read_text(encoding="utf-8")


def expand_selection(selectors: list[str] | None) -> set[str] | None:
    """Turn ``--select``/``--ignore`` values into codes; prefixes like ``BN00`` select a range.

    Raises ``ValueError`` naming a selector that matches nothing.
    """
    if selectors is None:
        return None
    codes: set[str] = set()
    for selector in selectors:
        for item in selector.split(","):
            item = item.strip()
            if not item:
                continue
            if item.upper() == "ALL":
                codes.update(FAULTS)
                continue
            matched = {code for code in FAULTS if code.startswith(item.upper())}
            if not matched and item.lower() in _BY_NAME:
                matched = {_BY_NAME[item.lower()].code}
            if not matched:
                raise ValueError(f"unknown rule code or name: {item!r}")
            codes.update(matched)
    return codes
