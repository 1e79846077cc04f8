"""The contracts besides causality, each against its positive controls (planted bugs, caught with
the right contract named and a shrunk counterexample) and the correct models (passed), from
tests/targets/contracts.py."""

import contracts as T
import pytest

import properties
from properties.verdict import ContractName, Kind, Source

FAST = {"checks": ("causality",), "max_examples": 25}
FLOATS = {"grid": (12,), "layout": "BTC", "features": 2, "predicts": "next"}
DOCUMENTS = {"documents": [4, 3, 5], "documents_as": "position_ids"}


def audit(model, **options):
    return properties.audit_model(model, **{**FAST, **options})


def found(result, kind):
    """The Hypothesis search's minimal violation of ``kind``, and its counterexample."""
    report = result.perturbations["eval" if not result.train else "train"]
    v = next(v for v in report.found if v.kind == kind)
    return v, report.counterexamples[kind]


@pytest.mark.parametrize(
    "bug, first_leak",
    [
        ("attention_ignoring_documents", 4),  # the first output of document 1
        ("conv_across_documents", 4),
        ("scan_restarting_per_chunk", 4),  # restarts at 0, 4, 8: never at 7
    ],
)
def test_a_leak_across_documents_is_caught_and_named(bug, first_leak):
    r = audit(getattr(T, bug)(), **FLOATS, **DOCUMENTS)
    assert r.causal and r.contracts[ContractName.DOCUMENTS] is False and not r.passed
    kinds = {v.kind for v in r.violations}
    assert Kind.DOCUMENT in kinds and Kind.FUTURE not in kinds
    v, p = found(r, Kind.DOCUMENT)
    assert p.family == "documents" and (p.kind, p.magnitude) == ("add", 1e-3)  # the gentlest
    doc = r.subject.contract.document
    assert doc(v.input) < doc(v.output)
    # every evidence names it: the gradients and the sweep too
    sources = {v.source for v in r.violations if v.kind == Kind.DOCUMENT}
    assert sources == {Source.GRADIENT, Source.SWEEP, Source.SEARCH}
    assert min(v.output for v in r.violations if v.kind == Kind.DOCUMENT) == first_leak or (
        bug == "scan_restarting_per_chunk"
    )


def test_the_scan_restarting_per_chunk_leaks_exactly_where_chunks_and_documents_differ():
    r = audit(T.scan_restarting_per_chunk(), **FLOATS, documents=[3, 5, 4],
              documents_as="position_ids")
    leaking = sorted({v.output for v in r.violations
                      if v.source is Source.GRADIENT and v.kind == Kind.DOCUMENT})
    assert leaking == [3]  # chunk 0..3 holds document 1's first token; 4..7 and 8..11 do not


@pytest.mark.parametrize("model", ["packed_attention", "packed_conv", "packed_scan"])
def test_models_that_keep_their_documents_pass(model):
    r = audit(getattr(T, model)(), **FLOATS, **DOCUMENTS)
    assert r.passed and r.contracts == {ContractName.DOCUMENTS: True}


def test_documents_not_passed_to_the_model_are_a_violation_not_a_pass():
    r = audit(T.packed_attention(), **FLOATS, documents=[4, 3, 5])  # no documents_as
    assert r.contracts[ContractName.DOCUMENTS] is False


def test_a_forward_hook_gets_the_documents_themselves():
    def hook(model, x, documents):
        return model(x, position_ids=documents.position_ids(len(x)))

    r = audit(T.packed_attention(), **FLOATS, documents=[4, 3, 5], forward=hook)
    assert r.passed


@pytest.mark.parametrize(
    "bug, back",
    [("sliding_window_made_full", 4), ("sliding_window_off_by_one", 4)],
)
def test_a_window_that_sees_too_far_is_caught(bug, back):
    r = audit(getattr(T, bug)(), **FLOATS, window=T.WINDOW)
    assert r.causal and r.contracts[ContractName.WINDOW] is False
    v, p = found(r, Kind.WINDOW)
    assert p.family == "window" and p.cut == 0  # shrunk to the first end
    assert int(r.subject.ranks[v.output] - r.subject.ranks[v.input]) == back


def test_the_full_window_sees_further_than_the_one_off_by_one():
    full = audit(T.sliding_window_made_full(), **FLOATS, window=T.WINDOW, max_examples=0)
    off = audit(T.sliding_window_off_by_one(), **FLOATS, window=T.WINDOW, max_examples=0)
    reach = [max(int(r.subject.ranks[v.output] - r.subject.ranks[v.input])
                 for v in r.violations if v.kind == Kind.WINDOW) for r in (full, off)]
    assert reach == [11, 4]


