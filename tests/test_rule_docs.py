"""Every fault has a document whose front matter matches the catalogue and whose examples are true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bnaudit import faults
from support import check_text, code_blocks

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
SECTIONS = ("## What it catches", "## Why it matters", "## Known problems", "## Bad example", "## Good example",
            "## How to fix")


def front_matter(text: str) -> dict[str, str]:
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "document must start with a --- front matter block"
    return dict(line.split(": ", 1) for line in match.group(1).splitlines())


@pytest.mark.parametrize("fault", faults.FAULTS.values(), ids=lambda f: f.code)
def test_document_matches_catalogue(fault):
    path = RULES_DIR / fault.document_name
    assert path.is_file(), f"missing rule document {path.name}"
    text = path.read_text(encoding="utf-8")
    meta = front_matter(text)
    assert meta["code"] == fault.code
    assert meta["name"] == fault.name
    assert meta["severity"] == fault.severity
    assert tuple(part.strip() for part in meta["detected-by"].split(",")) == fault.detected_by
    for section in SECTIONS:
        assert section in text, f"{path.name} lacks the section {section!r}"
    # The packaged copy (what `bnaudit explain` prints) is this file.
    assert faults.document(fault.code) == text


SOURCE_FAULTS = [f for f in faults.FAULTS.values() if faults.SOURCE in f.detected_by]


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
