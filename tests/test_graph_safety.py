"""`bnaudit graph` must be safe on a stranger's model: it never loads, unpickles or executes one.

A static guard over the package source (the Lambda test in test_graph_fixtures.py is the dynamic one).
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

GRAPH_PACKAGE = Path(__file__).resolve().parent.parent / "bnaudit" / "graph"
FORBIDDEN = {
    r"saved_model\s*\.\s*load\b": "tf.saved_model.load runs the model's functions",
    r"\bload_model\b": "keras.models.load_model deserializes (and calls) layers",
    r"\bdeserialize_keras_object\b|\bfrom_config\b": "Keras deserialization imports and builds objects",
    r"\bpickle\b|\bdill\b|\bcloudpickle\b|\bjoblib\b": "unpickling executes code",
    r"\bmarshal\b": "a Lambda layer's bytecode must stay an opaque string",
    r"\beval\s*\(|\bexec\s*\(": "no dynamic code",
    r"\bimport_meta_graph\b|\bimport_graph_def\b": "importing a graph into TensorFlow can load op libraries",
    r"load_op_library|load_library": "custom op libraries are native code",
    r"allow_pickle\s*=\s*True": "numpy pickles",
    r"\bnp\s*\.\s*load\b|\bnumpy\s*\.\s*load\b": "np.load can unpickle",
}


@pytest.mark.parametrize("module", sorted(GRAPH_PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_loading_or_unpickling(module):
    # Code only: docstrings, strings and comments may name what the code must not do.
    tokens = tokenize.generate_tokens(io.StringIO(module.read_text(encoding="utf-8")).readline)
    code = " ".join(tok.string for tok in tokens if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER))
    for pattern, why in FORBIDDEN.items():
        match = re.search(pattern, code)
        assert match is None, f"{module.name} uses {match.group(0)!r}: {why}"
