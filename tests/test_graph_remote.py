"""Artifacts behind a URL, read through tf.io.gfile: TensorFlow's in-memory ram:// filesystem needs no network."""

from __future__ import annotations

import os

import pytest

pytest.register_assert_rewrite("graph_fixtures")
from graph_fixtures import ARTIFACTS, codes_of, graph_json, run_cli  # noqa: E402

pytest_plugins = ["graph_fixtures"]


def _put(source, target: str) -> None:
    import tensorflow as tf

    if os.path.isdir(source):
        tf.io.gfile.makedirs(target)
        for name in os.listdir(source):
            _put(os.path.join(source, name), f"{target}/{name}")
    else:
        tf.io.gfile.copy(str(source), target, overwrite=True)


@pytest.mark.parametrize("artifact_id, inside", [
    ("bn001-unrun-update-ops", ""),                      # a checkpoint directory
    ("bn001-unrun-update-ops", "model.ckpt-300"),        # its prefix: every file of the checkpoint
    ("bn001-unrun-update-ops", "model.ckpt-300.meta"),   # one of its files
    ("injected-nan-keras", ""),
    ("injected-negative-export", ""),                    # a SavedModel directory
    ("injected-stale-frozen-v2", ""),
    ("keras", ""),
])
def test_an_artifact_in_ram_reads_like_the_local_one(artifact_id, inside, artifact_path):
    local = artifact_path(artifact_id)
    url = f"ram://bnaudit-tests/{artifact_id}/{local.name}"
    _put(local, url)
    target = f"{url}/{inside}" if inside else url
    source = local / inside if inside else local
    code, findings, err = graph_json(target)
    local_code, local_findings, _ = graph_json(source)
    assert code == local_code and "error" not in err, err
    assert codes_of(findings) == ARTIFACTS[artifact_id][2]
    assert [(f["code"], f["layer"], f["message"]) for f in findings] == \
        [(f["code"], f["layer"], f["message"]) for f in local_findings]
    assert all(f["path"].startswith("ram://bnaudit-tests/") for f in findings), findings


def test_a_missing_url_and_an_unknown_scheme_are_one_line_each(tmp_path):
    code, out, err = run_cli("graph", "ram://bnaudit-tests/nothing/here.h5", "s3://bucket/model.h5",
                             "nosuch://x/model.keras")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert lines[0] == "bnaudit: error: ram://bnaudit-tests/nothing/here.h5: no such file or directory"
    assert "s3:// scheme is not supported" in lines[1] and "tensorflow-io" in lines[1]
    assert "nosuch:// scheme is not supported" in lines[2]
    assert "Traceback" not in err
