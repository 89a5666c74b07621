"""Each rule class carries its own valid and invalid examples (as Fixit rules do); run them."""

from __future__ import annotations

import pytest

from bnaudit.source.rules import Rule, load_rules
from support import check_text, expectations, normalize

load_rules()
INVALID = [(rule.code, i, example) for rule in Rule.registry for i, example in enumerate(rule.invalid)]
VALID = [(rule.code, i, example) for rule in Rule.registry for i, example in enumerate(rule.valid)]


def test_every_rule_has_examples():
    for rule in Rule.registry:
        assert rule.invalid and rule.valid, f"{rule.code} needs valid and invalid examples"


@pytest.mark.parametrize("code,index,example", INVALID, ids=lambda v: str(v)[:12])
def test_invalid_example(code, index, example, tmp_path):
    expected = expectations(normalize(example))
    assert expected and {c for c, _ in expected} == {code}, "invalid examples mark their lines with # expect"
    assert check_text(tmp_path, example) == expected


@pytest.mark.parametrize("code,index,example", VALID, ids=lambda v: str(v)[:12])
def test_valid_example(code, index, example, tmp_path):
    assert check_text(tmp_path, example) == []
