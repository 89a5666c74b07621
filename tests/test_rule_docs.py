"""Every fault has a document whose front matter matches the catalogue and whose examples are true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bnaudit import faults
from support import check_text, code_blocks

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "bnaudit" / "rules"
SECTIONS = ("## What it catches", "## Why it matters", "## Known problems", "## Bad example", "## Good example",
            "## How to fix", "## Fix safety")
README = ROOT / "README.md"


@pytest.mark.parametrize("fault", faults.FAULTS.values(), ids=lambda f: f.code)
def test_document_is_complete(fault):
    path = RULES_DIR / fault.document_name
    assert path.is_file(), f"missing rule document {path.name}"
    text = path.read_text(encoding="utf-8")
    meta = faults.parse_front_matter(text, path.name)   # FAULTS is loaded from these lines
    assert (meta["code"], meta["name"], meta["severity"]) == (fault.code, fault.name, fault.severity)
    assert text.splitlines()[len(meta) + 2] == f"# {fault.code} {fault.name}"
    positions = [text.find(section + "\n") for section in SECTIONS]
    for section, position in zip(SECTIONS, positions):
        assert position >= 0, f"{path.name} lacks the section {section!r}"
    assert positions == sorted(positions), f"{path.name}: sections out of order"
    # The packaged copy (what `bnaudit explain` prints) is this file.
    assert faults.document(fault.code) == text


def test_catalogue_is_every_document():
    """Codes are BN000, BN001, ... without gaps, one document each, names unique."""
    documents = sorted(path.name for path in RULES_DIR.glob("BN*.md"))
    assert documents == [fault.document_name for fault in faults.FAULTS.values()]
    assert list(faults.FAULTS) == [f"BN{i:03d}" for i in range(len(faults.FAULTS))]
    assert len({fault.name for fault in faults.FAULTS.values()}) == len(faults.FAULTS)


def test_readme_table_is_generated_from_the_documents():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- rules-table:[^\n]*-->\n(.*?)\n<!-- rules-table: end -->", text, re.DOTALL)
    assert match, "README.md lacks the generated rules table"
    from bnaudit.report import rules_markdown

    assert match.group(1) == rules_markdown(), "README.md's table is stale: run `bnaudit rules --format markdown`"


def test_a_document_without_its_front_matter_is_refused():
    with pytest.raises(ValueError, match="front matter"):
        faults.parse_front_matter("# BN013 no front matter\n", "BN013-x.md")


SOURCE_FAULTS = [f for f in faults.FAULTS.values() if {faults.SOURCE, faults.PARSER} & set(f.detected_by)]


@pytest.mark.parametrize("fault", SOURCE_FAULTS, ids=lambda f: f.code)
def test_bad_example_reports_exactly_its_code(fault, tmp_path):
    text = (RULES_DIR / fault.document_name).read_text(encoding="utf-8")
    blocks = code_blocks(text, "bad")
    assert blocks, "a source rule's document needs a ```python bad block"
    for block in blocks:
        found = check_text(tmp_path, block)
        assert found, f"{fault.code}: the bad example produced no finding"
        assert {code for code, _ in found} == {fault.code}, found


@pytest.mark.parametrize("fault", SOURCE_FAULTS, ids=lambda f: f.code)
def test_good_example_is_clean(fault, tmp_path):
    text = (RULES_DIR / fault.document_name).read_text(encoding="utf-8")
    blocks = code_blocks(text, "good")
    assert blocks, "a source rule's document needs a ```python good block"
    for block in blocks:
        assert check_text(tmp_path, block) == []
