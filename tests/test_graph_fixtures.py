"""`bnaudit graph` on real trained artifacts: the exact codes per artifact, and what they say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.register_assert_rewrite("graph_fixtures")  # also loaded as a plugin: rewrite it before importing
from graph_fixtures import ARTIFACTS, INJECTED_FORMATS, codes_of, graph_json, run_cli

pytest_plugins = ["graph_fixtures"]  # one session of trained artifacts for every module


@pytest.mark.parametrize("artifact_id", sorted(ARTIFACTS))
def test_exact_codes_per_artifact(artifact_id, artifact_path):
    expected = ARTIFACTS[artifact_id][2]
    code, findings, err = graph_json(artifact_path(artifact_id))
    assert codes_of(findings) == expected, findings
    assert code == (1 if expected else 0), err
    assert "error" not in err


def _one(findings, code, layer=None):
    matches = [f for f in findings if f["code"] == code and (layer is None or f["layer"] == layer)]
    assert len(matches) == 1, findings
    return matches[0]


def test_every_finding_has_the_graph_json_shape(artifact_path):
    _, findings, _ = graph_json(*(artifact_path(a) for a in ARTIFACTS))
    assert findings
    for finding in findings:
        assert set(finding) == {"code", "name", "severity", "path", "layer", "message", "fix", "details"}
        assert finding["fix"] and finding["message"] and isinstance(finding["details"], dict)


def test_bn001_names_the_layers_and_the_inferred_train_op(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn001-unrun-update-ops"))
    bn001 = [f for f in findings if f["code"] == "BN001"]
    assert {f["layer"] for f in bn001} == {"conv_bn", "fc_bn"}
    for finding in bn001:
        assert finding["details"]["train_ops"] == ["Adam"]
        assert finding["details"]["train_ops_from"] == "the train_op collection"  # minimize() fills it
    assert {f["layer"] for f in findings if f["code"] == "BN010"} == {"conv_bn", "fc_bn"}
    assert all(f["details"]["step"] == 300 for f in findings if f["code"] == "BN010")


def test_bn002_says_which_set_trained(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn002-cond-duplicated"))
    finding = _one(findings, "BN002")
    assert finding["layer"] == "batch_normalization_1"
    assert finding["details"]["trained"] == "batch_normalization"
    assert finding["details"]["states"] == {"batch_normalization": "trained", "batch_normalization_1": "untouched"}
    assert finding["details"]["cond_predicate"] == "is_training"
    assert "still at its initializer" in finding["message"]


def test_bn004_lists_what_the_saver_dropped(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn004-saver-trainable"))
    assert {f["layer"] for f in findings} == {"conv_bn", "fc_bn"}
    for finding in findings:
        assert finding["details"]["missing"] == ["moving_mean", "moving_variance"]
        assert finding["details"]["saved"] == ["beta", "gamma"]


def test_bn004_on_a_keras_file_says_how_to_save_in_keras(artifact_path, tmp_path):
    # A legacy .h5 whose batch-norm group lost its moving statistics (weights saved from a list of
    # trainable variables): the fix speaks Keras, not tf.global_variables().
    import h5py

    target = tmp_path / "dropped.h5"
    shutil.copy(artifact_path("h5-renamed-scopes"), target)
    with h5py.File(target, "r+") as h5:
        group = h5["model_weights"]["batch_normalization"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kept = [n for n in names if "moving" not in n]
        for name in names:
            if name not in kept:
                del group[name]
        group.attrs["weight_names"] = [n.encode() for n in kept]
    code, findings, _ = graph_json(target)
    (finding,) = [f for f in findings if f["code"] == "BN004"]
    assert finding["layer"] == "batch_normalization" and "model.save" in finding["fix"], finding
    assert "global_variables" not in finding["fix"]


def test_bn005_names_layer_channels_and_values(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn005-negative-variance"))
    finding = _one(findings, "BN005", "fc_bn")
    assert finding["details"]["channels"] == [1, 5]
    assert finding["details"]["values"] == [-0.25, -3.0]
    assert "1: -0.25" in finding["message"] and "5: -3.0" in finding["message"]


def test_bn009_reads_decay_from_the_graph_and_steps_from_the_checkpoint(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn009-slow-decay"))
    details = _one(findings, "BN009", "conv_bn")["details"]
    assert details["decay"] == pytest.approx(0.999)
    assert details["steps"] == 300
    assert details["decay_pow_steps"] == pytest.approx(0.999 ** 300, rel=1e-3)
    assert details["steps_needed"] == 2302


def test_bn010_in_a_tf2_object_graph_checkpoint(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn010-keras-loop"))
    assert len(findings) == 2
    for finding in findings:
        assert finding["details"]["step"] == 300
        assert set(finding["details"]["params_moved"]) == {"gamma", "beta"}


def test_bn011_names_the_signature_and_the_evidence(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn011-serving-training-true"))
    assert {f["layer"] for f in findings} == {"conv_bn", "fc_bn"}
    for finding in findings:
        assert "signature 'serving_default'" in finding["details"]["entry_points"]
        evidence = " ".join(finding["details"]["evidence"])
        assert "batch moments" in evidence and "assigns" in evidence


def test_bn012_names_roles_channels_and_values(artifact_path):
    _, findings, _ = graph_json(artifact_path("bn012-nonfinite"))
    roles = _one(findings, "BN012", "conv_bn")["details"]["roles"]
    assert roles["gamma"]["channels"] == [2] and roles["gamma"]["values"] == ["nan"]
    assert roles["moving_mean"]["channels"] == [0] and roles["moving_mean"]["values"] == ["inf"]


def test_checkpoint_without_its_meta_graph(artifact_path, tmp_path):
    """Without the graph, the values still tell: stale statistics, and gamma/beta saved alone."""
    for artifact_id, expected in (("bn001-unrun-update-ops", {"BN010"}), ("bn004-saver-trainable", {"BN004"})):
        source = artifact_path(artifact_id)
        target = tmp_path / artifact_id
        target.mkdir()
        for item in source.iterdir():
            if not item.name.endswith(".meta"):
                shutil.copy(item, target / item.name)
        _, findings, _ = graph_json(target)
        assert codes_of(findings) == expected, findings


def test_meta_graph_alone_still_shows_the_structure(artifact_path, tmp_path):
    meta = next(artifact_path("bn001-unrun-update-ops").glob("*.meta"))
    alone = tmp_path / "model.meta"
    shutil.copy(meta, alone)
    code, findings, err = graph_json(alone)
    assert codes_of(findings) == {"BN001"}, findings
    assert "only the graph was audited" in err


def _edited_meta(artifact_path, tmp_path, artifact_id, edit):
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(next(artifact_path(artifact_id).glob("*.meta")).read_bytes())
    edit(meta)
    path = tmp_path / f"{artifact_id}.meta"
    path.write_bytes(meta.SerializeToString())
    return path


def _drop_train_op_collection(meta):
    del meta.collection_def["train_op"]


@pytest.mark.parametrize("artifact_id, expected", [("bn001-unrun-update-ops", {"BN001"}),
                                                   ("tf1-checkpoint-dir", set()),
                                                   ("bn004-saver-trainable", set())])
def test_train_op_found_from_the_gradient_updates(artifact_path, tmp_path, artifact_id, expected):
    """Without a train_op collection, the train op is what runs every gradient-applying op."""
    path = _edited_meta(artifact_path, tmp_path, artifact_id, _drop_train_op_collection)
    _, findings, _ = graph_json(path)
    assert codes_of(findings) == expected, findings
    for finding in findings:
        assert finding["details"]["train_ops"] == ["Adam"]
        assert "gradient update" in finding["details"]["train_ops_from"]


def test_no_train_op_is_said_not_guessed(artifact_path, tmp_path):
    """UPDATE_OPS but no train_op collection and no gradient-applying op: a note, no BN001."""
    def edit(meta):
        _drop_train_op_collection(meta)
        for node in meta.graph_def.node:
            if "Apply" in node.op:
                node.op = "NoOp"

    path = _edited_meta(artifact_path, tmp_path, "bn001-unrun-update-ops", edit)
    code, findings, err = graph_json(path)
    assert codes_of(findings) == set()
    assert "BN001 not checked" in err and "no train op can be identified" in err
    code, out, _ = run_cli("graph", str(path))
    assert "note: BN001 not checked" in out


def test_text_report_has_a_table_per_artifact_and_fix_hints(artifact_path):
    code, out, err = run_cli("graph", str(artifact_path("bn005-negative-variance")), str(artifact_path("keras")))
    assert code == 1
    for header in ("layer", "channels", "moving mean", "moving var min / max", "gamma", "status"):
        assert header in out
    assert "fc_bn" in out and "conv_bn" in out and " ok" in out
    assert "BN005 [error] fc_bn:" in out
    assert "    fix: " in out
    assert "1 finding in 2 artifacts" in out


def test_select_and_ignore(artifact_path):
    path = str(artifact_path("bn001-unrun-update-ops"))
    code, out, _ = run_cli("graph", "--format", "json", "--select", "BN010", path)
    assert code == 1 and '"BN001"' not in out and '"BN010"' in out
    code, out, _ = run_cli("graph", "--format", "json", "--ignore", "BN001,BN010", path)
    assert code == 0 and out.strip() == "[]"


def test_lambda_layer_is_never_executed(artifact_path, tmp_path):
    """The Lambda writes a file when deserialized and called; auditing must not make it appear."""
    import os
    import subprocess
    import sys

    keras_file = artifact_path("lambda-keras")
    marker = tmp_path / "lambda-ran"
    env = dict(os.environ, BNAUDIT_LAMBDA_MARKER=str(marker))
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "graph", str(keras_file)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bn" in proc.stdout
    assert not marker.exists()
    # The fixture is live: loading the model the usual way does run the lambda.
    load = "import keras, sys; keras.models.load_model(sys.argv[1], safe_mode=False)"
    subprocess.run([sys.executable, "-c", load, str(keras_file)], capture_output=True, env=env, timeout=300)
    assert marker.exists()


@pytest.mark.parametrize("artifact_id, layers", [
    ("keras-nested", {"block/inner_bn", "own_bn", "outer_bn"}),
    ("h5-nested", {"block/inner_bn", "own_bn", "outer_bn"}),
    ("weights-h5-nested", {"inner_bn", "own_bn", "outer_bn"}),
    # Keras 2 files whose weight names carry renamed scopes (`batch_normalization_1/gamma:0` in the
    # group `batch_normalization`): read by layer group, in order, as Keras loads them.
    ("h5-renamed-scopes", {"batch_normalization", "block/inner_bn"}),
    ("weights-h5-renamed-scopes", {"batch_normalization", "block"}),
    ("keras-subclassed", {"batch_normalization"}),
    ("tf2-savedmodel", {"conv_bn", "fc_bn"}),
    ("keras-export", {"conv_bn", "fc_bn"}),
    ("frozen-pbtxt", {"conv_bn", "fc_bn"}),
    # TF2 freezing: constants named .../ReadVariableOp/resource or unknown_N; found from the ops.
    ("frozen-v2", {"functional_1/conv_bn_1", "functional_1/fc_bn_1"}),
    ("frozen-v2-export", {"functional_1/conv_bn_1", "functional_1/fc_bn_1"}),
    ("injected-nan-frozen-v2-fused", {"model/conv_bn", "model/fc_bn"}),
    # A tf.Module batch norm whose variables are `scale` and `mean_ema/average`: found from the
    # FusedBatchNormV3 in the SavedModel's function, through the resources it captured.
    ("tf2-module-savedmodel", {"norm"}),
    ("bn012-tf2-module-savedmodel", {"norm"}),
    # Hand-written TF1 batch norms (pop_mean/pop_var): by the averages the assigns accumulate, and
    # by the inference branch of a cond.
    ("tf1-hand-written", {"first", "second"}),
    ("bn010-hand-written-stale", {"first", "second"}),
    ("tf-keras-savedmodel", {"conv_bn", "fc_bn"}),
    # A registered BatchNormalization subclass: known by its config's keys, not its class name.
    ("bn012-subclass-keras", {"project_bn"}),
    ("bn012-subclass-h5", {"project_bn"}),
])
def test_every_batch_norm_layer_is_found_with_its_values(artifact_id, layers, artifact_path):
    """Nested models, bnaudit's own layer, center=False, subclassed models, TF2 exports, frozen graphs."""
    code, out, _ = run_cli("graph", "--format", "json-report", str(artifact_path(artifact_id)))
    (artifact,) = json.loads(out)["artifacts"]
    assert {layer["layer"] for layer in artifact["layers"]} == layers, artifact["layers"]
    for layer in artifact["layers"]:
        assert {"moving_mean", "moving_variance"} <= set(layer["values"]), layer
        assert layer["channels"] in (4, 8, 16), layer
    if not artifact_id.startswith(("injected", "bn0")):
        for layer in artifact["layers"]:
            assert layer["values"]["moving_variance"]["nonfinite"] == 0, layer
        assert code == 0 and artifact["findings"] == [], artifact["findings"]


