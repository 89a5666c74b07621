"""Every fixture script's `# expect:` comments are exactly what `bnaudit check` reports.

The scripts in fixtures/scripts reconstruct the code of the TensorFlow issue #1122 thread, one
pattern per script; clean_*.py look like the faults but are correct and must stay silent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bnaudit.source import analyze
from support import expectations

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_findings_match_expectations(script):
    result = analyze([script])
    found = sorted((finding.code, finding.line) for finding in result.findings)
    expected = expectations(script.read_text(encoding="utf-8"))
    assert found == expected, "\n".join(
        f"{f.path}:{f.line}: {f.code} {f.message}" for f in result.findings) or "no findings"


def test_clean_scripts_exist_and_expect_nothing():
    clean = [script for script in SCRIPTS if script.name.startswith("clean_")]
    assert len(clean) >= 10
    for script in clean:
        assert expectations(script.read_text(encoding="utf-8")) == [], script.name


def test_every_source_fault_has_a_bad_fixture():
    codes = {code for script in SCRIPTS for code, _ in expectations(script.read_text(encoding="utf-8"))}
    assert codes >= {"BN001", "BN002", "BN003", "BN004", "BN005", "BN006", "BN007", "BN008", "BN009", "BN011"}
