"""Artifacts behind a URL (``gs://``, ``s3://``, ``hdfs://``, ``ram://``), read through ``tf.io.gfile``.

The readers work on local files (HDF5 and zip need them), so an artifact behind a
URL is copied once into a temporary directory with TensorFlow's own filesystems,
audited there, and reported under its URL.  Which schemes work is TensorFlow's
answer: ``gs://`` is built in, ``s3://`` and ``hdfs://`` need ``tensorflow-io``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator

from bnaudit.graph.model import ArtifactError
from bnaudit.graph.protos import short, tf_module

_URL = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
# A checkpoint is several files sharing a prefix; naming any one of them means all of them.
_CHECKPOINT_PART = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")


def scheme(path: str) -> str | None:
    match = _URL.match(path)
    return match.group("scheme").lower() if match else None


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _copy_file(gfile, source: str, target: str) -> None:
    with gfile.GFile(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _copy_tree(gfile, source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for name in gfile.listdir(source):
        name = name.rstrip("/")
        child = _join(source, name)
        if gfile.isdir(child):
            _copy_tree(gfile, child, os.path.join(target, name))
        else:
            _copy_file(gfile, child, os.path.join(target, name))


def _unsupported(url: str, exc: Exception) -> ArtifactError:
    name = scheme(url)
    hint = " (s3:// and hdfs:// need `pip install tensorflow-io`)" if name in ("s3", "hdfs") else ""
    return ArtifactError(url, f"the {name}:// scheme is not supported by this TensorFlow{hint}: {short(exc)}")


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[tuple[str, str, str]]:
    """(local path, local root, the URL that root stands for): a copy of a directory, a file, or a
    checkpoint's files."""
    tf = tf_module("tensorflow")

    gfile = tf.io.gfile
    workdir = tempfile.mkdtemp(prefix="bnaudit-remote-")
    try:
        url = url.rstrip("/")
        parent, _, name = url.rpartition("/")
        stem = _CHECKPOINT_PART.sub("", name)
        try:
            siblings = gfile.listdir(parent) if parent and gfile.isdir(parent) else []
            parts = [entry for entry in siblings if entry.startswith(stem + ".")] \
                if stem + ".index" in siblings else []
            is_dir = not parts and gfile.isdir(url)
            exists = is_dir or bool(parts) or gfile.exists(url)
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as exc:
            raise _unsupported(url, exc) from None
        except tf.errors.OpError as exc:
            raise ArtifactError(url, f"cannot be read through tf.io.gfile ({short(exc)})") from None
        if not exists:
            raise ArtifactError(url, "no such file or directory")
        local = os.path.join(workdir, name or "artifact")
        root, url_root = local, url
        try:
            if parts:  # a checkpoint prefix, or one of its files: all of them
                for entry in parts:
                    _copy_file(gfile, _join(parent, entry), os.path.join(workdir, entry))
                root, url_root = workdir, parent
            elif is_dir:
                _copy_tree(gfile, url, local)
            else:
                _copy_file(gfile, url, local)
        except tf.errors.OpError as exc:
            raise ArtifactError(url, f"cannot be read through tf.io.gfile ({short(exc)})") from None
        yield local, root, url_root
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
