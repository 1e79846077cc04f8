"""The coverage policy's thresholds (properties/auditing/options.py), at the edges no model of
ordinary size reaches: grids above the exhaustive sweep, maps too wide to colour, the stratified
samples, and the loss check as the only check."""

from dataclasses import replace

import pytest
from known_models import expected_sweep, taps_subject

from properties import audit, make_subject
from properties.auditing.gather import stratified
from properties.auditing.options import DEFAULT_POLICY
from properties.evidence import facts
from properties.extra.architectures import Architecture


def policy(**changes):
    return replace(DEFAULT_POLICY, **changes)


def test_audit_above_the_exhaustive_grid_samples_cuts_and_maps_every_output():
    """1100 positions: the sweep samples its cuts (and records exactly those), the colored map
    still covers every output, and the facts read rows past the first 1024."""
    n = 1100
    subject = taps_subject((-3, -1, 0), n, predicts="next")
    result = audit(subject, checks=("causality", "receptive_field"), max_examples=5)
    cuts = stratified(n, DEFAULT_POLICY.sampled_cuts, 0 + 1)
    assert result.coverage.exhaustive is False
    report = result.perturbations["eval"]
    assert report.cuts_swept == len(cuts) < n
    sweep = {t: (c, kind) for t, (c, _, kind) in report.sweep.items()}
    assert sweep == {c: (c, "present") for c in cuts}
    dmap = result.maps["eval"]
    assert len(dmap.outputs) == n
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n and {(v.output, v.input) for v in listed} == {(t, t) for t in range(n)}
    field = result.receptive_field
    assert (field.size, field.span, field.holes) == (3, 3, 1)
    assert (result.mode, result.causal) == ("inclusive", True)


def test_exhaustive_threshold_is_inclusive():
    """A grid of exactly exhaustive_positions is swept whole; one more position is sampled."""
    small = policy(exhaustive_positions=16, sampled_cuts=4)
    whole = audit(taps_subject("future", 16), checks=("causality",), max_examples=3, policy=small)
    assert whole.coverage.exhaustive is True
    assert whole.perturbations["eval"].cuts_swept == 16
    sampled = audit(
        taps_subject("future", 17), checks=("causality",), max_examples=3, policy=small
    )
    assert sampled.coverage.exhaustive is False
    cuts = stratified(17, 4, 1)
    report = sampled.perturbations["eval"]
    assert report.cuts_swept == len(cuts) < 17
    expected = expected_sweep("future", 17, cuts)
    assert {t: (c, k) for t, (c, _, k) in report.sweep.items()} == expected
    exact = audit(
        taps_subject("future", 17), checks=("causality",), max_examples=3, exact=True,
        policy=small,
    )
    assert exact.coverage.exhaustive is True
    assert exact.perturbations["eval"].cuts_swept == 17


def test_stratified_sample_has_the_edges_and_one_per_stratum():
    picks = stratified(100, 10, 3)
    assert picks[0] == 0 and picks[-1] == 99 and picks == sorted(set(picks))
    for lo in range(0, 100, 10):
        assert any(lo <= p < lo + 10 for p in picks[1:-1]) or lo in (0, 90)
    assert stratified(5, 10, 3) == [0, 1, 2, 3, 4]
    assert stratified(10, 10, 3) == list(range(10))


def test_map_passes_threshold_picks_the_sampled_map():
    """When the colored map would cost more than max_map_passes, the probe outputs and a
    stratified sample are mapped (plainly), and the facts read those rows."""
    narrow = policy(max_map_passes=1, sampled_outputs=6)
    n = 40
    result = audit(taps_subject("future", n), checks=("causality",), max_examples=3, policy=narrow)
    dmap = result.maps["eval"]
    assert dmap.method == "sampled" and len(dmap.outputs) < n
    assert set(stratified(n, 6, 0)) <= set(dmap.outputs.tolist())
    listed, total = facts.gradient_violations(result.subject, dmap)
    assert {(v.output, v.input) for v in listed} == {
        (t, t + 2) for t in dmap.outputs.tolist() if t + 2 < n
    }
    exact = audit(
        taps_subject("future", n), checks=("causality",), max_examples=3, exact=True,
        policy=narrow,
    )
    assert len(exact.maps["eval"].outputs) == n


@pytest.mark.parametrize(
    "bug, predicts, holds",
    [
        (None, "current", True),
        ("same_padding", "current", False),
        ("no_shift", "current", False),
        ("no_shift", "next", True),
        ("no_shift", "auto", False),  # no causality check: auto is checked as 'current'
    ],
)
def test_loss_only_verdict_is_the_loss_check(bug, predicts, holds):
    arch = Architecture(1, (2, 5), (1, 1), bug=bug)
    subject = make_subject(arch.build(), grid=(16,), layout="BCT", predicts=predicts)
    result = audit(subject, checks=("loss",))
    assert (result.mode, result.causal, result.violations) == (None, None, [])
    assert result.maps == {} and result.perturbations == {}
    assert result.loss.holds is holds and result.passed is holds
    assert (result.coverage.loss_checked, result.coverage.loss_total) == (16, 16)
    convention = "current" if predicts == "auto" else predicts
    assert result.coverage.loss_convention == convention
