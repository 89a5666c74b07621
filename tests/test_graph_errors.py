"""Unusable inputs: one clear line on stderr naming the path, exit 2, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

pytest.register_assert_rewrite("graph_fixtures")  # also loaded as a plugin: rewrite it before importing
from graph_fixtures import run_cli

pytest_plugins = ["graph_fixtures"]  # one session of trained artifacts for every module


def _assert_clean_error(code: int, out: str, err: str, path, *fragments: str) -> None:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bnaudit: error: {path}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err + out


def _copy_checkpoint(artifact_path, tmp_path, artifact_id="tf1-checkpoint-dir"):
    target = tmp_path / "ckpt"
    shutil.copytree(artifact_path(artifact_id), target)
    return target, target / "model.ckpt-300"


def test_missing_path(tmp_path):
    path = tmp_path / "nope"
    _assert_clean_error(*run_cli("graph", str(path)), path, "no such file or directory", "expected")


def test_empty_directory(tmp_path):
    _assert_clean_error(*run_cli("graph", str(tmp_path)), tmp_path, "no saved_model.pb", "`checkpoint` file")


def test_unknown_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _assert_clean_error(*run_cli("graph", str(path)), path, "match none of them")


@pytest.mark.parametrize("name, what", [
    ("model.tflite", "TensorFlow Lite"), ("model.onnx", "ONNX"), ("models-1.0-py3-none-any.whl", "wheel"),
])
def test_formats_bnaudit_does_not_read_are_named(tmp_path, name, what):
    path = tmp_path / name
    if name.endswith(".whl"):
        with zipfile.ZipFile(path, "w") as wheel:   # a real wheel layout, with a model inside
            wheel.writestr("models/weights.h5", b"")
            wheel.writestr("models-1.0.dist-info/METADATA", "Name: models\n")
    else:
        path.write_bytes(b"\x1c\x00\x00\x00TFL3" if name.endswith(".tflite") else b"\x08\x07\x12\x07pytorch")
    _assert_clean_error(*run_cli("graph", str(path)), path, "not a supported artifact", what)


def test_truncated_checkpoint_data(artifact_path, tmp_path):
    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    data = next(directory.glob("*.data-*"))
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    _assert_clean_error(*run_cli("graph", str(directory)), prefix, "truncated", data.name)


def test_corrupted_checkpoint_index(artifact_path, tmp_path):
    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    index = prefix.with_name(prefix.name + ".index")
    raw = bytearray(index.read_bytes())
    for offset in range(8, min(len(raw) - 48, 200), 7):
        raw[offset] ^= 0xFF
    index.write_bytes(bytes(raw))
    _assert_clean_error(*run_cli("graph", str(prefix)), prefix, "corrupted")


def test_flipped_bytes_in_a_batch_norm_tensor(artifact_path, tmp_path):
    """The reader verifies each tensor's CRC as it reads it."""
    from bnaudit.graph.bundle import parse_index

    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    _, entries = parse_index(str(prefix) + ".index")
    entry = entries["conv_bn/moving_variance"]
    data = next(directory.glob("*.data-*"))
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 1] ^= 0x5A
    data.write_bytes(bytes(raw))
    _assert_clean_error(*run_cli("graph", str(prefix)), prefix, "conv_bn/moving_variance", "cannot be read")


def test_missing_data_shard(artifact_path, tmp_path):
    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    next(directory.glob("*.data-*")).unlink()
    _assert_clean_error(*run_cli("graph", str(prefix)), prefix, "missing")


def test_corrupted_meta_graph(artifact_path, tmp_path):
    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    meta = prefix.with_name(prefix.name + ".meta")
    meta.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + os.urandom(64))
    _assert_clean_error(*run_cli("graph", str(meta)), meta, "MetaGraph")


def test_hdf5_that_is_not_keras(tmp_path):
    import h5py
    import numpy as np

    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle["measurements"] = np.arange(10.0)
    _assert_clean_error(*run_cli("graph", str(path)), path, "expected a Keras HDF5 file")


def test_h5_that_is_not_hdf5(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"not an hdf5 file at all" * 10)
    _assert_clean_error(*run_cli("graph", str(path)), path, "HDF5")


def test_keras_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"\x00" * 100)
    _assert_clean_error(*run_cli("graph", str(path)), path, "zip")


