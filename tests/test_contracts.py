"""The contract (properties/contracts.py): its clauses, the pairs it forbids, its probes, and the
ways documents and windows are declared. No model runs here."""

import pytest
import torch

from properties import make_subject
from properties.contracts import (
    KIND_OF_CODE,
    Contract,
    Documents,
    Padding,
    Window,
    window_modules,
)
from properties.errors import AdapterError
from properties.verdict import ContractName, Kind


def subject(n=12, **contracts):
    return make_subject(torch.nn.Identity(), grid=(n,), layout="BTC", **contracts)


def kinds(contract: Contract, output: int) -> list:
    return [KIND_OF_CODE[c] for c in contract.codes(torch.tensor([output]))[0].tolist()]


def test_causality_alone_forbids_the_future_and_the_present():
    c = subject(5, predicts="current").contract
    assert c.names == [ContractName.CAUSALITY] and c.only_causal
    assert kinds(c, 2) == [None, None, Kind.PRESENT, Kind.FUTURE, Kind.FUTURE]
    assert c.forbids(Kind.PRESENT)
    assert not subject(5, predicts="next").contract.forbids(Kind.PRESENT)


def test_documents_forbid_earlier_documents_and_the_future_stays_future():
    c = subject(7, documents=[3, 4]).contract
    # output 4 (document 1): document 0 is another document, later inputs are the future
    assert kinds(c, 4) == [Kind.DOCUMENT] * 3 + [None, Kind.PRESENT, Kind.FUTURE, Kind.FUTURE]
    assert kinds(c, 1) == [None, Kind.PRESENT] + [Kind.FUTURE] * 5
    assert c.families() == ["causality", "documents"] and not c.only_causal


def test_a_window_forbids_what_lies_width_or_more_back():
    c = subject(8, window=3).contract
    assert kinds(c, 6)[:5] == [Kind.WINDOW] * 4 + [None]
    assert kinds(c, 6)[5:] == [None, Kind.PRESENT, Kind.FUTURE]


def test_the_three_ways_to_give_documents_agree():
    lengths = Documents.from_lengths([2, 3, 1]).ids
    assert torch.equal(Documents.from_position_ids([0, 1, 0, 1, 2, 0]).ids, lengths)
    assert torch.equal(Documents.from_cu_seqlens([0, 2, 5, 6]).ids, lengths)
    assert torch.equal(Documents.parse("position_ids:0,1,0,1,2,0").ids, lengths)
    assert torch.equal(Documents.parse("2,3,1").ids, lengths)
    checked = Documents.from_lengths([2, 3, 1]).checked(6, torch.arange(6))
    assert checked.position_ids(2).tolist() == [[0, 1, 0, 1, 2, 0]] * 2
    assert checked.cu_seqlens().tolist() == [0, 2, 5, 6]


@pytest.mark.parametrize(
    "documents, problem",
    [
        ([2, 3], "the documents cover 5 positions, the grid has 6"),
        (torch.tensor([0, 1, 0, 1, 1, 1]), "a document is split"),
        ("cu_seqlens:0,3,3,6", "cu_seqlens must start at 0 and increase strictly"),
        ("tokens:1,2", "unknown form 'tokens'"),
        ([0, 6], "document lengths must be positive"),
    ],
)
def test_bad_documents_are_one_line_errors(documents, problem):
    with pytest.raises(AdapterError, match=problem):
        subject(6, documents=documents)


def test_documents_are_passed_as_the_keyword_their_name_says():
    d = subject(6, documents=[2, 4], documents_as=["position_ids", "cu_seq_lens_q", "seq=ids"])
    passed = d.contract.keywords(2)
    assert passed["position_ids"].tolist() == [[0, 1, 0, 1, 2, 3]] * 2
    assert passed["cu_seq_lens_q"].tolist() == [0, 2, 6]
    assert passed["seq"].tolist() == [[0, 0, 1, 1, 1, 1]] * 2
    with pytest.raises(AdapterError, match="cannot pass documents as"):
        subject(6, documents=[2, 4], documents_as="seq=tokens")
    with pytest.raises(AdapterError, match="none are declared"):
        subject(6, documents_as="position_ids")


