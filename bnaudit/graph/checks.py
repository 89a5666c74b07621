"""One function per fault code, each reading the artifact model and nothing else.

Every check reports what the artifact itself shows -- op names, variable names,
saved values -- in ``details``, so a finding can be verified by hand with any
checkpoint or proto viewer.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from itertools import combinations
from typing import Callable

import numpy as np

from bnaudit import catalogue, faults
from bnaudit.findings import Finding
from bnaudit.graph.model import MEAN, MOVING, PARAMS, ROLES, VARIANCE, Artifact, BNLayer, split_role
from bnaudit.graph.tfgraph import APPLY_OP_RE, ASSIGN_OPS, Liveness, is_moving_stat

_LIST_LIMIT = 8
_DETAIL_LIMIT = 256
STALE_THRESHOLD = 0.1


CHECKS: dict[str, Callable[[Artifact, set[str]], list[Finding]]] = {}


def check(code: str):
    """Register a function as the graph check of fault ``code`` (one per fault, see run_checks)."""
    def register(function):
        assert code in faults.FAULTS and faults.GRAPH in faults.FAULTS[code].detected_by, code
        assert code not in CHECKS, f"two graph checks for {code}"
        CHECKS[code] = function
        return function
    return register


def _finding(artifact: Artifact, code: str, layer: str | None, message: str, details: dict,
             fix: str | None = None) -> Finding:
    return Finding(path=artifact.path, line=None, column=None, code=code, message=message,
                   layer=layer, details=details, fix=fix)


# A fix in the terms of the artifact's own framework (the catalogue's fix speaks TF1).
_KERAS_BN004_FIX = ("Save the whole model (`model.save('model.keras')`) or all its weights "
                    "(`model.save_weights(...)`, which include the non-trainable ones), not a list of "
                    "trainable variables.")


def _num(value: float) -> float | str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(f"{value:.6g}")


def _listing(channels, values) -> str:
    pairs = [f"{c}: {_num(v)}" for c, v in zip(channels[:_LIST_LIMIT], values[:_LIST_LIMIT])]
    more = f", ... ({len(channels) - _LIST_LIMIT} more)" if len(channels) > _LIST_LIMIT else ""
    return ", ".join(pairs) + more


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# -- BN001 -----------------------------------------------------------------------------------


def _downstream_of_all(body, starts: list[str]) -> set[str]:
    common: set[str] | None = None
    for start in starts:
        seen = {start}
        queue = deque([start])
        while queue:
            name = queue.popleft()
            for consumer, _ in body.consumers(name):
                if consumer not in seen:
                    seen.add(consumer)
                    queue.append(consumer)
        seen.discard(start)
        common = seen if common is None else common & seen
        if not common:
            return set()
    return common or set()


@check("BN001")
def check_bn001(artifact: Artifact, explained: set[str]) -> list[Finding]:
    training = artifact.training
    if training is None or not training.update_ops:
        return []
    view, body = training.graph, training.graph.main
    update_ops = [op for op in training.update_ops if op in body.nodes]
    train_ops = [op for op in training.train_ops if op in body.nodes]
    source = training.train_ops_source
    if not train_ops:
        applies = [name for name, node in body.nodes.items() if APPLY_OP_RE.match(node.op)]
        if not applies:
            artifact.notes.append(
                f"BN001 not checked: the graph has {_plural(len(update_ops), 'UPDATE_OPS op')} but no train_op "
                "collection and no op that applies gradients, so no train op can be identified")
            return []
        common = _downstream_of_all(body, applies)
        train_ops = sorted(name for name in common
                           if not any(consumer in common for consumer, _ in body.consumers(name)))
        source = f"the ops downstream of all {_plural(len(applies), 'gradient update')}"
        if not train_ops:
            artifact.notes.append("BN001 not checked: no single op runs every gradient update, "
                                  "so no train op can be identified")
            return []
    run = view.ancestors(body, train_ops)
    missing = [op for op in update_ops if op not in run]
    by_layer: dict[str | None, list[str]] = defaultdict(list)
    for op in missing:
        scope = None
        for assign in view.find_assigns(body, op):
            target = view.assigned_variable(body, assign)
            if is_moving_stat(target):
                scope = split_role(target)[0]
                break
        by_layer[scope].append(op)
    findings = []
    for scope, ops in sorted(by_layer.items(), key=lambda item: item[0] or ""):
        layer = artifact.layer(scope) if scope else None
        if layer is not None and (layer.at_initializer(MEAN) is False or layer.at_initializer(VARIANCE) is False):
            # The graph cannot see how session.run was called; the saved averages can.
            artifact.notes.append(
                f"BN001: the UPDATE_OPS of {scope!r} are not run by the train op, but its moving statistics "
                "moved, so they were run some other way (e.g. fetched in the same session.run)")
            continue
        what = f"the moving-average updates of {scope!r}" if scope else "UPDATE_OPS ops"
        findings.append(_finding(
            artifact, "BN001", scope,
            f"{what} ({', '.join(ops[:_LIST_LIMIT])}) are in UPDATE_OPS but not run by the train op "
            f"{', '.join(repr(op) for op in train_ops[:_LIST_LIMIT])} (neither by data nor by control edges)",
            {"update_ops": ops, "train_ops": train_ops, "train_ops_from": source,
             "update_ops_total": len(update_ops)}))
    return findings


# -- BN002 -----------------------------------------------------------------------------------


def _state(layer: BNLayer) -> str:
    untouched = layer.untouched()
    if untouched is None:
        return "unknown"
    return "untouched" if untouched else "trained"


def _structural_duplicates(artifact: Artifact) -> list[tuple[BNLayer, BNLayer, dict]]:
    view = artifact.graph
    if view is None:
        return []
    body = view.main
    sites: dict[tuple, list[tuple[BNLayer, frozenset, str]]] = defaultdict(list)
    for norm in view.normalizations(body):
        layer = None
        for var in view.norm_variables(norm):
            layer = artifact.layer_for_variable(var)
            if layer is not None:
                break
        if layer is None:
            continue
        base, trail = view.cond_trail(body, norm.data)
        sites[base].append((layer, trail, norm.node))
    pairs, seen = [], set()
    for base, entries in sites.items():
        for (l1, t1, n1), (l2, t2, n2) in combinations(entries, 2):
            if l1 is l2 or (l1.name, l2.name) in seen:
                continue
            preds = {p for p, port in t1 if any(q == p and qport != port for q, qport in t2)}
            if preds:
                seen.add((l1.name, l2.name))
                pairs.append((l1, l2, {"input": f"{base[0]}:{base[1]}", "cond_predicate": sorted(preds)[0],
                                       "ops": [n1, n2]}))
    return pairs


_STEM_PART = re.compile(r"(_\d+|" + "|".join(f"_{word}" for word in sorted(catalogue.COPY_SUFFIX_WORDS)) + ")$")


def _stem(name: str) -> str:
    """A layer name with each scope's uniquifying (``_1``) or evaluation suffix removed."""
    return "/".join(_STEM_PART.sub("", part) for part in name.split("/"))


