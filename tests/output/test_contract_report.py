"""The report and the pictures of a contract besides causality: every violation names its
contract (and the document pair, the distance, the samples), each contract has its verdict, the
text says what was declared (for a window, the model-level bound next to the measured and the
proved reach), and the dependency map shades the region each clause forbids."""

import contracts as T
import numpy as np
import pytest

import properties
from properties.output import pictures
from properties.output.report import explain, failure_summary, render_text, to_dict

FLOATS = {"grid": (12,), "layout": "BTC", "features": 2, "predicts": "next", "max_examples": 10}
DOCUMENTS = {"documents": [4, 3, 5], "documents_as": "position_ids"}


@pytest.fixture(scope="module")
def leaky_documents():
    return properties.audit_model(T.attention_ignoring_documents(), **FLOATS, **DOCUMENTS)


def test_the_json_names_the_contract_and_the_document_pair(leaky_documents):
    data = to_dict(leaky_documents, "leaky")
    assert data["contract"]["documents"] == {
        "count": 3, "lengths": [4, 3, 5], "passed_as": {"position_ids": "position_ids"}
    }
    assert data["contracts"]["documents"]["passed"] is False
    assert data["contracts"]["causality"] == {"passed": True, "violations": 0}
    assert data["passed"] is False and data["causal"] is True
    leak = next(v for v in data["violations"] if v["kind"] == "document")
    assert leak["contract"] == "documents" and leak["documents"][0] < leak["documents"][1]
    assert data["certificate"]["contracts"] == {"causality": True, "documents": False}
    assert data["modules"] is None


def test_the_text_leads_with_the_broken_contract(leaky_documents):
    text = render_text(leaky_documents, "leaky")
    assert text.splitlines()[1].startswith("FAIL: breaks the documents contract")
    assert "documents contract: FAIL" in text and "passed as position_ids" in text
    summary = failure_summary(leaky_documents)
    first = summary.splitlines()[0]
    assert "it sees document 0" in first and "from document 1" in first
    assert "Contracts broken: documents" in summary


def test_the_window_line_puts_the_bounds_side_by_side():
    r = properties.audit_model(T.sliding_window_made_full(), **FLOATS, window=T.WINDOW)
    line = next(x for x in render_text(r, "full").splitlines() if "window contract:" in x)
    assert "declared window 4; model-level bound 4 positions; measured reach 12" in line
    assert "proved reach at most 12" in line
    v = next(v for v in r.violations if v.kind == "window")
    assert "beyond its window of 4 [window contract]" in explain(r.subject, v)
    data = to_dict(r, "full")
    leak = next(x for x in data["violations"] if x["kind"] == "window")
    assert leak["back"] >= 4 and leak["window"] == 4


def test_batch_and_padding_violations_name_the_samples():
    r = properties.audit_model(T.capacity_router(), grid=(10,), layout="BTC", features=2,
                               predicts="next", batch_independent=True, max_examples=10,
                               checks=("causality",))
    v = next(v for v in to_dict(r, "router")["violations"] if v["kind"] == "sample")
    assert v["contract"] == "batch" and v["samples"] == [0, 1]
    sample = next(v for v in r.violations if v.kind == "sample")
    assert "of sample 1" in explain(r.subject, sample) and "[batch contract]" in explain(
        r.subject, sample
    )


def test_the_dependency_map_shades_each_clause_and_leaves_the_allowed_region(leaky_documents):
    matrix = pictures.dependency_matrix(leaky_documents)
    assert matrix.other_document is not None and matrix.beyond_window is None
    assert matrix.other_document[4, :4].all() and not matrix.other_document[4, 4:].any()
    allowed = ~matrix.forbidden & ~matrix.present
    assert allowed[5].tolist() == [False] * 4 + [True] + [False] * 7  # its document's past
    codes = pictures.categories(leaky_documents, 5)
    assert (codes[:4] == pictures.LEAK).all()  # seen, and another document's
    assert codes[5] == pictures.SEEN and codes[6] == pictures.FUTURE


def test_the_pictures_draw(leaky_documents, tmp_path):
    pytest.importorskip("matplotlib")
    paths = pictures.draw(leaky_documents, tmp_path, target="leaky")
    assert {p.name for p in paths} == {"leaky-dependencies.png", "leaky-certificate.png"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert np.asarray(pictures.COLORS[pictures.OTHER_DOCUMENT]) is not None