@pytest.mark.parametrize("fault, code, layer, details", [
    ("nan", "BN012", "conv_bn", {"roles": {"moving_variance": {"channels": [3], "values": ["nan"], "count": 1}}}),
    ("negative", "BN005", "fc_bn", {"channels": [5], "values": [-0.5], "count": 1}),
    ("stale", "BN010", "conv_bn", {"params_moved": ["gamma", "beta"]}),
])
def test_an_injected_fault_is_found_the_same_in_every_format(fault, code, layer, details, artifact_path):
    """One trained model, one fault, six formats (two of them frozen the TF2 way): one finding each."""
    for artifact_format in INJECTED_FORMATS:
        _, findings, _ = graph_json(artifact_path(f"injected-{fault}-{artifact_format}"))
        (finding,) = findings
        assert finding["code"] == code and finding["layer"].rsplit("/", 1)[-1].startswith(layer), finding
        for key, value in details.items():
            assert finding["details"][key] == value, (artifact_format, finding)


@pytest.mark.parametrize("artifact_id, decay, source", [
    ("tf1-hand-written", 0.9, "Assign"),                           # pop = pop * 0.9 + batch * 0.1
    ("tf-keras-savedmodel", 0.99, "SavedModel metadata momentum"),  # the layer's JSON config
])
def test_decay_of_layers_without_batch_norm_names(artifact_id, decay, source, artifact_path):
    _, out, _ = run_cli("graph", "--format", "json-report", str(artifact_path(artifact_id)))
    (artifact,) = json.loads(out)["artifacts"]
    for layer in artifact["layers"]:
        assert layer["decay"] == pytest.approx(decay) and source in layer["decay_from"], layer
    assert not any("BN009 not checked" in note for note in artifact["notes"]), artifact["notes"]


