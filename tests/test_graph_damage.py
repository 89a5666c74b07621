"""Damaged and hostile artifacts: each says what is wrong, exits 2, and is never read as a clean model."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

pytest.register_assert_rewrite("graph_fixtures")
from graph_fixtures import run_cli  # noqa: E402

pytest_plugins = ["graph_fixtures"]


def _report(path):
    code, out, err = run_cli("graph", "--format", "json-report", str(path))
    return code, json.loads(out) if out.strip() else None, err


def _replace_dataset(h5, name, **create):
    parent, _, leaf = name.rpartition("/")
    del h5[name]
    h5[parent or "/"].create_dataset(leaf, **create)


def _moving_mean_dataset(h5) -> str:
    found = []
    h5.visititems(lambda name, obj: found.append(name) if name.endswith("moving_mean:0") else None)
    return sorted(found)[0]


@pytest.mark.parametrize("value, what", [
    (np.zeros(13, np.float32), "has shape [13] where the layer's other vectors have [8]"),
    (np.zeros(8, np.int32), "holds int32 values, not floating point"),
    (np.float32(0.0), "is a scalar"),
    (np.zeros(0, np.float32), "is empty"),
])
def test_a_moving_mean_no_batch_norm_can_have_is_damage(artifact_path, tmp_path, value, what):
    import h5py

    target = tmp_path / "damaged.h5"
    shutil.copy(artifact_path("h5-renamed-scopes"), target)
    with h5py.File(target, "r+") as h5:
        name = _moving_mean_dataset(h5)
        _replace_dataset(h5, name, data=value)
    code, report, err = _report(target)
    assert code == 2, err
    (artifact,) = report["artifacts"]
    assert any(what in damage and "moving_mean" in damage for damage in artifact["damage"]), artifact["damage"]
    assert f"damaged: layer 'batch_normalization': moving_mean {what}" in err or what in err, err
    assert report["summary"]["damaged"] == 1
    (layer,) = [layer for layer in artifact["layers"] if layer["layer"] == "batch_normalization"]
    assert "moving_mean" not in layer["values"]  # never judged: a damaged value is no evidence


def test_a_dataset_declaring_a_billion_elements_is_never_materialized(artifact_path, tmp_path):
    """A chunked dataset never written: 10**9 elements of its fill value in a file of a few KB."""
    import h5py

    target = tmp_path / "bomb.h5"
    shutil.copy(artifact_path("h5-renamed-scopes"), target)
    with h5py.File(target, "r+") as h5:
        _replace_dataset(h5, _moving_mean_dataset(h5), shape=(10 ** 9,), dtype="f4", chunks=(1024,))
    assert target.stat().st_size < 10 ** 7
    code, report, err = _report(target)
    assert code == 2
    (artifact,) = report["artifacts"]
    assert any("1,000,000,000 elements" in damage for damage in artifact["damage"]), artifact["damage"]


def test_a_frozen_constant_declaring_a_billion_elements_is_never_decoded(artifact_path, tmp_path):
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(artifact_path("frozen-pb").read_bytes())
    (node,) = [n for n in graph.node if n.name == "conv_bn/moving_variance"]
    tensor = node.attr["value"].tensor
    tensor.ClearField("tensor_content")
    tensor.float_val[:] = [1.0]
    tensor.tensor_shape.dim[0].size = 10 ** 9
    target = tmp_path / "bomb.pb"
    target.write_bytes(graph.SerializeToString())
    code, report, err = _report(target)
    assert code == 2
    (artifact,) = report["artifacts"]
    assert artifact["damage"] == ["layer 'conv_bn': moving_variance declares 1,000,000,000 elements, too many for "
                                  "a batch-norm vector; not read"]


def test_a_flipped_bit_in_a_keras_archive_fails_its_crc(artifact_path, tmp_path):
    """One bit in model.weights.h5 could turn a variance of 7 into 112: the archive's CRC says so first."""
    target = tmp_path / "flipped.keras"
    shutil.copy(artifact_path("keras"), target)
    with zipfile.ZipFile(target) as archive:
        member = archive.getinfo("model.weights.h5")
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data = bytearray(target.read_bytes())
    middle = start + min(member.compress_size, member.file_size) // 2
    data[middle] ^= 0x04
    target.write_bytes(bytes(data))
    code, out, err = run_cli("graph", str(target))
    assert code == 2 and out == ""
    assert err.strip() == f"bnaudit: error: {target}: model.weights.h5 in the archive fails its CRC check: " \
                          "the file is damaged", err


def test_a_weights_member_that_inflates_a_thousandfold_is_refused(tmp_path):
    target = tmp_path / "bomb.keras"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": []}}))
        archive.writestr("model.weights.h5", b"\0" * (128 * 1024 * 1024))
    assert target.stat().st_size < 1024 * 1024
    code, out, err = run_cli("graph", str(target))
    assert code == 2 and "would inflate to 134,217,728 bytes" in err and "zip bomb" in err, err