def _named_duplicates(artifact: Artifact) -> list[tuple[BNLayer, BNLayer, dict]]:
    """Without a structural match: an untouched layer and a trained one of the same stem and width.

    A model built twice without ``reuse`` leaves ``bn``/``bn_1`` (or ``model/bn``/``model_1/bn``)
    pairs whose second set never trained; the untouched set is paired with the trained set
    nearest before it.
    """
    pairs = []
    layers = artifact.layers
    states = [_state(layer) for layer in layers]
    stems = [_stem(layer.name) for layer in layers]
    for index, stale in enumerate(layers):
        if states[index] != "untouched":
            continue
        candidates = [(position, layer) for position, layer in enumerate(layers)
                      if position != index and states[position] == "trained"
                      and layer.channels == stale.channels and stems[position] == stems[index]]
        if not candidates:
            continue
        exact = [item for item in candidates if _STEM_PART.sub("", stale.name) == item[1].name]
        before = [item for item in candidates if item[0] < index]
        _, trained = (exact or before or candidates)[-1 if not exact and before else 0]
        pairs.append((trained, stale, {"matched_by": "name stem and shape"}))
    return pairs


@check("BN002")
def check_bn002(artifact: Artifact, explained: set[str]) -> list[Finding]:
    pairs = _structural_duplicates(artifact)
    if not pairs and artifact.has_values:
        pairs = _named_duplicates(artifact)
    findings = []
    for first, second, details in pairs:
        s1, s2 = _state(first), _state(second)
        if s1 == "untouched" and s2 == "trained":
            trained, stale = second, first
        else:
            trained, stale = first, second
        states = {trained.name: _state(trained), stale.name: _state(stale)}
        if states[trained.name] == "trained" and states[stale.name] == "untouched":
            verdict = f"{trained.name!r} was trained; {stale.name!r} is still at its initializer"
            explained.add(stale.name)
        elif artifact.has_values:
            verdict = f"{trained.name!r} is {states[trained.name]}, {stale.name!r} is {states[stale.name]}"
        else:
            verdict = "the artifact holds no values to tell which set was trained"
        where = (f"normalize the same input {details['input']!r} in the two branches of one cond "
                 f"(on {details['cond_predicate']!r})" if "input" in details
                 else "have the same width and names that differ only by a suffix")
        findings.append(_finding(
            artifact, "BN002", stale.name,
            f"two sets of batch-norm variables for one layer: {trained.name!r} and {stale.name!r} {where}; {verdict}",
            dict(details, trained=trained.name, duplicate=stale.name, states=states)))
    return findings


