"""A TF checkpoint (tensor bundle): its index parsed here, its values read by TensorFlow.

TensorFlow's reader opens data shards lazily, so a truncated ``.data`` file goes
unnoticed until the one tensor it cut off is read -- and an audit reads only the
batch-norm tensors.  Parsing the ``.index`` table ourselves (a LevelDB-style
table of ``BundleEntryProto``, every block checksummed) gives every tensor's
shard, offset and size without reading any data, so truncation is caught for the
whole checkpoint at the cost of one ``stat`` per shard.  Values still come from
``py_checkpoint_reader``, which verifies each tensor's CRC as it reads it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from bnaudit.graph.model import ArtifactError
from bnaudit.graph.protos import tf_module

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if offset < 0 or end + 5 > len(data):
        raise ValueError("block handle points outside the file")
    contents = data[offset:end]
    kind = data[end]
    (masked,) = struct.unpack_from("<I", data, end + 1)
    if crc32c(contents + bytes([kind])) != _unmask(masked):
        raise ValueError("block checksum mismatch")
    if kind != 0:
        raise NotImplementedError("compressed index block")
    return contents


def _entries(block: bytes):
    if len(block) < 4:
        raise ValueError("short block")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise ValueError("bad restart array")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise ValueError("bad block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def parse_index(index_path: str) -> tuple[int | None, dict[str, Entry]]:
    """(number of shards, entries) of a bundle index; raises ValueError on a damaged table.

    Raises NotImplementedError for layouts this parser does not handle
    (compressed blocks), in which case the caller falls back to TensorFlow's listing.
    """
    tensor_bundle_pb2 = tf_module("tensorflow.core.protobuf.tensor_bundle_pb2")

    with open(index_path, "rb") as handle:
        data = handle.read()
    if len(data) < _FOOTER_LEN:
        raise ValueError("index file too short")
    footer = data[-_FOOTER_LEN:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != _TABLE_MAGIC:
        raise ValueError("not a checkpoint index (bad magic number)")
    pos = 0
    _meta_off, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    num_shards = None
    entries: dict[str, Entry] = {}
    for _, handle_bytes in _entries(_block(data, index_off, index_size)):
        block_off, p = _varint(handle_bytes, 0)
        block_size, _ = _varint(handle_bytes, p)
        for key, value in _entries(_block(data, block_off, block_size)):
            if key == b"":
                header = tensor_bundle_pb2.BundleHeaderProto()
                header.ParseFromString(value)
                num_shards = header.num_shards
                continue
            proto = tensor_bundle_pb2.BundleEntryProto()
            proto.ParseFromString(value)
            name = key.decode("utf-8", "replace")
            entries[name] = Entry(
                name, proto.dtype, tuple(d.size for d in proto.shape.dim),
                proto.shard_id, proto.offset, proto.size,
            )
    return num_shards, entries


class Bundle:
    """One checkpoint prefix: verified listing, and values read one tensor at a time."""

    def __init__(self, prefix: str, display_path: str | None = None):
        self.prefix = prefix
        self.path = display_path or prefix
        index = prefix + ".index"
        if not os.path.exists(index):
            raise ArtifactError(self.path, f"expected a TF checkpoint: {index} does not exist")
        if not os.access(index, os.R_OK):
            raise ArtifactError(self.path, f"cannot read {index} (permission denied)")
        self._reader = None
        self.shapes: dict[str, tuple[int, ...]] = {}
        try:
            num_shards, entries = parse_index(index)
        except NotImplementedError:
            num_shards, entries = None, None
        except (ValueError, OSError, Exception) as exc:  # protobuf DecodeError, struct.error
            raise ArtifactError(self.path, f"expected a TF checkpoint index, but {index} is corrupted ({exc})")
        if entries is not None:
            self._verify_shards(num_shards, entries)
            self.shapes = {name: e.shape for name, e in entries.items()}
        else:
            self.shapes = {name: tuple(shape) for name, shape in self.reader.get_variable_to_shape_map().items()}

    def _verify_shards(self, num_shards: int | None, entries: dict[str, Entry]) -> None:
        if not num_shards:
            raise ArtifactError(self.path, "expected a TF checkpoint index with a bundle header; none found")
        needed: dict[int, int] = {}
        for entry in entries.values():
            if entry.size:
                needed[entry.shard] = max(needed.get(entry.shard, 0), entry.offset + entry.size)
        for shard, end in sorted(needed.items()):
            data = f"{self.prefix}.data-{shard:05d}-of-{num_shards:05d}"
            try:
                size = os.stat(data).st_size
            except FileNotFoundError:
                raise ArtifactError(self.path, f"expected checkpoint data file {data}; it is missing") from None
            except OSError as exc:
                raise ArtifactError(self.path, f"cannot stat {data} ({exc.strerror})") from None
            if not os.access(data, os.R_OK):
                raise ArtifactError(self.path, f"cannot read {data} (permission denied)")
            if size < end:
                raise ArtifactError(
                    self.path, f"checkpoint data file {os.path.basename(data)} is truncated "
                               f"({size} bytes, the index needs {end})")

    @property
    def reader(self):
        if self._reader is None:
            py_checkpoint_reader = tf_module("tensorflow.python.training.py_checkpoint_reader")

            try:
                self._reader = py_checkpoint_reader.NewCheckpointReader(self.prefix)
            except Exception as exc:  # tf.errors.OpError and friends
                raise ArtifactError(self.path, f"expected a readable TF checkpoint ({_first_line(exc)})") from None
        return self._reader

    def read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.reader.get_tensor(name))
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(self.path, f"checkpoint tensor {name!r} cannot be read: {_first_line(exc)}") from None

    def saved(self, name: str) -> np.ndarray | None:
        """A variable's saved value, or None when the checkpoint holds no tensor of that name."""
        return self.read(name) if name in self.shapes else None

    def read_scalar(self, name: str) -> int | None:
        value = self.read(name)
        if value.size != 1:
            return None
        try:
            return int(value.reshape(()))
        except (TypeError, ValueError):
            return None

    def object_graph(self):
        """The TF2 object graph (``TrackableObjectGraph``), or None for a name-based TF1 checkpoint."""
        if _OBJECT_GRAPH_KEY not in self.shapes:
            return None
        trackable_object_graph_pb2 = tf_module("tensorflow.core.protobuf.trackable_object_graph_pb2")

        try:
            # Not through numpy: a bytes scalar array would drop the proto's trailing NUL bytes.
            raw = self.reader.get_tensor(_OBJECT_GRAPH_KEY)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(self.path, f"the checkpoint's object graph cannot be read: {_first_line(exc)}") from None
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            graph.ParseFromString(raw if isinstance(raw, bytes) else bytes(np.asarray(raw, dtype=object).item()))
        except Exception as exc:
            raise ArtifactError(self.path, f"the checkpoint's object graph is corrupted ({exc})") from None
        return graph


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
