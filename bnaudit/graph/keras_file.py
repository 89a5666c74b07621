"""Keras files: ``.keras`` archives, legacy ``.h5`` models and ``.weights.h5``, read as data.

A ``.keras`` file is a zip of ``config.json`` and an HDF5 weights file; a legacy
``.h5`` carries its config as a JSON attribute.  Both configs are only
``json.loads``-ed and walked for batch-norm layer entries: nothing is
deserialized, so a Lambda layer's marshalled bytecode stays an opaque string
and no custom object is ever imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import zipfile
import zlib

import numpy as np

from bnaudit.graph.model import (BETA, GAMMA, MEAN, MOVING, VARIANCE, Artifact, ArtifactError, BNLayer, bounded,
                                 split_role)

BN_CLASSES = {"BatchNormalization", "SyncBatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2"}
OWN_CLASS = "bnaudit>BatchNorm"
_BN_KEY = re.compile(r"^(sync_)?batch_norm(alization)?(_v[12])?(_\d+)?$")
_MAX_CONFIG = 64 * 1024 * 1024
MAX_INFLATED = 8 * 1024 ** 3  # bytes a compressed weights member may inflate to
# Trained weights compress a few times at most; a large member inflating 100-fold is a bomb.
BOMB_SIZE, BOMB_RATIO = 64 * 1024 ** 2, 100
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# Keys only a batch norm's get_config() writes: a subclass (``@register_keras_serializable class
# MyBN(BatchNormalization)``) keeps them whatever it is called.
_BN_CONFIG_KEYS = ("moving_mean_initializer", "moving_variance_initializer")


def is_batch_norm_config(entry: dict) -> bool:
    class_name = str(entry.get("class_name", ""))
    registered = str(entry.get("registered_name") or "")
    module = str(entry.get("module") or "")
    if class_name in BN_CLASSES or OWN_CLASS in (class_name, registered):
        return True
    config = entry.get("config")
    if isinstance(config, dict) and all(key in config for key in _BN_CONFIG_KEYS):
        return True
    return module.startswith("bnaudit") and "BatchNorm" in class_name


def walk_config(node, parents: tuple[str, ...] = ()):
    """Yield ``(path, entry)`` for every batch-norm layer entry in a (possibly nested) model config."""
    if isinstance(node, dict):
        config = node.get("config")
        if "class_name" in node and isinstance(config, dict):
            name = config.get("name") if isinstance(config.get("name"), str) else None
            if is_batch_norm_config(node):
                yield parents + ((name or "?"),), node
                return
            parents = parents + ((name,) if name else ())
            for value in config.values():
                yield from walk_config(value, parents)
            return
        for value in node.values():
            yield from walk_config(value, parents)
    elif isinstance(node, list):
        for value in node:
            yield from walk_config(value, parents)


def _initializer_value(spec, default: float) -> float | None:
    if spec is None:
        return default
    if isinstance(spec, str):
        name, config = spec, {}
    elif isinstance(spec, dict):
        name, config = str(spec.get("class_name", "")), spec.get("config") or {}
    else:
        return None
    name = name.lower()
    if name in ("zeros", "zero"):
        return 0.0
    if name in ("ones", "one"):
        return 1.0
    if name in ("constant",) and isinstance(config.get("value"), (int, float)):
        return float(config["value"])
    return None


def layer_from_config(path: tuple[str, ...], entry: dict) -> BNLayer:
    config = entry.get("config", {})
    is_own = OWN_CLASS in (entry.get("class_name"), entry.get("registered_name")) or \
        str(entry.get("module") or "").startswith("bnaudit")
    layer = BNLayer("/".join(path), class_name=str(entry.get("registered_name") or entry.get("class_name")))
    scale, center = config.get("scale", True), config.get("center", True)
    layer.declared = {MEAN, VARIANCE} | ({GAMMA} if scale else set()) | ({BETA} if center else set())
    for role, key, default in ((GAMMA, "gamma_initializer", 1.0), (BETA, "beta_initializer", 0.0),
                               (MEAN, "moving_mean_initializer", 0.0), (VARIANCE, "moving_variance_initializer", 1.0)):
        layer.initial[role] = _initializer_value(config.get(key), default)
    momentum = config.get("momentum", config.get("decay", 0.99))
    if isinstance(momentum, (int, float)):
        layer.decay, layer.decay_source = float(momentum), "config momentum"
    layer.bias_corrected = is_own
    return layer


def _order(layer: BNLayer | None) -> list[str]:
    """Keras 3 saves a layer's trainable variables, then its non-trainable ones, in creation order."""
    if layer is None:
        return [GAMMA, BETA, MEAN, VARIANCE]
    return [role for role in (GAMMA, BETA) if role in layer.declared] + [MEAN, VARIANCE]


