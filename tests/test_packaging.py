"""The wheel PyPI would get: metadata twine accepts, an SPDX license with its file, the rule documents."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_passes_twine_check_and_carries_what_it_needs(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("bnaudit-*.whl")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "PASSED" in check.stdout, check.stdout + check.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_string(
            archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode("utf-8"))
    assert metadata["License-Expression"] == "Apache-2.0"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "Programming Language :: Python :: 3.13" in metadata.get_all("Classifier")
    documents = {Path(name).name for name in names if name.startswith("bnaudit/rules/") and name.endswith(".md")}
    assert documents == {path.name for path in (ROOT / "bnaudit" / "rules").glob("BN*.md")}
    core = [value for value in metadata.get_all("Requires-Dist") if "extra ==" not in value]
    assert not any(name in " ".join(core).lower() for name in ("tensorflow", "keras", "numpy"))


def test_a_copy_of_the_source_tree_runs_without_being_installed(tmp_path):
    """`PYTHONPATH=checkout python -m bnaudit` (the fuzz campaign, a snapshot of a commit) finds the
    rule documents in the copy, not through whatever install the interpreter has."""
    shutil.copytree(ROOT / "bnaudit", tmp_path / "bnaudit", ignore=shutil.ignore_patterns("__pycache__"))
    document = tmp_path / "bnaudit" / "rules" / "BN001-unrun-update-ops.md"
    document.write_text(document.read_text(encoding="utf-8") + "\nONLY IN THE COPY\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "bnaudit", "explain", "BN001"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ONLY IN THE COPY" in run.stdout
