"""The certificate's conclusion read against a contract besides causality: packed documents and
windows are proved where the bound keeps them (a block-diagonal mask built from the documents'
constants, a sliding window) and refused, with the pair and its kind, where it does not; batch
independence and padding are not its to prove; perturbations of the other clauses are explained
by the inputs their probes replaced."""

import contracts as T
import torch

from properties import make_subject
from properties.evidence.certificate import certify
from properties.verdict import Kind, Source, Violation

FLOATS = {"grid": (12,), "layout": "BTC", "features": 2, "predicts": "next"}
DOCUMENTS = {"documents": [4, 3, 5], "documents_as": "position_ids"}


def test_packed_documents_are_proved_block_diagonal():
    c = certify(make_subject(T.packed_attention(), **FLOATS, **DOCUMENTS))
    assert c.proved and c.mode == "inclusive"
    assert c.contracts == {"causality": True, "documents": True}
    ids = torch.tensor([0] * 4 + [1] * 3 + [2] * 5)
    assert not (c.bound & (ids[:, None] != ids[None, :])).any()


def test_a_leak_across_documents_is_not_proved_and_named():
    c = certify(make_subject(T.attention_ignoring_documents(), **FLOATS, **DOCUMENTS))
    assert c.status == "not_proved" and c.mode == "inclusive"  # still causal
    assert c.contracts == {"causality": True, "documents": False}
    first = c.forbidden[0]
    assert (first.output, first.input, first.kind) == (4, 0, "document")
    assert "output 4 may depend on input 0 (document)" in c.reason


def test_a_sliding_window_is_proved_and_a_full_one_refused():
    ok = certify(make_subject(T.sliding_attention(), **FLOATS, window=T.WINDOW))
    assert ok.proved and ok.contracts["window"] is True
    assert ok.receptive_field.max_span == T.WINDOW - 1
    full = certify(make_subject(T.sliding_window_made_full(), **FLOATS, window=T.WINDOW))
    assert not full.proved and full.forbidden[0].kind == "window"
    assert full.mode == "inclusive"  # no future leak: causality alone would prove it


def test_an_exact_window_that_shrank_is_proved_short():
    c = certify(make_subject(T.sliding_window_shrunk(), **FLOATS, window=T.WINDOW,
                             window_exact=True))
    assert not c.proved and c.contracts["window"] is False
    shrunk = [f for f in c.forbidden if f.kind == "shrunk"]
    assert (shrunk[0].output, shrunk[0].input) == (3, 0)
    assert "provably never sees input 0 (shrunk)" in c.reason
    assert certify(make_subject(T.sliding_attention(), **FLOATS, window=T.WINDOW,
                                window_exact=True)).proved


def test_batch_independence_and_padding_are_not_the_certificates():
    c = certify(make_subject(T.padded_lm(), grid=(8,), layout="BT", vocab=20, predicts="next",
                             padding="left"))
    assert c.proved and c.contracts["padding"] is None and c.not_covered == ["padding"]
    c = certify(make_subject(T.capacity_router(), grid=(8,), layout="BTC", features=2,
                             predicts="next", batch_independent=True))
    assert c.contracts["batch"] is None and c.not_covered == ["batch"]


def test_perturbations_of_other_clauses_are_explained_by_the_inputs_their_probes_replaced():
    subject = make_subject(T.attention_ignoring_documents(), **FLOATS, **DOCUMENTS)
    c = certify(subject)
    # the probe of document 1 replaced positions 0..3 and named 3: explained by the bound
    seen = Violation(4, 3, Kind.DOCUMENT, Source.SWEEP, 0.5, "")
    assert c.unexplained(subject, [seen]) == []
    # a proved model cannot have moved output 4 by replacing document 0: that is unsound
    proved = certify(make_subject(T.packed_attention(), **FLOATS, **DOCUMENTS))
    assert proved.unexplained(subject, [seen]) == [seen]
    between = Violation(4, 3, Kind.SAMPLE, Source.SWEEP, 0.5, "", samples=(0, 1))
    assert proved.unexplained(subject, [between]) == []  # not the bound's to explain