# -- BN004 -----------------------------------------------------------------------------------


@check("BN004")
def check_bn004(artifact: Artifact, explained: set[str]) -> list[Finding]:
    if not artifact.has_values:
        return []
    findings = []
    for layer in artifact.layers:
        params = [role for role in PARAMS if role in layer.keys]
        declared = [role for role in MOVING if role in layer.declared and role not in layer.keys]
        orphaned = [role for role in MOVING if role not in layer.keys] if params and not layer.declared else []
        missing = declared or orphaned
        if not missing:
            continue
        source = "config" if "Keras" in artifact.kind else "graph"
        reason = f"though the {source} declares them" if declared else "though gamma/beta are saved"
        if params and declared:
            reason += f", while {' and '.join(params)} are saved"
        findings.append(_finding(
            artifact, "BN004", layer.name,
            f"{' and '.join(missing)} of {layer.name!r} are not saved, {reason}: a restored model "
            "normalizes with the initial statistics (mean 0, variance 1)",
            {"missing": missing, "saved": sorted(layer.keys), "declared": sorted(layer.declared)},
            fix=_KERAS_BN004_FIX if "Keras" in artifact.kind else None))
    return findings


# -- BN005 / BN012 ---------------------------------------------------------------------------


@check("BN005")
def check_bn005(artifact: Artifact, explained: set[str]) -> list[Finding]:
    findings = []
    for layer in artifact.layers:
        variance = layer.values.get(VARIANCE)
        if variance is None:
            continue
        flat = np.asarray(variance, dtype=np.float64).reshape(-1)
        channels = np.flatnonzero(flat < 0).tolist()
        if not channels:
            continue
        values = flat[channels].tolist()
        findings.append(_finding(
            artifact, "BN005", layer.name,
            f"moving variance of {layer.name!r} is negative in {len(channels)} of {flat.size} channels "
            f"({_listing(channels, values)})",
            {"channels": channels[:_DETAIL_LIMIT], "values": [_num(v) for v in values[:_DETAIL_LIMIT]],
             "count": len(channels)}))
    return findings


@check("BN012")
def check_bn012(artifact: Artifact, explained: set[str]) -> list[Finding]:
    findings = []
    for layer in artifact.layers:
        bad: dict[str, dict] = {}
        for role in ROLES:
            value = layer.values.get(role)
            if value is None:
                continue
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            channels = np.flatnonzero(~np.isfinite(flat)).tolist()
            if channels:
                bad[role] = {"channels": channels[:_DETAIL_LIMIT],
                             "values": [_num(v) for v in flat[channels][:_DETAIL_LIMIT]], "count": len(channels)}
        if not bad:
            continue
        parts = [f"{role} ({_listing(info['channels'], info['values'])})" for role, info in bad.items()]
        findings.append(_finding(
            artifact, "BN012", layer.name,
            f"non-finite values in {layer.name!r}: {'; '.join(parts)}", {"roles": bad}))
    return findings


# -- BN009 / BN010 ---------------------------------------------------------------------------


@check("BN009")
def check_bn009(artifact: Artifact, explained: set[str]) -> list[Finding]:
    steps = artifact.step
    with_decay = [layer for layer in artifact.layers if layer.decay is not None and not layer.bias_corrected]
    if not with_decay:
        return []
    if steps is None:
        artifact.notes.append("BN009 not checked: the artifact records no step count "
                              "(global_step or optimizer iterations)")
        return []
    findings = []
    for layer in with_decay:
        decay = layer.decay
        if not 0.0 <= decay <= 1.0:
            continue
        remaining = 1.0 if decay >= 1.0 else decay ** max(steps, 0)
        if remaining <= STALE_THRESHOLD:
            continue
        needed = None if decay >= 1.0 or decay <= 0.0 else math.ceil(math.log(STALE_THRESHOLD) / math.log(decay))
        need = f"; it needs {needed} steps to fall below {STALE_THRESHOLD}" if needed else \
            "; a decay of 1 never moves the averages"
        findings.append(_finding(
            artifact, "BN009", layer.name,
            f"moving-average decay {decay:g} of {layer.name!r} over {steps} steps leaves "
            f"{remaining:.0%} of the initial value in the averages (decay**steps = {remaining:.3g} > "
            f"{STALE_THRESHOLD}){need}",
            {"decay": _num(decay), "steps": steps, "decay_pow_steps": _num(remaining), "steps_needed": needed,
             "decay_from": layer.decay_source, "steps_from": artifact.step_source}))
    return findings


def _moved(layer: BNLayer) -> list[str]:
    return [role for role in PARAMS if layer.at_initializer(role) is False]