def test_keras_archive_without_config(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
    _assert_clean_error(*run_cli("graph", str(path)), path, "config.json")


def test_truncated_keras_archive(artifact_path, tmp_path):
    path = tmp_path / "model.keras"
    raw = artifact_path("keras").read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _assert_clean_error(*run_cli("graph", str(path)), path)


def test_garbage_graph_def(tmp_path):
    path = tmp_path / "frozen.pb"
    path.write_bytes(os.urandom(256))
    _assert_clean_error(*run_cli("graph", str(path)), path, "GraphDef")


def test_garbage_saved_model(tmp_path):
    directory = tmp_path / "sm"
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"\xff" * 64)
    _assert_clean_error(*run_cli("graph", str(directory)), directory, "SavedModel")


def test_checkpoint_file_naming_nothing(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-7"\n')
    _assert_clean_error(*run_cli("graph", str(tmp_path)), tmp_path, "model.ckpt-7", ".index")


def test_one_bad_path_among_good_ones_still_exits_2(artifact_path, tmp_path):
    code, out, err = run_cli("graph", str(artifact_path("keras")), str(tmp_path / "missing.keras"))
    assert code == 2
    assert "conv_bn" in out  # the good artifact is still reported
    assert err.count("bnaudit: error:") == 1


def test_errors_from_a_real_process_are_one_line_each(artifact_path, tmp_path):
    """A fresh process: TensorFlow's start-up logging must not bury the error lines."""
    empty = tmp_path / "empty"
    empty.mkdir()
    directory, prefix = _copy_checkpoint(artifact_path, tmp_path)
    data = next(directory.glob("*.data-*"))
    os.truncate(data, 10)
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "graph", str(empty), str(directory)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"bnaudit: error: {empty}: ")
    assert lines[1].startswith(f"bnaudit: error: {prefix}: ") and "truncated" in lines[1]


def _unreadable(path) -> None:
    os.chmod(path, 0)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file permissions do not stop root from reading")
def test_unreadable_file(artifact_path, tmp_path):
    path = tmp_path / "model.keras"
    shutil.copy(artifact_path("keras"), path)
    _unreadable(path)
    _assert_clean_error(*run_cli("graph", str(path)), path, "permission denied")


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to drop privileges in a fork")
def test_unreadable_files_when_privileges_are_dropped(artifact_path, tmp_path):
    """As root, permission errors are real only for another user: fork, drop to nobody, audit."""
    import h5py  # noqa: F401 -- everything the child needs is imported before it loses /root
    import tensorflow  # noqa: F401

    import bnaudit.cli  # noqa: F401
    import bnaudit.graph.checks  # noqa: F401
    import bnaudit.graph.command  # noqa: F401
    import bnaudit.graph.detect  # noqa: F401
    from bnaudit.graph import graphdef, keras_file, savedmodel  # noqa: F401

    import tempfile
    from pathlib import Path

    # pytest's tmp_path sits under a 0700 directory of root's: nobody could not even see it.
    shared = Path(tempfile.mkdtemp(prefix="bnaudit-perm-"))
    try:
        os.chmod(shared, 0o755)
        keras_copy = shared / "model.keras"
        shutil.copy(artifact_path("keras"), keras_copy)
        directory, prefix = _copy_checkpoint(artifact_path, shared)
        os.chmod(directory, 0o755)
        for path in (keras_copy, prefix.with_name(prefix.name + ".index")):
            _unreadable(path)
        hidden = tmp_path / "model.keras"  # unreachable: a parent directory is closed to nobody
        shutil.copy(artifact_path("keras"), hidden)
        results = []
        for target in (keras_copy, prefix, hidden):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                try:
                    os.close(read_fd)
                    os.setgid(65534)
                    os.setuid(65534)
                    code, out, err = run_cli("graph", str(target))
                    os.write(write_fd, f"{code}\n{err}".encode())
                except BaseException:
                    import traceback

                    os.write(write_fd, f"-1\n{traceback.format_exc()}".encode())
                finally:
                    os._exit(0)
            os.close(write_fd)
            with os.fdopen(read_fd) as pipe:
                payload = pipe.read()
            os.waitpid(pid, 0)
            results.append((target, payload))
        for target, payload in results:
            code, _, err = payload.partition("\n")
            _assert_clean_error(int(code), "", err, target, "permission denied")
    finally:
        shutil.rmtree(shared, ignore_errors=True)