# -- HDF5 ------------------------------------------------------------------------------------


class _Slice(io.RawIOBase):
    """A read-only window on an uncompressed zip member, so h5py reads it in place."""

    def __init__(self, handle, start: int, size: int):
        self._handle, self._start, self._size, self._pos = handle, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer):
        count = max(0, min(len(buffer), self._size - self._pos))
        self._handle.seek(self._start + self._pos)
        data = self._handle.read(count)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _open_h5(source, display: str, what: str):
    import h5py

    try:
        return h5py.File(source, "r")
    except PermissionError:
        raise ArtifactError(display, f"cannot read {what} (permission denied)") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(display, f"expected {what} in HDF5 format; it cannot be opened "
                                     f"({str(exc).splitlines()[0][:200]})") from None


def _read(dataset):
    """A dataset's value; never materialized when too large to be a batch-norm vector (a chunked
    dataset that was never written can claim 10**9 elements of its fill value in a few bytes)."""
    return bounded(int(dataset.size or 0), lambda: np.asarray(dataset[()]))


def _keras3_vars(h5) -> list[tuple[str, str, list]]:
    """``(group path, layer name, [datasets in order])`` for every ``vars`` group of a Keras 3 weights file."""
    import h5py

    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars":
            datasets = [obj[key] for key in sorted((k for k in obj.keys() if k.isdigit()), key=int)]
            layer_name = obj.attrs.get("name")
            if isinstance(layer_name, bytes):
                layer_name = layer_name.decode("utf-8", "replace")
            out.append((name[: -len("/vars")] if name.endswith("/vars") else "", str(layer_name or ""), datasets))

    h5.visititems(visit)
    return out


def _keras3_step(h5) -> tuple[int | None, str | None]:
    group = h5.get("optimizer/vars")
    if group is None or "0" not in group:
        return None, None
    dataset = group["0"]
    if dataset.shape == () and dataset.dtype.kind in "iu":
        return int(dataset[()]), "optimizer iterations"
    return None, None


def _fill_keras3(artifact: Artifact, h5, config_layers: list[BNLayer] | None) -> None:
    entries = _keras3_vars(h5)
    if not config_layers:  # weights only, or a subclassed model whose config lists no layers
        for group, name, datasets in entries:
            # The group is keyed by the class (``batch_normalization_1``) in a functional model and by
            # the attribute in a subclassed one; ``vars`` records the layer's own name.
            if not (_BN_KEY.match(group.rsplit("/", 1)[-1]) or _BN_KEY.match(name)):
                continue
            # Trainable vectors (gamma, beta) come first, then moving_mean, moving_variance, then any
            # extras (renorm statistics; the scalar update count of bnaudit.layers).
            vectors = [d for d in datasets if len(d.shape) == 1]
            if len(vectors) < 2:
                continue
            if len(vectors) == 2:
                roles = [MEAN, VARIANCE]
            elif len(vectors) == 3:  # center or scale off: which one is left is not recorded
                roles, vectors = [MEAN, VARIANCE], vectors[1:]
            else:
                roles = [GAMMA, BETA, MEAN, VARIANCE]
            layer = BNLayer(name or group)
            for role, dataset in zip(roles, vectors):
                layer.keys[role] = dataset.name
                layer.values[role] = _read(dataset)
            artifact.layers.append(layer)
    else:
        unmatched = list(entries)
        for layer in config_layers:
            short = layer.name.rsplit("/", 1)[-1]
            match = next((e for e in unmatched if e[1] == short and _BN_KEY.match(e[0].rsplit("/", 1)[-1] or "")),
                         None) or next((e for e in unmatched if e[1] == short), None)
            if match is not None:
                unmatched.remove(match)
                for role, dataset in zip(_order(layer), match[2]):
                    layer.keys[role] = dataset.name
                    layer.values[role] = _read(dataset)
            artifact.layers.append(layer)
    artifact.step, artifact.step_source = _keras3_step(h5)


