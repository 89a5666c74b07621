"""Adding a fault means one document and one detector per side: this says what was forgotten.

The code sets come from the catalogue (the documents' front matter), never from a list here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bnaudit import faults
from bnaudit.source.rules import Rule, load_rules
from support import code_blocks

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "fixtures" / "scripts"
EXPECT_RE = re.compile(r"#\s*expect:\s*(BN\d{3}(?:\s*,\s*BN\d{3})*)")


def _detected_by(detector: str) -> set[str]:
    return {code for code, fault in faults.FAULTS.items() if detector in fault.detected_by}


def test_each_source_fault_has_exactly_one_rule():
    codes = [rule.code for rule in load_rules()]
    assert sorted(codes) == sorted(set(codes)), "two rules report one code"
    assert set(codes) == _detected_by(faults.SOURCE), (
        f"faults without a rule: {sorted(_detected_by(faults.SOURCE) - set(codes))}; "
        f"rules of faults not detected by source: {sorted(set(codes) - _detected_by(faults.SOURCE))}")


def test_each_graph_fault_has_exactly_one_check():
    from bnaudit.graph.checks import CHECKS   # registration refuses a second check for a code

    assert set(CHECKS) == _detected_by(faults.GRAPH), (
        f"graph faults without a check: {sorted(_detected_by(faults.GRAPH) - set(CHECKS))}")


def test_each_rule_carries_examples():
    for rule in load_rules():
        assert rule.valid and rule.invalid, f"{rule.code}: a rule needs valid and invalid examples"
        assert all(f"expect: {rule.code}" in example for example in rule.invalid), rule.code


@pytest.mark.parametrize("code", sorted(_detected_by(faults.SOURCE)))
def test_each_source_fault_has_fixture_scripts(code):
    expecting = [path.name for path in SCRIPTS.glob(f"bn{code[2:]}_*.py")
                 if code in {c.strip() for m in EXPECT_RE.finditer(path.read_text(encoding="utf-8"))
                             for c in m.group(1).split(",")}]
    assert expecting, f"no fixtures/scripts/bn{code[2:]}_*.py expects {code}"


@pytest.mark.parametrize("code", sorted(_detected_by(faults.GRAPH)))
def test_each_graph_fault_has_a_trained_artifact(code):
    from graph_fixtures import ARTIFACTS

    assert any(code in codes for _, _, codes in ARTIFACTS.values()), f"no artifact in ARTIFACTS reports {code}"


@pytest.mark.parametrize("code", sorted(_detected_by(faults.PARSER)))
def test_each_parser_fault_has_a_bad_example(code):
    document = faults.document(code)
    assert code_blocks(document, "bad"), f"{code}: the document needs a ```python bad block"


def test_rule_modules_are_discovered_not_listed():
    """A new module in bnaudit/source/rules is loaded without being named anywhere."""
    import bnaudit.source.rules as package

    modules = {path.stem for path in Path(package.__file__).parent.glob("*.py") if path.stem != "__init__"}
    loaded = {rule.__module__.rsplit(".", 1)[-1] for rule in Rule.registry}
    assert loaded <= modules
    source = Path(package.__file__).read_text(encoding="utf-8")
    assert not any(f"import {name}" in source or f" {name}," in source for name in modules)
