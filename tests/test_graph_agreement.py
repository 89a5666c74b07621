"""`bnaudit check` on a training script and `bnaudit graph` on what it trained agree on the fault.

Compared on the codes both tools detect.  Faults a script injects after training (a
negative variance, a NaN) have no source pattern and are left out of the comparison.
A source-only fault leaves a graph-only trace: an unset training flag (BN006) leaves
moving statistics at their initializer (BN010).
"""

from __future__ import annotations

import json

import pytest

from bnaudit.faults import FAULTS, GRAPH, SOURCE
pytest.register_assert_rewrite("graph_fixtures")  # also loaded as a plugin: rewrite it before importing
from graph_fixtures import (ARTIFACTS, COUNTERPARTS, INJECTED, SOURCE_FIXTURES, TRAINING, codes_of, graph_json,
                            run_cli)
from support import expectations

pytest_plugins = ["graph_fixtures"]  # one session of trained artifacts for every module

SHARED = {code for code, fault in FAULTS.items() if SOURCE in fault.detected_by and GRAPH in fault.detected_by}
TRACES = {"BN006": "BN010"}


def _source_codes(script: str, directory=TRAINING) -> set[str]:
    code, out, err = run_cli("check", "--format", "json", str(directory / f"{script}.py"))
    assert code in (0, 1), err
    return {finding["code"] for finding in json.loads(out)}


def _expected_source(script: str) -> set[str]:
    return {code for code, _ in expectations((TRAINING / f"{script}.py").read_text(encoding="utf-8"))}


@pytest.mark.parametrize("artifact_id", sorted(ARTIFACTS))
def test_expect_comments_match_the_artifact_expectations(artifact_id):
    """The fixtures are consistent with themselves, whatever the analyzer currently finds."""
    script, _, graph_expected = ARTIFACTS[artifact_id]
    source = _expected_source(script)
    injected = INJECTED.get(script, set())
    assert source & SHARED == (graph_expected & SHARED) - injected
    for cause, trace in TRACES.items():
        if cause in source:
            assert trace in graph_expected


@pytest.mark.parametrize("artifact_id", sorted(ARTIFACTS))
def test_check_and_graph_agree(artifact_id, artifact_path):
    script, _, _ = ARTIFACTS[artifact_id]
    source = _source_codes(script)
    _, findings, _ = graph_json(artifact_path(artifact_id))
    graph = codes_of(findings)
    injected = INJECTED.get(script, set())
    assert (source & SHARED) - injected == (graph & SHARED) - injected, (
        f"bnaudit check {script}.py: {sorted(source)}; bnaudit graph {artifact_id}: {sorted(graph)}")
    for cause, trace in TRACES.items():
        if cause in source:
            assert trace in graph, f"check says {cause} on {script}.py, graph shows no {trace}"


@pytest.mark.parametrize("script", sorted(COUNTERPARTS))
def test_check_and_graph_agree_on_the_analyzer_fixtures(script, counterpart_path):
    """The analyzer's own fixture scripts, trained for 300 steps: the artifact shows the same fault."""
    artifact = counterpart_path(script)
    source = _source_codes(script, SOURCE_FIXTURES)
    _, findings, _ = graph_json(artifact)
    graph = codes_of(findings)
    assert source & SHARED == graph & SHARED, (
        f"bnaudit check {script}.py: {sorted(source)}; bnaudit graph {artifact.name or artifact}: {sorted(graph)}")
    for cause, trace in TRACES.items():
        if cause in source:
            assert trace in graph, f"check says {cause} on {script}.py, graph shows no {trace}"