def test_a_fifo_or_device_is_refused_without_reading(tmp_path):
    """Opening a FIFO blocks for ever, /dev/zero never ends: neither is ever opened."""
    import os

    fifo = tmp_path / "model.pb"
    os.mkfifo(fifo)
    device = tmp_path / "model.h5"
    device.symlink_to("/dev/zero")
    code, out, err = run_cli("graph", str(fifo), str(device))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"bnaudit: error: {path}: not a regular file (a FIFO, socket or device is never read)" for path in (fifo, device)]


@pytest.mark.parametrize("config, why", [
    ("null", "holds no model config"),
    ('{"class_name": "Functional", "config": {"layers": [', "does not parse"),
    ('{"class_name": "Functional", "config": {"layers": []}}', "names no batch-norm layer"),
])
def test_an_unusable_h5_config_falls_back_to_the_weights(artifact_path, tmp_path, config, why):
    """The NaN must not vanish with the config: the weights alone still show the layer."""
    import h5py

    target = tmp_path / "config.h5"
    shutil.copy(artifact_path("injected-nan-h5"), target)
    with h5py.File(target, "r+") as h5:
        h5.attrs["model_config"] = config
    code, report, err = _report(target)
    (artifact,) = report["artifacts"]
    assert code == 1 and [(f["code"], f["layer"]) for f in artifact["findings"]] == [("BN012", "conv_bn")], artifact
    assert any(why in note and "read from the weights alone" in note for note in artifact["notes"]), artifact["notes"]


def test_a_checkpoint_file_that_does_not_parse_is_one_line_of_ours(artifact_path, tmp_path):
    """TensorFlow's reader logs `WARNING:tensorflow:ParseError` lines of its own; bnaudit parses it itself."""
    target = tmp_path / "ckpt"
    shutil.copytree(artifact_path("bn001-unrun-update-ops"), target)
    (target / "checkpoint").write_text("garbage {{{\n", encoding="utf-8")
    code, out, err = run_cli("graph", str(target))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "WARNING" not in err, err
    assert "`checkpoint` file naming the latest checkpoint; checkpoint does not parse" in err


def test_a_tf2_savedmodel_without_its_variables_is_damaged_not_clean(artifact_path, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(artifact_path("keras-export"), target)
    shutil.rmtree(target / "variables")
    code, report, err = _report(target)
    assert code == 2
    (artifact,) = report["artifacts"]
    assert "variables/ holds no checkpoint" in artifact["damage"][0], artifact


def test_the_two_copies_a_keras_export_saves_must_agree(artifact_path, tmp_path):
    """model.export() saves each variable as variables/N and _all_variables/M: the served copy is read,
    and a copy that differs from it (written with valid checksums) is damage."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    target = tmp_path / "export"
    shutil.copytree(artifact_path("keras-export"), target)
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((target / "saved_model.pb").read_bytes())
    objects = model.meta_graphs[0].object_graph_def
    paths = {}
    for child in objects.nodes[0].children:
        for item in objects.nodes[child.node_id].children:
            paths.setdefault(item.node_id, f"{child.local_name}/{item.local_name}")
    copies = [paths[i] for i, node in enumerate(objects.nodes)
              if node.WhichOneof("kind") == "variable" and node.variable.name == "conv_bn/moving_variance"]
    assert len(copies) == 2, copies
    prefix = str(target / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    tensors = {name: reader.get_tensor(name) for name in names}
    served, other = [f"{path}/.ATTRIBUTES/VARIABLE_VALUE" for path in copies]
    tensors[other] = tensors[other] * 2.0
    for stale in (target / "variables").iterdir():
        stale.unlink()
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    code, report, err = _report(target)
    assert code == 2, err
    (artifact,) = report["artifacts"]
    (damage,) = artifact["damage"]
    assert "layer 'conv_bn': the two saved copies of its moving_variance differ" in damage, damage


def test_a_reader_stuck_in_c_code_is_killed_after_its_budget(monkeypatch):
    """HDF5 spins for ever in its own C code on some damaged heaps (a fuzzed .h5 did), holding the
    interpreter.  The reader runs in a child process: here a regular expression that backtracks for
    ages inside the C regex engine stands in for it."""
    import re
    import time

    from bnaudit.graph.isolation import isolated
    from bnaudit.graph.model import ArtifactError

    monkeypatch.setenv("BNAUDIT_READ_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(ArtifactError, match=r"did not finish in 1 s \(BNAUDIT_READ_TIMEOUT\)"):
        isolated("model.h5", re.match, r"(a*)*b", "a" * 64)
    assert time.monotonic() - start < 20
    assert isolated("model.h5", sorted, [3, 1, 2]) == [1, 2, 3]  # a reader that returns, returns
    with pytest.raises(ArtifactError, match="bad file"):
        isolated("model.h5", _refuse)


def _refuse():
    from bnaudit.graph.model import ArtifactError

    raise ArtifactError("model.h5", "bad file")