def test_a_window_that_shrank_fails_only_when_exact():
    assert audit(T.sliding_window_shrunk(), **FLOATS, window=T.WINDOW).passed
    r = audit(T.sliding_window_shrunk(), **FLOATS, window=T.WINDOW, window_exact=True)
    assert r.contracts[ContractName.WINDOW] is False
    shrunk = [v for v in r.violations if v.kind == Kind.SHRUNK]
    assert [(v.output, v.input) for v in shrunk][:2] == [(3, 0), (4, 1)]


def test_an_exact_window_passes_when_it_is_exact():
    r = audit(T.sliding_attention(), **FLOATS, window=T.WINDOW, window_exact=True)
    assert r.passed and r.contracts == {ContractName.WINDOW: True}
    # the perturbations saw every output reach the far end of its window
    assert r.perturbations["eval"].reached == set(range(T.WINDOW - 1, 12))


def test_per_module_windows_compose_into_the_model_bound():
    r = audit(T.two_sliding_layers(), **FLOATS, window=T.WINDOW,
              window_modules="layers.[0-9]", checks=("causality", "receptive_field"))
    assert r.passed and set(r.modules) == {"layers.0", "layers.1"}
    assert r.subject.contract.width == 2 * (T.WINDOW - 1) + 1
    assert r.receptive_field.max_span + 1 == 7
    tight = audit(T.two_sliding_layers(), **FLOATS, window=T.WINDOW - 1,
                  window_modules="layers.[0-9]")
    assert tight.contracts[ContractName.WINDOW] is False
    assert all(not m.contracts[ContractName.WINDOW] for m in tight.modules.values())


def test_a_global_module_leaves_the_model_unbounded_and_fails_a_window_declared_on_it():
    r = audit(T.local_then_global(), **FLOATS, window=T.WINDOW,
              window_modules=["layers.0", "layers.1=global"])
    assert r.passed and r.subject.contract.width is None
    wrong = audit(T.local_then_global(), **FLOATS, window=T.WINDOW,
                  window_modules="layers.[0-9]")
    assert wrong.modules["layers.0"].contracts[ContractName.WINDOW]
    assert not wrong.modules["layers.1"].contracts[ContractName.WINDOW]


BATCH = {"grid": (10,), "predicts": "next", "batch_independent": True}


def test_batchnorm_in_training_mode_depends_on_the_other_samples():
    r = audit(T.batchnorm_net(), layout="BCT", features=2, train=True, **BATCH)
    assert r.contracts[ContractName.BATCH] is False
    by_mode = {(v.source, v.train) for v in r.violations if v.kind == Kind.SAMPLE}
    assert (Source.GRADIENT, True) in by_mode and (Source.SEARCH, True) in by_mode
    assert not any(v.kind == Kind.SAMPLE and not v.train for v in r.violations)  # eval: none
    p = r.perturbations["train"].counterexamples[Kind.SAMPLE]
    assert (p.size, p.replaced) == (2, 0)


def test_dropout_in_training_mode_is_no_dependence():
    r = audit(T.dropout_net(), layout="BCT", features=2, train=True, **BATCH)
    assert r.passed and r.contracts[ContractName.BATCH] is True


def test_a_router_with_a_capacity_per_batch_is_caught_by_perturbations_only():
    r = audit(T.capacity_router(), layout="BTC", features=2, **BATCH)
    assert r.causal and r.contracts[ContractName.BATCH] is False
    sources = {v.source for v in r.violations if v.kind == Kind.SAMPLE}
    assert Source.GRADIENT not in sources and Source.SEARCH in sources
    v, p = found(r, Kind.SAMPLE)
    assert p.size == 2 and p.replaced == 0 and v.samples == (0, 1)  # sample 1 waits for 0
    assert audit(T.unlimited_router(), layout="BTC", features=2, **BATCH).passed


PADDED = {"grid": (10,), "layout": "BT", "vocab": 20, "predicts": "next"}


def test_a_model_that_takes_its_mask_passes_padding_on_both_sides():
    r = audit(T.padded_lm(), **PADDED, padding="both")
    assert r.passed and r.contracts == {ContractName.PADDING: True}
    assert r.perturbations["eval"].swept["padding"] == 8


def test_one_cache_position_for_a_left_padded_batch_is_caught_with_two_samples():
    r = audit(T.shared_cache_position(), **PADDED, padding="left")
    assert r.contracts[ContractName.PADDING] is False
    v, p = found(r, Kind.PADDING)
    assert p.side == "left" and sorted(p.lengths) == [0, 1]  # shrunk: two samples, one padded
    assert p.fill == "zeros"
    assert audit(T.padded_lm(), **PADDED, padding="left").passed  # positions per row: no bug


def test_a_mask_that_never_reaches_the_attention_is_caught_on_one_sample():
    r = audit(T.mask_ignored(), **PADDED, padding="left")
    assert r.contracts[ContractName.PADDING] is False
    _, p = found(r, Kind.PADDING)
    assert p.lengths == (1,)
    # padded on the right, a causal model never looks at its padding: nothing to see
    assert audit(T.mask_ignored(), **PADDED, padding="right").passed
