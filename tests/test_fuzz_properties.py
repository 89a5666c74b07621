"""Property tests: generated programs, mutated fixtures and corrupted artifacts never break bnaudit.

Bounded and derandomized (the same examples on every run), so they cost seconds in the suite; the
long campaign is ``benchmarks/fuzz.py``.  ``check`` must end every file with findings or a BN000,
never an exception or an internal error; ``graph`` must end every artifact with a report or one
``ArtifactError``, never another exception.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import hypothesmith
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnaudit.faults import FAULTS
from bnaudit.source import analyze

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures" / "scripts").glob("*.py"))
# Keeps a generated program past the prefilter, so that it is parsed and analyzed.
PREFIX = "import tensorflow as tf\nh = tf.compat.v1.layers.batch_normalization(x, training=True)\n"
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def check_source(data: bytes, name: str = "fuzzed.py"):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(data)
        result = analyze([path], cache_dir=None, jobs=1)
    assert not result.internal_errors, result.internal_errors
    assert result.files_checked == 1, result.errors
    assert {finding.code for finding in result.findings} <= set(FAULTS)
    return result


@SETTINGS
@given(hypothesmith.from_grammar())
def test_generated_programs(source):
    check_source((PREFIX + source).encode("utf-8", "surrogatepass"))


MUTATIONS = {
    "nested": lambda depth: "z = " + "(" * depth + "1" + ")" * depth + "\n",
    "listed": lambda depth: "z = " + "[" * depth + "]" * depth + "\n",
    "attributes": lambda depth: "z = a" + ".b" * (depth * 10) + "\n",
    "subscripts": lambda depth: "z = a" + "[0]" * (depth * 5) + "\n",
    "additions": lambda depth: "z = " + "+".join(["1"] * (depth * 40 + 1)) + "\n",
    "powers": lambda depth: "z = " + "**".join(["9"] * (depth % 6 + 2)) + "\n",
    "literal": lambda depth: ["z = '\\N{NOT A NAME}'\n", "z = '\\x4'\n", "z = b'\\xe9'\n".replace("\\xe9", "é"),
                              "z = 1e999999\n", "z = 0x" + "f" * 5000 + "\n", "z = range(10 ** 20)\n"][depth % 6],
}


@SETTINGS
@given(st.sampled_from(FIXTURES), st.sampled_from(sorted(MUTATIONS)), st.integers(0, 400), st.floats(0, 1))
def test_mutated_fixtures(fixture, mutation, depth, where):
    lines = fixture.read_text(encoding="utf-8").splitlines(keepends=True)
    at = int(where * len(lines))
    lines.insert(at, MUTATIONS[mutation](depth))
    check_source("".join(lines).encode("utf-8"), fixture.name)


@SETTINGS
@given(st.sampled_from(FIXTURES), st.sampled_from(["bom", "crlf", "latin-1", "nul", "truncate", "cr"]),
       st.floats(0, 1))
def test_re_encoded_and_cut_fixtures(fixture, change, where):
    data = fixture.read_bytes()
    cut = int(where * len(data))
    if change == "bom":
        data = b"\xef\xbb\xbf" + data
    elif change == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif change == "cr":
        data = data.replace(b"\n", b"\r")
    elif change == "latin-1":
        data = b"# -*- coding: latin-1 -*-\n" + data.decode("utf-8").encode("latin-1", "replace") + b"# \xe9\n"
    elif change == "nul":
        data = data[:cut] + b"\0" + data[cut:]
    else:
        data = data[:cut]
    check_source(data, fixture.name)


# -- artifacts -------------------------------------------------------------------------------

# The campaign's small trained model, in every format, and which file of each to corrupt.
sys.path.insert(0, str(ROOT / "benchmarks"))
from fuzz import ARTIFACT_MEMBERS, WRITE_ARTIFACTS  # noqa: E402


@pytest.fixture(scope="module")
def small_artifacts(tmp_path_factory):
    from bnaudit.graph.protos import import_tensorflow_quietly

    import_tensorflow_quietly()  # before hypothesis runs: importing TensorFlow raises the recursion limit
    out = tmp_path_factory.mktemp("small-artifacts")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", WRITE_ARTIFACTS, str(out)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def audit_or_refuse(path: Path) -> None:
    from bnaudit.graph.command import audit
    from bnaudit.graph.model import ArtifactError

    try:
        audit(str(path))
    except ArtifactError as exc:
        assert exc.message and "\n" not in exc.message.strip(), exc.message


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(ARTIFACT_MEMBERS)), st.sampled_from(["flip", "truncate", "zero"]), st.floats(0, 1),
       st.integers(1, 8))
def test_corrupted_artifacts(small_artifacts, tmp_path_factory, member, how, where, count):
    import shutil

    copy = tmp_path_factory.mktemp("corrupted")
    shutil.copytree(small_artifacts, copy, dirs_exist_ok=True)
    target = copy / member
    data = bytearray(target.read_bytes())
    at = int(where * (len(data) - 1))
    if how == "flip":
        for offset in range(count):
            data[(at + offset * 977) % len(data)] ^= 1 << (offset % 8)
    elif how == "truncate":
        data = data[:at]
    else:
        data[at:at + count * 64] = bytes(len(data[at:at + count * 64]))
    target.write_bytes(bytes(data))
    audit_or_refuse(copy / ARTIFACT_MEMBERS[member])
