"""The CI formats and output options of `bnaudit check` (and `graph`), checked with the tools that read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

DATA = Path(__file__).parent / "data"
BN004 = """\
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 4])
h = tf.compat.v1.layers.batch_normalization(x, training=True)
saver = tf.train.Saver(tf.trainable_variables())
"""
# A warning only: momentum 0.999 over 100 steps (BN009).
BN009 = """\
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization(momentum=0.999)])
model.compile("sgd", "mse")
model.fit(x, y, epochs=1, steps_per_epoch=100)
"""


def bnaudit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnaudit", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=dict(os.environ, **(env or {})))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(BN004, encoding="utf-8")
    (tmp_path / "slow.py").write_text(BN009, encoding="utf-8")
    return tmp_path


def test_sarif_validates_against_the_official_schema(project):
    import jsonschema

    proc = bnaudit("check", "--no-cache", "--format", "sarif", ".", cwd=project)
    assert proc.returncode == 1, proc.stderr
    log = json.loads(proc.stdout)
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == sorted(rule["id"] for rule in rules) and rules[4]["id"] == "BN004"
    assert "## Why it matters" in rules[4]["help"]["markdown"] and not rules[4]["help"]["markdown"].startswith("---")
    by_rule = {result["ruleId"]: result for result in run["results"]}
    assert set(by_rule) == {"BN004", "BN009"}
    location = by_rule["BN004"]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "src/train.py" and location["region"]["startLine"] == 4
    assert by_rule["BN004"]["level"] == "error" and by_rule["BN009"]["level"] == "warning"
    assert rules[by_rule["BN009"]["ruleIndex"]]["id"] == "BN009"
    # The fix travels as SARIF's fixes: applied by hand, its replacement is what --fix writes.
    (fix,) = by_rule["BN004"]["fixes"]
    assert fix["description"]["text"].endswith("(safe fix)") and "fixes" not in by_rule["BN009"]
    (change,) = fix["artifactChanges"]
    (replacement,) = change["replacements"]
    region, text = replacement["deletedRegion"], replacement["insertedContent"]["text"]
    lines = (project / "src" / "train.py").read_text(encoding="utf-8").splitlines(keepends=True)
    start = sum(len(line) for line in lines[:region["startLine"] - 1]) + region["startColumn"] - 1
    end = sum(len(line) for line in lines[:region["endLine"] - 1]) + region["endColumn"] - 1
    by_hand = "".join(lines)[:start] + text + "".join(lines)[end:]
    assert bnaudit("check", "--no-cache", "--fix", "src/train.py", cwd=project).returncode == 0
    assert (project / "src" / "train.py").read_text(encoding="utf-8") == by_hand


def test_github_annotations(project):
    proc = bnaudit("check", "--no-cache", "--format", "github", "src", cwd=project)
    assert proc.returncode == 1
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith("::error file=src/train.py,line=4,col=9,")
    assert ",title=BN004 saver-omits-moving-stats::" in line and "trainable variables" in line


def test_junit_and_gitlab_reports(project):
    proc = bnaudit("check", "--no-cache", "--format", "junit", ".", cwd=project)
    suites = ElementTree.fromstring(proc.stdout)
    (suite,) = suites
    assert suites.get("failures") == "2" and suite.get("tests") == "2"
    assert {case.find("failure").get("type") for case in suite} == {"BN004", "BN009"}
    clean = bnaudit("check", "--no-cache", "--format", "junit", "--select", "BN001", ".", cwd=project)
    assert clean.returncode == 0 and ElementTree.fromstring(clean.stdout)[0].get("failures") == "0"
    issues = json.loads(bnaudit("check", "--no-cache", "--format", "gitlab", ".", cwd=project).stdout)
    assert {(issue["check_name"], issue["severity"], issue["location"]["path"]) for issue in issues} == \
        {("BN004", "major", "src/train.py"), ("BN009", "minor", "slow.py")}
    assert len({issue["fingerprint"] for issue in issues}) == 2


def test_exit_codes_fail_on_and_exit_zero(project):
    assert bnaudit("check", "--no-cache", "slow.py", cwd=project).returncode == 1
    assert bnaudit("check", "--no-cache", "--fail-on", "error", "slow.py", cwd=project).returncode == 0
    assert bnaudit("check", "--no-cache", "--fail-on", "error", ".", cwd=project).returncode == 1
    proc = bnaudit("check", "--no-cache", "--exit-zero", ".", cwd=project)
    assert proc.returncode == 0 and "BN004" in proc.stdout
    assert bnaudit("check", "--no-cache", "--exit-zero", "missing.py", cwd=project).returncode == 2


def test_output_file_statistics_and_quiet(project):
    proc = bnaudit("check", "--no-cache", "--format", "json", "--output-file", "out/report.json", ".", cwd=project)
    assert proc.returncode == 2 and "cannot write the report" in proc.stderr  # out/ does not exist
    (project / "out").mkdir()
    proc = bnaudit("check", "--no-cache", "--format", "json", "-o", "out/report.json", ".", cwd=project)
    assert proc.returncode == 1 and proc.stdout == ""
    assert {f["code"] for f in json.loads((project / "out" / "report.json").read_text())} == {"BN004", "BN009"}
    proc = bnaudit("check", "--no-cache", "--statistics", ".", cwd=project)
    assert proc.stdout.splitlines() == ["1  BN004  saver-omits-moving-stats", "1  BN009  slow-moving-average"]
    quiet = bnaudit("check", "--no-cache", "-q", ".", cwd=project).stdout.splitlines()
    assert len(quiet) == 2 and all(": BN00" in line for line in quiet)


def test_colour_only_on_a_terminal_and_never_with_no_color(project):
    from support import run_on_terminal

    def on_terminal(*extra, env=None):
        code, out = run_on_terminal([sys.executable, "-m", "bnaudit", "check", "--no-cache", *extra, "src"],
                                    "stdout", cwd=project, env=dict(os.environ, TERM="xterm", **(env or {})))
        assert code == 1
        return out

    assert "\x1b[1;31mBN004 [error]\x1b[0m" in on_terminal()
    assert "\x1b[" not in on_terminal("--no-color")
    assert "\x1b[" not in on_terminal(env={"NO_COLOR": "1"})
    assert "\x1b[" not in bnaudit("check", "--no-cache", "src", cwd=project).stdout