def test_a_keras_2_0_step_count_uniquified_and_stored_as_a_float(artifact_path, tmp_path):
    """Keras 2.0 saved `optimizer_weights/iterations_1:0` as float32: still the step count."""
    import h5py
    import numpy as np

    target = tmp_path / "keras20.h5"
    shutil.copy(artifact_path("h5-renamed-scopes"), target)
    with h5py.File(target, "r+") as h5:
        group = h5["optimizer_weights"]
        found = []
        group.visititems(lambda name, obj: found.append(name) if name.split("/")[-1].startswith("iter") else None)
        (name,) = [n for n in found if isinstance(group[n], h5py.Dataset)]
        value = int(np.asarray(group[name][()]))
        parent = group[name].parent
        del group[name]
        parent.create_dataset("iterations_1:0", data=np.float32(value))
    _, out, _ = run_cli("graph", "--format", "json-report", str(target))
    (artifact,) = json.loads(out)["artifacts"]
    assert artifact["step"] == value and value > 0, artifact


@pytest.mark.parametrize("artifact_id", ["keras", "h5", "weights-h5"])
def test_keras_files_are_audited_without_importing_tensorflow(artifact_id, artifact_path):
    """h5py and NumPy read them: TensorFlow's start-up (seconds, half a gigabyte) is for its own formats."""
    audit = ("import sys; from bnaudit.cli import main; code = main(['graph', '--format', 'json', sys.argv[1]]); "
             "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow', file=sys.stderr); "
             "sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", audit, str(artifact_path(artifact_id))],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == []
    assert run.stderr.strip().splitlines()[-1] == "no tensorflow"
