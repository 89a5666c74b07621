"""Decide from the raw text which files are worth a libcst parse (the expensive part).

A file can contribute to a finding only if it mentions batch norm itself, or
builds a train op, saver, training loop or flag *and* imports (within three
hops, through files of any kind) a checked module that calls a batch-norm API,
or lies on such an import path between that script and the layers.  Everything
else is read, matched against a few regular expressions, and dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from bnaudit import catalogue
from bnaudit.source.imports import ImportResolver, normalize

_BN_NAMES = sorted(catalogue.BN_WORDS | {"moving_mean", "moving_variance", "moving_var", "moving_avg",
                                          "ExponentialMovingAverage"}, key=len, reverse=True)
BN_RE = re.compile("|".join(re.escape(name) for name in _BN_NAMES))
# A batch-norm API used (not defined): `batch_norm(`, `normalizer_fn=slim.batch_norm`,
# `arg_scope([slim.batch_norm], ...)`, outside a `def`/`class`/import line.
_BN_NAMES_ALT = "|".join(re.escape(name) for name in sorted(catalogue.BN_WORDS, key=len, reverse=True))
_BN_CALL_RE = re.compile(
    rf"\b(?:{_BN_NAMES_ALT})\s*\(|[=\[,][ \t]*(?:[\w.]+\.)?(?:{_BN_NAMES_ALT})\b[ \t]*[,)\]\n]")
_DEFINITION_RE = re.compile(r"[ \t]*(?:async[ \t]+)?(?:def|class|import|from)\b")


def calls_batch_norm(text: str) -> bool:
    for match in _BN_CALL_RE.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if not _DEFINITION_RE.match(text, line_start):
            return True
    return False

# What a file without batch norm must mention to matter to a rule.
RELATED_RE = re.compile(
    r"UPDATE_OPS|update_ops|\.minimize\(|apply_gradients|create_train_op|Saver\(|Checkpoint\(|reuse"
    r"|GradientTape|set_learning_phase|placeholder|learning_phase|is_training|training\s*=\s*True"
    r"|input_signature|\.cond\(|\.fit\("
    r"|DEFINE_\w+\(|add_argument\("      # flags: they pick the executions (`--op 0` trains, else tests)
)

_IMPORT_RE = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+([\w., \t()*]+)|import[ \t]+([\w., \t]+))",
                        re.MULTILINE)


def mentions_batch_norm(text: str) -> bool:
    return BN_RE.search(text) is not None


def mentions_related(text: str) -> bool:
    return RELATED_RE.search(text) is not None


def imported_modules(text: str, module: str, is_package: bool) -> set[str]:
    """Module names a file imports, from a regular expression (good enough to link files)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for match in _IMPORT_RE.finditer(text):
        source, names, plain = match.groups()
        if plain:
            for item in plain.split(","):
                found.add(item.split(" as ")[0].strip())
            continue
        if source is None:
            continue
        dots = len(source) - len(source.lstrip("."))
        base = source.lstrip(".")
        if dots:
            anchor = package
            for _ in range(dots - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base and anchor else (base or anchor)
        found.add(base)
        for item in names.replace("(", " ").replace(")", " ").split(","):
            item = item.split(" as ")[0].strip()
            if item and item != "*":
                found.add(f"{base}.{item}")
    return {name for name in found if name}


@dataclass(frozen=True, slots=True)
class Signals:
    """What the prefilter reads from one file's text: kept with the file's stat, so an unchanged file
    is not read again to decide what to parse."""
    mentions_bn: bool
    calls_bn: bool
    related: bool
    imports: tuple[str, ...]      # absolute module names, as the regular expressions see them
    stars: tuple[str, ...]        # `from X import *`, absolute
    dynamic_import: bool          # importlib.import_module(...)
    tf_alias: bool                # `tfv1 = tf.compat.v1` at module level


def signals(text: str, module: str, is_package: bool) -> Signals:
    bn = mentions_batch_norm(text)
    return Signals(
        mentions_bn=bn,
        calls_bn=bn and calls_batch_norm(text),
        related=not bn and mentions_related(text),
        imports=tuple(sorted(imported_modules(text, module, is_package))),
        stars=tuple(_absolute(match.group(1), module, is_package) for match in _STAR_RE.finditer(text))
        if "import" in text and "*" in text else (),
        dynamic_import="import_module(" in text,
        tf_alias=_TF_ALIAS_HINT_RE.search(text) is not None and _TF_ALIAS_RE.search(text) is not None,
    )


def select(texts: dict[str, str], modules: dict[str, tuple[str, bool]]) -> set[str]:
    """The paths to parse, out of ``texts`` (path -> source) with their module names."""
    return select_signals({path: signals(text, *modules[path]) for path, text in texts.items()})


def select_signals(files: dict[str, Signals]) -> set[str]:
    """The paths to parse, out of every checked file's signals."""
    bn_paths = {path for path, signal in files.items() if signal.mentions_bn}
    if not bn_paths:
        return set()
    # Only modules that build layers link other files in (a library module that defines
    # batch_normalization does not make every file importing it relevant).
    resolver = ImportResolver(files)
    reaching = {normalize(path) for path in bn_paths if files[path].calls_bn}
    known: dict[str, set[str]] = {}

    def imports_of(path: str) -> set[str]:
        """The checked modules a file imports (normalized paths), resolved as Python does; computed
        only for the files that need it."""
        found = known.get(path)
        if found is None:
            found = known[path] = {target for name in files[path].imports
                                   if (target := resolver.resolve(path, name)[0]) is not None}
        return found
    by_norm = {normalize(path): path for path in files}
    related = {path for path, signal in files.items() if signal.related}
    # Files that reach a batch-norm module within two hops through scripts that train, evaluate or
    # save.
    for _ in range(2):
        new = {normalize(path) for path in related if imports_of(path) & reaching}
        if new <= reaching:
            break
        reaching |= new
    # One model file between a script and the layers (`train.py` -> `core/yolov4.py` ->
    # `core/common.py`; `main.py` -> `vaegan.py` -> `ops.py`), beside or below the script: it need
    # mention nothing related itself.
    selected = set(bn_paths)
    for path in related:
        if imports_of(path) & reaching:
            selected.add(path)
            continue
        # Only for a script that reaches the layers no other way.
        crossing = [by_norm[target] for target in imports_of(path)
                    if target in by_norm and by_norm[target] not in related
                    and _under(by_norm[target], os.path.dirname(path)) and imports_of(by_norm[target]) & reaching]
        if crossing:
            selected.add(path)
            selected.update(crossing)
    # The script's other modules that train or save: `main.py` imports the layers from `models.py` and
    # the `GAN` whose `train_step` runs them from `gan.py`, which imports neither.
    for path in list(selected):
        if path in related and imports_of(path) & reaching:
            selected.update(by_norm[target] for target in imports_of(path)
                            if target in by_norm and by_norm[target] in related)
    # importlib.import_module(args.model_def): a dynamic import the regular expressions cannot follow
    selected |= {path for path in related if files[path].dynamic_import}
    # `from hyper_parameters import *` brings names (`tf` itself, often) the selected code reads, and
    # `from ..compat import tfv1 as tf` a module alias defined in a compat module.
    for path in list(selected):
        for star in files[path].stars:
            found = resolver.resolve(path, star)[0]
            if found is not None and found in by_norm:
                selected.add(by_norm[found])
        for name in files[path].imports:
            found = resolver.resolve(path, name)[0]
            if found is not None and found in by_norm and by_norm[found] not in selected and \
                    files[by_norm[found]].tf_alias:
                selected.add(by_norm[found])
    return selected


# A module-level alias of a TensorFlow namespace: `tfv1 = tf.compat.v1`, `slim = tf.contrib.slim`.
_TF_ALIAS_RE = re.compile(
    r"^[ \t]*\w+[ \t]*=[ \t]*tf\.(?:compat\.v1|contrib\.slim|contrib\.layers|keras)[ \t]*(?:#.*)?$", re.MULTILINE)


# The same alias, found without anchoring every line first (most files have none).
_TF_ALIAS_HINT_RE = re.compile(r"=[ \t]*tf\.(?:compat\.v1|contrib\.slim|contrib\.layers|keras)\b")
_STAR_RE = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+\*", re.MULTILINE)


def _absolute(source: str, module: str, is_package: bool) -> str:
    dots = len(source) - len(source.lstrip("."))
    base = source.lstrip(".")
    if not dots:
        return base
    anchor = module if is_package else module.rpartition(".")[0]
    for _ in range(dots - 1):
        anchor = anchor.rpartition(".")[0]
    return f"{anchor}.{base}" if base and anchor else (base or anchor)


def _under(path: str, directory: str) -> bool:
    return not directory or os.path.dirname(path) == directory or path.startswith(directory + os.sep)

