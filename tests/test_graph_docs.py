"""The graph-only rule documents (BN010, BN012) tell the truth: their training code, run, leaves an
artifact on which `bnaudit graph` reports exactly the document's code (bad) or nothing (good)."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("graph_fixtures")  # also loaded as a plugin: rewrite it before importing
from graph_fixtures import DOC_EXAMPLES, codes_of, doc_job_name, graph_json  # noqa: E402

pytest_plugins = ["graph_fixtures"]  # one session of trained artifacts for every module


@pytest.mark.parametrize("document, tag", sorted(DOC_EXAMPLES), ids=lambda v: str(v))
def test_document_example_leaves_what_it_says(document, tag, session_artifacts):
    out = session_artifacts[doc_job_name(document, tag)]
    code, findings, err = graph_json(out)
    assert codes_of(findings) == DOC_EXAMPLES[(document, tag)], findings
    assert code in (0, 1), err
