"""The catalogue's API knowledge against the real APIs of the pinned versions.

Every ``signatures.Signature`` and every batch-norm API with a ``reference`` names an importable
object; its parameters, in positional order, must begin with the ones the table lists.  The real
signatures are read in a fresh process with TF_USE_LEGACY_KERAS=1 (tf.compat.v1.layers needs tf_keras).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bnaudit import catalogue, signatures

READ = textwrap.dedent("""
    import importlib, inspect, json, sys
    def resolve(dotted):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for name in parts[cut:]:
                obj = getattr(obj, name)
            return obj
        raise ImportError(dotted)
    def positional(obj):
        target = obj.__init__ if inspect.isclass(obj) else obj
        params = list(inspect.signature(target).parameters.values())
        return [p.name for p in params if p.name != "self"
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out = {}
    for dotted in json.loads(sys.argv[1]):
        try:
            obj = resolve(dotted)
            out[dotted] = {"params": positional(obj),
                           "call": positional(obj.call) if inspect.isclass(obj) and hasattr(obj, "call") else None}
        except Exception as exc:
            out[dotted] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
""")

REFERENCES = sorted({s.reference for s in signatures.SIGNATURES} | {a.reference for a in catalogue.APIS if a.reference})


@pytest.fixture(scope="module")
def real() -> dict:
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", READ, json.dumps(REFERENCES)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(real: dict, reference: str, params: tuple[str, ...], what: str = "params") -> None:
    found = real[reference]
    assert "error" not in found, f"{reference} is not importable: {found.get('error')}"
    actual = found[what]
    assert actual is not None, f"{reference} has no {what}"
    assert tuple(actual[:len(params)]) == params, f"{reference}: the catalogue says {params}, the API {actual}"


@pytest.mark.parametrize("signature", signatures.SIGNATURES, ids=lambda s: s.reference)
def test_signature_matches_the_api(signature, real):
    _check(real, signature.reference, signature.params)


@pytest.mark.parametrize("api", [a for a in catalogue.APIS if a.reference], ids=lambda a: a.key)
def test_batch_norm_api_matches_its_reference(api, real):
    _check(real, api.reference, api.params)
    if api.call_params:
        _check(real, api.reference, api.call_params, "call")
    # The arguments rules read are parameters of the API (the flag of a layer is its call's).
    for name in (api.decay, api.epsilon, api.reuse, None if api.training_at_call else api.training):
        assert name is None or name in api.params, f"{api.key}: {name!r} is not one of its parameters"
    if api.training_at_call:
        assert api.training in api.call_params, api.key


def test_every_api_that_can_be_checked_is():
    """An API without a reference is one the pinned versions do not ship (contrib, tf_slim, tensorpack)
    or whose TF 0.x parameter names the catalogue keeps on purpose (batch_norm_with_global_normalization)."""
    unchecked = {api.key for api in catalogue.APIS if not api.reference}
    assert unchecked <= {"contrib.batch_norm", "tensorpack.BatchNorm", "tf.nn.batch_norm_with_global_normalization"}


def test_keras_ops_epsilon_is_read_from_its_own_position(tmp_path):
    """keras.ops.batch_normalization(x, mean, variance, axis, offset, scale, epsilon): its epsilon
    is the seventh argument, not tf.nn's sixth."""
    from bnaudit.source import analyze

    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent("""\
        import keras
        x = keras.Input((4,))
        mean = keras.ops.mean(x, axis=0)
        variance = keras.ops.var(x, axis=0)
        y = keras.ops.batch_normalization(x, mean, variance, -1, None, None, 0.0)
    """), encoding="utf-8")
    found = analyze([path]).findings
    assert [(f.code, f.line) for f in found] == [("BN005", 5)], found
    assert "epsilon=0.0" in found[0].message
