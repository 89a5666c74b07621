"""Each rule class carries its own valid and invalid examples (as Fixit rules do); run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnaudit.source import analyze
from bnaudit.source.fixer import fix_loop
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


FIXES = [(rule.code, i, pair) for rule in Rule.registry for i, pair in enumerate(rule.fixes)]


@pytest.mark.parametrize("code,index,pair", FIXES, ids=lambda v: str(v)[:12])
def test_fix_example(code, index, pair, tmp_path):
    """The rule reports the first code; --fix --unsafe-fixes (or, for a suggestion, --diff) makes the
    second of it, which the rule no longer reports."""
    before, after = map(normalize, pair)
    path = tmp_path / "example.py"
    path.write_text(before, encoding="utf-8")
    run = fix_loop(lambda overrides: analyze([path], overrides=overrides).findings,
                   lambda shown: Path(shown).read_bytes(), unsafe=True)
    assert code in {f.code for f in analyze([path]).findings}
    fixed = run.changed()
    if fixed:
        assert [f.code for f in run.fixed] and {f.code for f in run.fixed} == {code}
        (text,) = fixed.values()
    else:
        suggestions = [new for finding, _, new in run.suggestions if finding.code == code]
        assert len(suggestions) == 1, "neither a fix nor a suggestion"
        text = suggestions[0]
    assert text.decode() == after
    path.write_text(after, encoding="utf-8")
    assert code not in {f.code for f in analyze([path]).findings}


def test_every_fix_of_a_rule_has_an_example():
    """A rule that attaches fixes shows one (its source mentions ``Fix(``)."""
    import inspect

    for rule in Rule.registry:
        if "Fix(" in inspect.getsource(inspect.getmodule(rule)) and "autofix=" in inspect.getsource(rule):
            assert rule.fixes, f"{rule.code} attaches fixes but has no fixes examples"