def _legacy_groups(group) -> dict[str, list[tuple[str, dict[str, object]]]]:
    """``{layer group: [(scope, {role: dataset}), ...]}`` from a legacy (Keras 2 style) HDF5 weights
    group: each group's batch-norm weight sets in the order of its ``weight_names``.

    Keras loads a layer's weights from the group named after the layer, in that order, whatever the
    weight names say: a model built in a graph that already held its names saves ``batch_normalization``'s
    weights as ``batch_normalization_1/gamma:0``.  The scope is kept, for nested models and for files
    without a config."""
    groups: dict[str, list[tuple[str, dict[str, object]]]] = {}
    names = group.attrs.get("layer_names")
    layer_names = [n.decode() if isinstance(n, bytes) else str(n) for n in (names if names is not None else [])]
    for layer_name in layer_names:
        layer_group = group.get(layer_name)
        if layer_group is None:
            continue
        sets = groups.setdefault(layer_name, [])
        weight_names = layer_group.attrs.get("weight_names")
        for weight in (weight_names if weight_names is not None else []):
            weight = weight.decode() if isinstance(weight, bytes) else str(weight)
            parts = split_role(weight)
            dataset = layer_group.get(weight)
            if parts is None or dataset is None:
                continue
            scope, role = parts[0] or layer_name, parts[1]
            if not sets or sets[-1][0] != scope or role in sets[-1][1]:
                sets.append((scope, {}))
            sets[-1][1][role] = dataset
    return {name: [found for found in sets if any(role in found[1] for role in MOVING)]
            for name, sets in groups.items()}


_SUFFIX = re.compile(r"_\d+$")


def _legacy_step(h5) -> tuple[int | None, str | None]:
    import h5py

    found: list[tuple[int, str]] = []
    group = h5.get("optimizer_weights")
    if group is None:
        return None, None

    def visit(name, obj):
        # Keras 2.0 uniquified the name (`iterations_1:0`) and kept the count as a float.
        last = _SUFFIX.sub("", name.rsplit("/", 1)[-1].split(":")[0])
        if isinstance(obj, h5py.Dataset) and last in ("iteration", "iterations", "iter") \
                and obj.shape in ((), (1,)) and obj.dtype.kind in "iuf":
            value = float(np.asarray(obj[()]).reshape(()))
            if np.isfinite(value) and value >= 0 and value == int(value):
                found.append((int(value), "optimizer iterations"))

    group.visititems(visit)
    return max(found) if found else (None, None)


def _fill_legacy(artifact: Artifact, h5, group, config_layers: list[BNLayer] | None) -> None:
    groups = _legacy_groups(group)
    if config_layers is None:
        for name, sets in groups.items():
            for scope, roles in sets:
                artifact.layers.append(_with_values(BNLayer(name if len(sets) == 1 else f"{name}/{scope}"), roles))
    else:
        # The config's batch-norm layers under each top-level layer (itself, or a nested model's),
        # in order, take that layer group's batch-norm weight sets in order, as Keras loads them.
        by_group: dict[str, list[BNLayer]] = {}
        for layer in config_layers:
            by_group.setdefault(layer.name.split("/", 1)[0], []).append(layer)
        scopes = {scope: roles for sets in groups.values() for scope, roles in sets}
        for name, layers in by_group.items():
            sets = groups.get(name, [])
            if len(sets) == len(layers):
                for layer, (_, roles) in zip(layers, sets):
                    _with_values(layer, roles)
            else:
                for layer in layers:
                    # Weights of a nested model's layers are named with the nested model's name in front.
                    short = layer.name.rsplit("/", 1)[-1]
                    _with_values(layer, scopes.get(layer.name) or scopes.get(short) or next(
                        (found for scope, found in scopes.items() if scope.rsplit("/", 1)[-1] == short), {}))
        artifact.layers.extend(config_layers)
    artifact.step, artifact.step_source = _legacy_step(h5)


def _with_values(layer: BNLayer, roles: dict[str, object]) -> BNLayer:
    for role, dataset in roles.items():
        layer.keys[role] = dataset.name
        layer.values[role] = _read(dataset)
    return layer


def _config_layers(config) -> list[BNLayer]:
    # Paths start with the saved model's own name; layers are named below it.
    return [layer_from_config(path[1:] if len(path) > 1 else path, entry) for path, entry in walk_config(config)]