def test_each_probe_replaces_only_inputs_forbidden_to_what_it_watches():
    c = subject(12, documents=[4, 3, 5], window=3, window_exact=True).contract
    for family in c.families():
        for index in c.indices(family):
            probe = c.probe(family, index)
            for kind, watched in probe.watch:
                for t in watched.nonzero().flatten().tolist():
                    codes = c.codes(torch.tensor([t]))[0]
                    replaced = codes[probe.replace]
                    assert (replaced != 0).all(), (family, index, t)
                    # and charged to the probe's own clause, not an earlier one
                    if kind not in (Kind.FUTURE, Kind.PRESENT):
                        assert (replaced == KIND_OF_CODE.index(kind)).all()
            if probe.reach is not None:  # the far end of the window is allowed, and replaced
                for t in probe.reach.nonzero().flatten().tolist():
                    assert int(c.far_ends(torch.tensor([t]))[0]) in probe.replace.nonzero()


def test_the_causal_probe_is_the_old_cut():
    c = subject(6).contract
    probe = c.probe("causality", 2)
    assert probe.replace.tolist() == [False, False, True, True, True, True]
    assert probe.region == "positions of rank >= 2" and probe.nearest == 2
    assert [k for k, _ in probe.watch] == [Kind.FUTURE, Kind.PRESENT]


def test_loss_keeps_what_each_prediction_may_see():
    c = subject(7, documents=[3, 4]).contract
    (keep, targets), (keep2, targets2) = c.loss_keeps(3)
    assert targets == [("current", 3)] and not keep.any()  # the first of document 1
    assert targets2 == [("next", 2)] and keep2.tolist() == [True] * 3 + [False] * 4
    plain = subject(7).contract.loss_keeps(3)
    assert len(plain) == 1 and plain[0][1] == [("current", 3), ("next", 2)]


def test_window_modules_and_the_bound_they_compose():
    assert window_modules("layers.*.attn", 4) == (("layers.*.attn", 4),)
    assert window_modules(["a=2", "b=global"]) == (("a", 2), ("b", None))
    with pytest.raises(AdapterError, match="no width"):
        window_modules("a")
    w = Window(4, modules=(("l*", 4),), matched=(("l0", 4), ("l1", 4)))
    assert w.model_width == 7
    assert Window(4, modules=(("l*", 4),), matched=(("l0", 4), ("l1", None))).model_width is None
    with pytest.raises(AdapterError, match="positive"):
        Window(0)


def test_a_module_pattern_that_matches_nothing_names_candidates():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1))
    with pytest.raises(AdapterError, match="matches no module"):
        make_subject(model, grid=(4,), layout="BTC", window=2, window_modules="attn.*")


def test_padding_is_for_sequences_and_not_with_documents():
    with pytest.raises(AdapterError, match="1D"):
        make_subject(torch.nn.Identity(), grid=(2, 2), layout="BCHW", padding="left")
    with pytest.raises(AdapterError, match="cannot be checked together"):
        subject(4, documents=[2, 2], padding="left")
    with pytest.raises(AdapterError, match="unknown padding side"):
        Padding("middle")
    assert Padding("both").sides == ("left", "right")
    assert Padding().mask([2, 0], 4, "left").tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert Padding().mask([1], 4, "right").tolist() == [[1, 1, 1, 0]]


def test_every_kind_names_its_contract():
    assert Kind.FUTURE.contract == ContractName.CAUSALITY
    assert Kind.DOCUMENT.contract == ContractName.DOCUMENTS
    assert Kind.SHRUNK.contract == Kind.WINDOW.contract == ContractName.WINDOW
    assert Kind.SAMPLE.contract == ContractName.BATCH
    assert Kind.PADDING.contract == ContractName.PADDING


def test_the_contract_in_json():
    c = subject(6, documents=[2, 4], documents_as="position_ids", window=2,
                batch_independent=True).contract
    assert c.to_json() == {
        "causality": {"predicts": "auto"},
        "documents": {"count": 2, "lengths": [2, 4], "passed_as": {"position_ids": "position_ids"}},
        "window": {"width": 2, "exact": False, "model_bound": 2},
        "batch": {},
    }
