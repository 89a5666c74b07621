"""`pip install bnaudit` (core) must not need TensorFlow: the analyzer never imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_dependencies_exclude_tensorflow():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("tensorflow", "keras", "numpy", "h5py"):
        assert heavy not in core
    assert any(dep.startswith("tensorflow==") for dep in project["optional-dependencies"]["tf"])


def test_check_runs_with_tensorflow_unimportable(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""\
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x, is_training=True)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        """))
    # A None entry in sys.modules makes `import tensorflow` (and keras) raise ImportError.
    code = textwrap.dedent(f"""\
        import sys
        for name in ("tensorflow", "keras", "tf_keras", "numpy", "h5py"):
            sys.modules[name] = None
        from bnaudit.cli import main
        code = main(["check", "--format", "json", {str(script)!r}])
        assert not any(m.startswith(("tensorflow", "keras")) and sys.modules[m] is not None
                       for m in sys.modules), "the analyzer imported TensorFlow"
        sys.exit(code)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert '"code": "BN001"' in proc.stdout


def test_graph_without_tensorflow_says_how_to_install(tmp_path):
    code = textwrap.dedent(f"""\
        import sys
        sys.modules["tensorflow"] = None
        from bnaudit.cli import main
        sys.exit(main(["graph", {str(tmp_path)!r}]))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install 'bnaudit[tf]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_package_is_packaged():
    """A package missing from pyproject's list works in an editable install and breaks the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "bnaudit").rglob("__init__.py")}
    assert on_disk | {"bnaudit.rules"} == listed