def _usable_config(value) -> tuple[list[BNLayer], str | None]:
    """The config's batch-norm layers, or why the config cannot be used."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        config = json.loads(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return [], f"does not parse ({str(exc)[:120]})"
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        return [], f"holds no model config ({type(config).__name__ if not isinstance(config, dict) else 'no config'})"
    return _config_layers(config), None


@contextlib.contextmanager
def _damaged_hdf5(display: str, what: str):
    """h5py's errors on a damaged file (a bad B-tree, a heap offset, a missing object) as one line."""
    try:
        yield
    except ArtifactError:
        raise
    except (RuntimeError, KeyError, OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(display, f"{what} is damaged: HDF5 cannot read it ({detail})") from None


def read_h5(path: str) -> Artifact:
    """A legacy full-model ``.h5``, a legacy weights ``.h5``, or a Keras 3 ``.weights.h5``."""
    h5 = _open_h5(path, path, "a Keras .h5 file")
    with h5, _damaged_hdf5(path, "the HDF5 file"):
        if "model_config" in h5.attrs:
            artifact = Artifact(path, "Keras .h5 model", has_graph=True, has_values=True)
            weights = h5.get("model_weights", h5)
            layers, unusable = _usable_config(h5.attrs["model_config"])
            if layers or unusable is None:
                _fill_legacy(artifact, h5, weights, layers)
            if not artifact.layers and _legacy_groups(weights):
                # A config that is null, damaged, or names no batch norm the weights hold: the
                # weights alone still say which layers have moving statistics.
                artifact.has_graph = False
                artifact.layers = []
                _fill_legacy(artifact, h5, weights, None)
                artifact.notes.append(f"the model_config {unusable or 'names no batch-norm layer'}: "
                                      "batch-norm layers were read from the weights alone")
        elif "layer_names" in h5.attrs:
            artifact = Artifact(path, "Keras .h5 weights", has_values=True)
            _fill_legacy(artifact, h5, h5, None)
        elif "layers" in h5 or "vars" in h5:
            artifact = Artifact(path, "Keras 3 .weights.h5", has_values=True)
            _fill_keras3(artifact, h5, None)
        else:
            raise ArtifactError(path, "expected a Keras HDF5 file (a model_config attribute, layer_names, "
                                      "or Keras 3 layers/*/vars groups); this HDF5 file has none")
    return artifact


def read_keras(path: str) -> Artifact:
    """A Keras 3 ``.keras`` archive: ``config.json`` plus ``model.weights.h5``, read in place."""
    try:
        archive = zipfile.ZipFile(path)
    except PermissionError:
        raise ArtifactError(path, "cannot read the .keras file (permission denied)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(path, f"expected a Keras 3 .keras archive (a zip file); it cannot be opened ({exc})") from None
    with archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ArtifactError(path, "expected a Keras 3 .keras archive with config.json; it has none")
        info = archive.getinfo("config.json")
        if info.file_size > _MAX_CONFIG:
            raise ArtifactError(path, "config.json is implausibly large for a Keras config")
        try:
            config = json.loads(archive.read("config.json").decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
            raise ArtifactError(path, f"expected config.json to hold a Keras config (JSON); it does not parse ({exc})") from None
        artifact = Artifact(path, "Keras 3 .keras", has_graph=True)
        layers = _config_layers(config)
        weights_name = "model.weights.h5"
        if weights_name not in names:
            artifact.layers = layers
            artifact.notes.append("the archive holds no model.weights.h5: only the config was audited")
            return artifact
        artifact.has_values = True
        member = archive.getinfo(weights_name)
        with open(path, "rb") as raw:
            source = _member_source(archive, raw, member, path)
            h5 = _open_h5(source, path, "model.weights.h5")
            with h5, _damaged_hdf5(path, "model.weights.h5 in the archive"):
                _fill_keras3(artifact, h5, layers)
    return artifact


def _crc_of(raw, start: int, size: int) -> int:
    crc, raw_pos = 0, raw.seek(start)
    remaining = size
    while remaining > 0:
        chunk = raw.read(min(remaining, 1 << 20))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        remaining -= len(chunk)
    return crc if remaining <= 0 and raw_pos == start else -1


def _member_source(archive: zipfile.ZipFile, raw, member: zipfile.ZipInfo, display: str):
    """The weights member, read in place when stored; its CRC is checked either way (zipfile checks
    what it inflates; a member read in place is summed here), so a flipped bit is never read as a value."""
    if member.compress_type == zipfile.ZIP_STORED:
        raw.seek(member.header_offset)
        header = raw.read(30)
        if len(header) == 30 and header[:4] == b"PK\x03\x04":
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            start = member.header_offset + 30 + name_len + extra_len
            raw.seek(start)
            if raw.read(8) == _HDF5_MAGIC:
                if _crc_of(raw, start, member.file_size) != member.CRC:
                    raise ArtifactError(display, f"{member.filename} in the archive fails its CRC check: "
                                                 "the file is damaged")
                return _Slice(raw, start, member.file_size)
    if member.file_size > MAX_INFLATED or (member.file_size > BOMB_SIZE
                                           and member.file_size > BOMB_RATIO * max(member.compress_size, 1)):
        raise ArtifactError(display, f"{member.filename} would inflate to {member.file_size:,} bytes from "
                                     f"{member.compress_size:,}: not read (a zip bomb, or a damaged archive)")
    try:
        return io.BytesIO(archive.read(member.filename))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        detail = "fails its CRC check: the file is damaged" if "CRC" in str(exc) else f"cannot be read ({exc})"
        raise ArtifactError(display, f"{member.filename} in the archive {detail}") from None


def looks_like_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def looks_like_zip(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False

