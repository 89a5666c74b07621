"""The run cache never serves a stale answer: each change to what a result is computed from (a file's
text, the file list, an importer, the selection, bnaudit itself) invalidates it, and only then is the
last result replayed.  Real files, the real engine and the real CLI; no timing."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from bnaudit.source import analyze
from bnaudit.source.cache import Seal
from bnaudit.source.store import RACY_NS

MODEL = """\
import tensorflow as tf

def net(x):
    return tf.layers.batch_normalization(x, training=True)
"""
TRAIN_UNRUN = """\
import tensorflow as tf
from model import net
x = tf.placeholder(tf.float32, [None, 4])
train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(net(x)))
"""
TRAIN_CLEAN = """\
import tensorflow as tf
from model import net
x = tf.placeholder(tf.float32, [None, 4])
loss = tf.reduce_sum(net(x))
with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = tf.train.AdamOptimizer().minimize(loss)
"""


def _age(path: Path, seconds: float = 60) -> None:
    """Make a file look written a while ago, as a repository's files are (not racily clean)."""
    old = os.stat(path).st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(old, old))


def _repo(tmp_path: Path, train: str = TRAIN_UNRUN) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.py").write_text(MODEL)
    (repo / "train.py").write_text(train)
    (repo / "README.py").write_text("print('not a training script')\n")
    for path in repo.iterdir():
        _age(path)
    return repo


def _codes(result) -> list[tuple[str, int, str]]:
    return [(Path(f.path).name, f.line, f.code) for f in result.findings]


def _run(repo: Path, cache: Path, **options):
    return analyze([repo], cache_dir=cache, **options)


def test_an_unchanged_tree_replays_the_last_result(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = _run(repo, cache)
    assert not first.replayed and _codes(first) == [("train.py", 4, "BN001")]
    again = _run(repo, cache)
    assert again.replayed and again.findings == first.findings and again.parsed == 0
    assert again.source_lines == first.source_lines and again.files_checked == 3


def test_touching_a_file_without_changing_it_still_replays(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = _run(repo, cache)
    os.utime(repo / "model.py")             # a checkout or `touch`: new mtime, same bytes
    again = _run(repo, cache)
    assert again.replayed and again.findings == first.findings


def test_an_edited_file_is_read_again(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    (repo / "train.py").write_text(TRAIN_CLEAN)
    fixed = _run(repo, cache)
    assert not fixed.replayed and fixed.findings == []


def test_an_importer_changed_around_an_unchanged_model(tmp_path):
    repo, cache = _repo(tmp_path, TRAIN_CLEAN), tmp_path / "cache"
    assert _run(repo, cache).findings == []
    (repo / "train.py").write_text(TRAIN_UNRUN)   # model.py is unchanged; the program is not
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]


def test_a_deleted_or_renamed_module_is_not_served_from_the_cache(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    (repo / "model.py").rename(repo / "layers.py")  # `from model import net` no longer finds the layer
    assert _run(repo, cache).findings == []
    (repo / "layers.py").rename(repo / "model.py")
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    (repo / "model.py").unlink()
    renamed = _run(repo, cache)
    assert renamed.findings == [] and renamed.files_checked == 2


def test_a_new_file_is_seen(tmp_path):
    repo, cache = _repo(tmp_path, TRAIN_CLEAN), tmp_path / "cache"
    assert _run(repo, cache).findings == []
    (repo / "train2.py").write_text(TRAIN_UNRUN)
    assert _codes(_run(repo, cache)) == [("train2.py", 4, "BN001")]


def test_a_changed_selection_recomputes(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    ignored = _run(repo, cache, ignore={"BN001"})
    assert not ignored.replayed and ignored.findings == []
    assert _codes(_run(repo, cache, select={"BN001"})) == [("train.py", 4, "BN001")]


def test_a_suppression_comment_added_is_honoured(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    text = TRAIN_UNRUN.replace("net(x)))\n", "net(x)))  # bnaudit: ignore[BN001]\n")
    (repo / "train.py").write_text(text)
    assert _run(repo, cache).findings == []


def test_another_bnaudit_version_does_not_replay(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = _run(repo, cache)
    (record_path,) = (cache / "runs").iterdir()
    seal = Seal(cache)                        # an older bnaudit of this user seals with the same key
    record = pickle.loads(seal.open(record_path.read_bytes()))
    record.version = "an older bnaudit"
    record.result = ([], [], {})             # what that version found: nothing
    record_path.write_bytes(seal.seal(pickle.dumps(record)))
    again = _run(repo, cache)
    assert not again.replayed and again.findings == first.findings


def test_a_corrupt_run_record_is_a_miss(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = _run(repo, cache)
    for record_path in (cache / "runs").iterdir():
        record_path.write_bytes(b"\x80\x05not a pickle")
    again = _run(repo, cache)
    assert not again.replayed and again.findings == first.findings


def test_a_same_size_edit_within_one_mtime_tick_is_still_seen(tmp_path):
    # The stat of a file written just before a run is not trusted next time (git's "racily clean"),
    # so an edit that keeps its size and its mtime is read all the same.
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    script = repo / "train.py"
    script.write_text(TRAIN_UNRUN)
    before = os.stat(script)
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]
    same_size = TRAIN_UNRUN.replace(".minimize(", ".gradient(")  # no train op any more
    assert len(same_size) == len(TRAIN_UNRUN)
    script.write_text(same_size)
    os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(script)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert before.st_mtime_ns > os.stat(repo / "model.py").st_mtime_ns + RACY_NS
    assert _run(repo, cache).findings == []


def test_the_cli_replays_the_same_report(tmp_path):
    repo = _repo(tmp_path)
    env = dict(os.environ, BNAUDIT_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "bnaudit", "check", str(repo)]
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    again = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == again.returncode == 1
    assert again.stdout == first.stdout and "BN001" in first.stdout and again.stderr == ""


def test_a_new_import_changes_what_is_parsed(tmp_path):
    # The prefilter's choice is replayed only while every file's signals (its imports among them)
    # are unchanged: a script that starts importing the model is parsed from then on.
    alone = TRAIN_UNRUN.replace("from model import net\n", "").replace("net(x)", "tf.layers.dense(x, 1)")
    repo, cache = _repo(tmp_path, alone), tmp_path / "cache"
    first = _run(repo, cache)
    assert first.findings == [] and first.parsed == 1      # only model.py: train.py reaches no layer
    (repo / "train.py").write_text(TRAIN_UNRUN)
    assert _codes(_run(repo, cache)) == [("train.py", 4, "BN001")]


class _Planted:
    """What an attacker who can write the cache directory plants: unpickling it runs code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_an_entry_someone_else_wrote_is_never_unpickled(tmp_path):
    # Every facts entry and the run record replaced by a pickle that runs code, keeping the seal of
    # the entry it replaces: the seal does not verify, so nothing is loaded and the answer is right.
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = _run(repo, cache)
    marker = tmp_path / "code-ran"
    planted = pickle.dumps(_Planted(str(marker)))
    entries = [p for p in cache.rglob("*") if p.is_file() and p.name != "key"]
    assert entries
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:32] + planted)
    again = _run(repo, cache)
    assert not marker.exists()
    assert not again.replayed and again.findings == first.findings and again.parsed == first.parsed == 2


def test_a_cache_directory_others_can_write_is_not_used(tmp_path):
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    first = _run(repo, cache)
    again = _run(repo, cache)
    assert not again.replayed and again.parsed == first.parsed == 2 and again.findings == first.findings
    assert not any(p.is_file() for p in cache.rglob("*"))
