"""A contract besides causality read on either form of summary: the run form (beyond 2048
positions) concludes as the dense form does, proofs and refusals alike, and the documents' ids
(the contract's constants, passed to the model as keywords) are known, never of unknown origin."""

import contracts as T
import pytest

from properties import make_subject
from properties.evidence.certificate import certify

FLOATS = {"grid": (12,), "layout": "BTC", "features": 2, "predicts": "next"}
DOCUMENTS = {"documents": [4, 3, 5], "documents_as": "position_ids"}


@pytest.mark.parametrize(
    "model, clauses, proved",
    [
        (T.packed_attention, DOCUMENTS, True),
        (T.attention_ignoring_documents, DOCUMENTS, False),  # the positive control
        (T.sliding_attention, {"window": T.WINDOW}, True),
        (T.sliding_window_made_full, {"window": T.WINDOW}, False),
        (T.sliding_window_shrunk, {"window": T.WINDOW, "window_exact": True}, False),
    ],
)
def test_both_forms_conclude_alike(model, clauses, proved):
    dense = certify(make_subject(model(), **FLOATS, **clauses), form="dense")
    runs = certify(make_subject(model(), **FLOATS, **clauses), form="runs")
    assert dense.proved is proved and not dense.unknown
    assert (runs.status, runs.mode, runs.contracts, runs.forbidden_count) == (
        dense.status, dense.mode, dense.contracts, dense.forbidden_count)
    assert [(f.output, f.input, f.kind) for f in runs.forbidden] == [
        (f.output, f.input, f.kind) for f in dense.forbidden]
    assert (runs.dense_bound() == dense.dense_bound()).all()