@check("BN010")
def check_bn010(artifact: Artifact, explained: set[str]) -> list[Finding]:
    any_moved = [layer.name for layer in artifact.layers if _moved(layer)]
    findings = []
    for layer in artifact.layers:
        if layer.name in explained:
            continue
        if not (layer.at_initializer(MEAN) and layer.at_initializer(VARIANCE)):
            continue
        if artifact.step:
            evidence = f"{artifact.step_source or 'step count'} = {artifact.step}"
        elif _moved(layer):
            evidence = f"its {' and '.join(_moved(layer))} moved away from the initializer"
        elif any_moved:
            evidence = f"gamma/beta of {any_moved[0]!r} moved away from the initializer"
        else:
            continue
        findings.append(_finding(
            artifact, "BN010", layer.name,
            f"moving statistics of {layer.name!r} are exactly at their initializer (mean "
            f"{_num(layer.initial[MEAN])}, variance {_num(layer.initial[VARIANCE])}) although training ran "
            f"({evidence}): the moving-average updates never ran",
            {"evidence": evidence, "step": artifact.step, "params_moved": _moved(layer),
             "channels": layer.channels}))
    return findings


# -- BN011 -----------------------------------------------------------------------------------


@check("BN011")
def check_bn011(artifact: Artifact, explained: set[str]) -> list[Finding]:
    if not artifact.inference:
        return []
    hits: dict[str, dict] = {}

    def record(layer_name: str, entry: str, evidence: str) -> None:
        hit = hits.setdefault(layer_name, {"entry_points": [], "evidence": []})
        if entry not in hit["entry_points"]:
            hit["entry_points"].append(entry)
        if evidence not in hit["evidence"]:
            hit["evidence"].append(evidence)

    for path in artifact.inference:
        view = path.graph
        main = view.main
        live = Liveness(view, main, path.fed) if not main.is_function else None
        scans = []
        if path.outputs:
            outputs = [name.split(":", 1)[0] for name in path.outputs]
            nodes = view.ancestors(main, outputs, live)
            scans.append((main, nodes, {}, live))
            scans += [(fn, None, binds, None) for fn, binds in view.reachable_functions(main, nodes, {})]
        elif not path.functions:
            nodes = {name for name in main.nodes if live.node_live(name)}
            scans.append((main, nodes, {}, live))
            scans += [(fn, None, binds, None) for fn, binds in view.reachable_functions(main, nodes, {})]
        for fname, binds in path.functions:
            body = view.function(fname)
            if body is None:
                continue
            scans.append((body, None, binds, None))
            scans += [(fn, None, b, None) for fn, b in view.reachable_functions(body, list(body.nodes), binds)]
        for body, nodes, binds, body_live in scans:
            for norm in view.normalizations(body):
                if nodes is not None and norm.node not in nodes:
                    continue
                if not view.batch_statistics(norm, body_live):
                    continue
                variables = view.norm_variables(norm, binds, body_live)
                layer = next((artifact.layer_for_variable(v) for v in variables
                              if artifact.layer_for_variable(v)), None)
                if layer is None and norm.fused_training is None and not any(map(is_moving_stat, variables)):
                    continue  # a layer/instance norm built on tf.nn.batch_normalization
                name = layer.name if layer else (split_role(variables[0])[0] if variables and split_role(variables[0])
                                                 else norm.node.rsplit("/", 2)[0])
                how = "FusedBatchNorm with is_training=true" if norm.fused_training else "batch moments (Mean/SquaredDifference)"
                record(name, path.label, f"{norm.node}: normalizes with {how}")
            for name, node in body.nodes.items():
                if node.op not in ASSIGN_OPS or (nodes is not None and name not in nodes):
                    continue
                target = view.assigned_variable(body, name, binds)
                if is_moving_stat(target):
                    layer = artifact.layer_for_variable(target)
                    record(layer.name if layer else split_role(target)[0], path.label,
                           f"{name}: assigns {target}")
    findings = []
    for name, hit in sorted(hits.items()):
        entries = " and ".join(hit["entry_points"])
        verb = "normalize" if len(hit["entry_points"]) > 1 else "normalizes"
        findings.append(_finding(
            artifact, "BN011", name,
            f"{entries} {verb} {name!r} with batch statistics"
            + (f" and {'update' if len(hit['entry_points']) > 1 else 'updates'} its moving statistics"
               if any("assigns" in e for e in hit["evidence"]) else "")
            + ": predictions depend on the batch they arrive in",
            hit))
    return findings


def run_checks(artifact: Artifact) -> list[Finding]:
    """Every registered check, in code order.  ``explained`` collects the layers a finding already
    accounts for (BN002's duplicate copies, which are never trained), so a later check (BN010)
    does not report them again."""
    explained: set[str] = set()
    findings = []
    for code in sorted(CHECKS):
        findings += CHECKS[code](artifact, explained)
    return findings
