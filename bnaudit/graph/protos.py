"""Reading one protobuf file (binary or text) into a message, with one clear error for any failure."""

from __future__ import annotations

import os

from bnaudit.graph.model import ArtifactError


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
