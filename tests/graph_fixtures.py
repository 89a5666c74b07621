"""Session fixtures for the `bnaudit graph` tests: run every training script once, in parallel.

Each script in fixtures/training trains a small model on synthetic data on the CPU and
writes its artifacts into its own directory; ARTIFACTS says what `bnaudit graph` must
report on each one.  Test modules import these names directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "fixtures" / "training"

# artifact id -> (script, path inside the script's output directory, expected codes)
ARTIFACTS = {
    # correct counterparts, every format
    "tf1-checkpoint-dir": ("tf1_correct", "ckpt", set()),
    "tf1-checkpoint-prefix": ("tf1_correct", "ckpt/model.ckpt-300", set()),
    "tf1-meta": ("tf1_correct", "ckpt/model.ckpt-300.meta", set()),
    "tf1-savedmodel": ("tf1_correct", "savedmodel", set()),
    "frozen-pb": ("tf1_correct", "frozen.pb", set()),
    "frozen-pbtxt": ("tf1_correct", "frozen.pbtxt", set()),
    "keras": ("keras_correct", "model.keras", set()),
    "h5": ("keras_correct", "model.h5", set()),
    "weights-h5": ("keras_correct", "model.weights.h5", set()),
    "keras-export": ("keras_correct", "export", set()),
    "tf2-savedmodel": ("keras_correct", "tf2_savedmodel", set()),
    "frozen-v2": ("keras_correct", "frozen_v2.pb", set()),
    "frozen-v2-export": ("keras_correct", "frozen_v2_export.pb", set()),
    "lambda-keras": ("keras_lambda_writes_file", "lambda.keras", set()),
    "keras-nested": ("keras_nested_correct", "nested.keras", set()),
    "h5-nested": ("keras_nested_correct", "nested.h5", set()),
    "weights-h5-nested": ("keras_nested_correct", "nested.weights.h5", set()),
    "keras-subclassed": ("keras_nested_correct", "subclassed.keras", set()),
    "tf2-module-savedmodel": ("tf2_module_batch_norm", "savedmodel", set()),
    "tf-keras-savedmodel": ("keras_injected_faults", "tf_keras_savedmodel", set()),
    "tf1-hand-written": ("tf1_hand_written_batch_norm", "ckpt", set()),
    "h5-renamed-scopes": ("keras2_h5_renamed_scopes", "renamed.h5", set()),
    "weights-h5-renamed-scopes": ("keras2_h5_renamed_scopes", "renamed_weights.h5", set()),
    # one per fault
    "bn001-unrun-update-ops": ("tf1_unrun_update_ops", "ckpt", {"BN001", "BN010"}),
    "bn002-cond-duplicated": ("tf1_cond_duplicated", "ckpt", {"BN002"}),
    "bn004-saver-trainable": ("tf1_saver_trainable", "ckpt", {"BN004"}),
    "bn005-negative-variance": ("tf1_negative_variance", "ckpt", {"BN005"}),
    "bn009-slow-decay": ("tf1_slow_decay", "ckpt", {"BN009"}),
    "bn010-keras-loop": ("keras_loop_no_training", "ckpt", {"BN010"}),
    "bn011-serving-training-true": ("tf2_serving_training_true", "savedmodel", {"BN011"}),
    "bn012-nonfinite": ("tf1_nonfinite", "ckpt", {"BN012"}),
    "bn010-hand-written-stale": ("tf1_hand_written_batch_norm", "stale_ckpt", {"BN010"}),
    "bn012-subclass-keras": ("keras_injected_faults", "subclass_nan.keras", {"BN012"}),
    "bn012-subclass-h5": ("keras_injected_faults", "subclass_nan.h5", {"BN012"}),
    "bn012-tf2-module-savedmodel": ("tf2_module_batch_norm", "nan_savedmodel", {"BN012"}),
}
# Each fault injected into one trained Keras model, in every Keras/TF2 format (and TF2-frozen).
INJECTED_FORMATS = {"keras": "{}.keras", "h5": "{}.h5", "weights-h5": "{}.weights.h5", "export": "{}_export",
                    "frozen-v2": "{}_frozen.pb", "frozen-v2-fused": "{}_fused_frozen.pb"}
for _fault, _code in (("nan", "BN012"), ("negative", "BN005"), ("stale", "BN010")):
    for _format, _pattern in INJECTED_FORMATS.items():
        ARTIFACTS[f"injected-{_fault}-{_format}"] = ("keras_injected_faults", _pattern.format(_fault), {_code})
# Faults a script writes into the artifact after training: no source pattern shows them.
INJECTED = {"tf1_negative_variance": {"BN005"}, "tf1_nonfinite": {"BN012"},
            "keras_injected_faults": {"BN005", "BN010", "BN012"}, "tf2_module_batch_norm": {"BN012"},
            "tf1_hand_written_batch_norm": {"BN010"}}
SCRIPTS = sorted({script for script, _, _ in ARTIFACTS.values()})


# Scripts in fixtures/scripts (the analyzer's fixtures) that train and save an artifact, with the
# artifact's path inside $BNAUDIT_FIXTURE_OUT: `bnaudit check` and `bnaudit graph` must agree on them.
COUNTERPARTS = {
    "bn002_model_built_twice_without_reuse": "",
    "bn004_checkpoint_trainable_variables": "",
    "bn011_serving_signature_training_true": "export",
    "clean_sess_run_train_op_and_update_ops": "",
}
SOURCE_FIXTURES = ROOT / "fixtures" / "scripts"
RULES = ROOT / "bnaudit" / "rules"
# The training code in the graph-only rule documents, run as written (the save path moved to a
# temporary directory): what `bnaudit graph` must report on what each block saves.
DOC_EXAMPLES = {
    ("BN010-stale-moving-stats", "bad-graph"): {"BN010"},
    ("BN010-stale-moving-stats", "good-graph"): set(),
    ("BN012-nonfinite-bn-params", "bad-graph"): {"BN012"},
    ("BN012-nonfinite-bn-params", "good-graph"): set(),
}


def doc_block(document: str, tag: str) -> str:
    text = (RULES / f"{document}.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"^```python {re.escape(tag)}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"{document}.md needs exactly one ```python {tag} block"
    return blocks[0]


def doc_job_name(document: str, tag: str) -> str:
    return f"doc-{document.split('-', 1)[0]}-{tag}"


def _env(**extra) -> dict[str, str]:
    # One thread per process: two TensorFlow processes on two cores otherwise fight over them.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0",
               OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", **extra)
    env.pop("BNAUDIT_LAMBDA_MARKER", None)
    return env


def _run(name: str, argv: list[str], env: dict[str, str]) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=600)
    return name, proc.returncode, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="session")
def session_artifacts(tmp_path_factory) -> dict[str, Path]:
    """Every training script and every counterpart script run once, two at a time: name -> output dir."""
    base = tmp_path_factory.mktemp("trained")
    jobs = {script: ([str(TRAINING / f"{script}.py"), str(base / script)], _env()) for script in SCRIPTS}
    for script in COUNTERPARTS:
        path = SOURCE_FIXTURES / f"{script}.py"
        if path.exists():
            out = base / "counterparts" / script
            out.mkdir(parents=True)
            jobs[script] = ([str(path)], _env(BNAUDIT_FIXTURE_OUT=str(out), BNAUDIT_FIXTURE_STEPS="300",
                                              TF_USE_LEGACY_KERAS="1"))
    for (document, tag) in DOC_EXAMPLES:
        name = doc_job_name(document, tag)
        out = base / "docs" / name
        out.mkdir(parents=True)
        script = base / "docs" / f"{name}.py"
        script.write_text(re.sub(r'"/tmp/[\w-]+/', lambda m: f'"{out}/', doc_block(document, tag)), encoding="utf-8")
        jobs[name] = ([str(script)], _env(BNAUDIT_FIXTURE_OUT=str(out)))
    # Keras/TF2 scripts take longest: start them first so that the two workers finish together.
    order = sorted(jobs, key=lambda name: (not name.startswith(("keras", "tf2", "bn011", "bn004", "doc-BN010")), name))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda name: _run(name, *jobs[name]), order))
    failures = [f"{name} exited {code}:\n{log}" for name, code, log in results if code != 0]
    if failures:
        pytest.fail("training scripts failed:\n" + "\n\n".join(failures))
    return {name: Path(argv[1]) if name in SCRIPTS else Path(env["BNAUDIT_FIXTURE_OUT"])
            for name, (argv, env) in jobs.items()}


@pytest.fixture(scope="session")
def trained(session_artifacts) -> dict[str, Path]:
    """Training script name -> its output directory."""
    return {script: session_artifacts[script] for script in SCRIPTS}


@pytest.fixture(scope="session")
def counterpart_path(session_artifacts):
    def path(script: str) -> Path:
        if script not in session_artifacts:
            pytest.skip(f"fixtures/scripts/{script}.py is gone")
        return session_artifacts[script] / COUNTERPARTS[script]
    return path


@pytest.fixture(scope="session")
def artifact_path(trained):
    def path(artifact_id: str) -> Path:
        script, relative, _ = ARTIFACTS[artifact_id]
        return trained[script] / relative
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    """`bnaudit ARGS` in this process (TensorFlow imported once): (exit code, stdout, stderr)."""
    from bnaudit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def graph_json(*paths) -> tuple[int, list[dict], str]:
    code, out, err = run_cli("graph", "--format", "json", *map(str, paths))
    return code, (json.loads(out) if out.strip() else []), err


def codes_of(findings: list[dict]) -> set[str]:
    return {finding["code"] for finding in findings}
