"""TensorFlow's protobuf modules, and reading one protobuf file into a message with one clear error.

TensorFlow is imported only for the artifacts whose formats it defines (checkpoints, MetaGraphs,
SavedModels, GraphDefs): a ``.keras`` or ``.h5`` file is read with h5py and NumPy alone, in a
fraction of the time TensorFlow takes to start.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

from bnaudit.graph.model import ArtifactError


def tf_module(name: str):
    """``tensorflow.<...>`` by name, TensorFlow first imported with its start-up chatter muted."""
    import_tensorflow_quietly()
    return importlib.import_module(name)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 muted: its C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # TensorFlow leaves millions of objects behind; without this, every garbage collection during
    # an audit rescans them all (it tripled the time of walking a ResNet-50 training graph).
    gc.freeze()


def short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def read_proto(path: str, message, *, display: str, what: str, text: bool = False, data: bytes | None = None):
    """Parse ``path`` (or ``data`` read from it) into ``message``; ``what`` names what was expected."""
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError

    name = os.path.basename(path)
    if data is None:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ArtifactError(display, f"cannot read {name} ({exc.strerror})") from None
    try:
        if text:
            text_format.Parse(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(display, f"expected {what}; {name} does not parse ({short(exc)})") from None
    return message
