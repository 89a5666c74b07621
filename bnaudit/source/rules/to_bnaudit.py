"""The fix that swaps a batch-norm call for ``bnaudit.layers.batch_norm``, which shares its variables
by name, updates in place and takes the flag tensor itself (BN002, BN008).

Unsafe: the new layer adds a variable (``num_updates``) and averages differently at first, so a
checkpoint of the old graph lacks it.  Arguments without a counterpart refuse the fix.
"""

from __future__ import annotations

from bnaudit.fixes import Applicability, Edit, Fix
from bnaudit.source.program import BatchNormUse

FUNCTION = "bnaudit.layers.batch_norm"
IMPORT = "import bnaudit.layers"


def can_convert(use: BatchNormUse) -> bool:
    """A call written with arguments that all have a counterpart (not `activation_fn=`, `renorm=`...)."""
    known = {old for old, _ in use.api.to_bnaudit}
    return bool(known) and use.how == "direct" and not use.unknown_args and not use.sources and set(use.args) <= known


def convert(use: BatchNormUse, training: str | None = None) -> tuple[Edit, ...]:
    """The edits that turn this layer's call into ``bnaudit.layers.batch_norm``; ``training`` replaces
    the flag it is given (the text of an expression)."""
    defaults = tuple(use.api.to_bnaudit_defaults)
    renames = tuple(use.api.to_bnaudit)
    if training is not None:
        # The flag the call passed (if any) is replaced: drop it, and give this one.
        renames = tuple((old, "" if new == "training" else new) for old, new in renames)
        defaults = (("training", training),) + tuple(d for d in defaults if d[0] != "training")
    return (Edit.convert(use.call.loc, FUNCTION, use.api.params, renames, defaults, leading=("inputs", "training")),
            Edit.add_import(IMPORT))


def fix(use: BatchNormUse, title: str = "Use `bnaudit.layers.batch_norm`, which shares its variables by name"
        ) -> Fix | None:
    return Fix(title, convert(use), Applicability.UNSAFE) if can_convert(use) else None
