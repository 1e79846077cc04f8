"""The audit's conclusions and report fields, on evidence whose every entry is known: hand-made
dependency maps, perturbation reports and certificates given to :func:`conclude` and
:func:`merge`, and small models whose audit is known exactly. Exact values throughout: a change
of the verdict logic (which checks run, the mode, the certificate's cross-check, what the report
says was covered) must change one of them."""

import pytest
import torch
from known_models import taps_subject

from properties.auditing.conclude import (
    SOUNDNESS_BUG,
    conclude,
    loss_convention,
    merge,
    soundness_note,
)
from properties.auditing.coverage import UNAVAILABLE, Coverage, MapCoverage
from properties.auditing.gather import stratified
from properties.auditing.options import (
    CHECKS,
    DEFAULT_POLICY,
    DYNAMIC,
    STATIC,
    AuditOptions,
    _checked_checks,
    _checked_shard,
)
from properties.auditing.result import AuditResult
from properties.errors import AdapterError
from properties.evidence import facts
from properties.evidence.certificate import Certificate
from properties.evidence.gradients import DependencyMap
from properties.evidence.loss import LossEquivalence
from properties.evidence.perturbation import PerturbationReport


def hand_map(n, pairs, outputs=None):
    """A map in which exactly ``pairs`` (output, input) are seen, on ``outputs`` (default all)."""
    outputs = list(range(n)) if outputs is None else outputs
    seen = torch.zeros(len(outputs), n, dtype=torch.bool)
    row = {t: i for i, t in enumerate(outputs)}
    for t, s in pairs:
        if t in row:
            seen[row[t], s] = True
    return DependencyMap(
        torch.tensor(outputs, dtype=torch.long), seen, seen.to(torch.bfloat16), passes=n,
        method="plain",
    )


def bound_of(n, pairs):
    bound = torch.zeros(n, n, dtype=torch.bool)
    for t, s in pairs:
        bound[t, s] = True
    return bound


def past(n, reach=1):
    return {(t, t - k) for t in range(n) for k in range(1, reach + 1) if t - k >= 0}


def result_of(subject, checks=CHECKS, **evidence):
    result = AuditResult(subject, tuple(checks), train=False, exact=False)
    for key, value in evidence.items():
        setattr(result, key, value)
    return result


# ---------------------------------------------------------------------------------------------
# The certificate's cross-check


def test_dependencies_outside_the_bound_are_a_soundness_bug_named_in_the_first_note():
    """A bound that misses the present and the future: each measured pair outside it is
    listed with its kind (past, present, future by rank), and the note says how many."""
    n = 6
    s = taps_subject("present", n, predicts="next")
    measured = past(n) | {(2, 2), (2, 4), (3, 0)}
    bound = bound_of(n, past(n))
    cert = Certificate("proved", mode="strict", bound=bound)
    result = result_of(s, maps={"eval": hand_map(n, measured)}, certificate=cert)
    conclude(result)
    outside = [(v.output, v.input, v.kind, v.evidence, v.effect, v.detail) for v in result.unsound]
    assert outside == [
        (2, 2, "present", "gradient", 0.0, "outside the bound"),
        (2, 4, "future", "gradient", 0.0, "outside the bound"),
        (3, 0, "past", "gradient", 0.0, "outside the bound"),
        # the gradient violations the bound does not allow, as the facts list them
        (2, 2, "present", "gradient", 1.0, "non-zero gradient"),
        (2, 4, "future", "gradient", 1.0, "non-zero gradient"),
    ]
    assert (result.mode, result.causal, result.violation_count) == ("none", False, 2)
    note = (
        f"{SOUNDNESS_BUG} (proved): 5 dynamic dependencies lie outside its bound, e.g. output 2 "
        "on input 2 (gradient); please report it with this model"
    )
    assert result.notes[0] == note == soundness_note(result)
    assert result.certificate_exact is False
    assert not result.passed


def test_kinds_outside_the_bound_follow_the_generation_order():
    """In reversed order a higher index is the past: the kinds are by rank, not by index."""
    n = 5
    s = taps_subject("present", n, predicts="next", order=list(range(n))[::-1])
    measured = {(2, 1), (2, 2), (2, 3)}
    cert = Certificate("not_proved", bound=bound_of(n, set()))
    result = result_of(s, checks=("receptive_field", "certificate"),
                       maps={"eval": hand_map(n, measured)}, certificate=cert)
    conclude(result)
    assert [(v.output, v.input, v.kind) for v in result.unsound] == [
        (2, 1, "future"), (2, 2, "present"), (2, 3, "past")
    ]
    assert result.notes[0].startswith(f"{SOUNDNESS_BUG} (not_proved): 3 dynamic dependencies")
    assert result.mode is None and not result.passed


def test_outside_pairs_listed_are_capped_and_training_maps_are_not_checked():
    n = 64
    s = taps_subject("present", n, predicts="next")
    everything = {(t, i) for t in range(n) for i in range(n)}
    cert = Certificate("proved", mode="strict", bound=bound_of(n, set()))
    # training mode's map first: it is skipped, not the end of the check
    maps = {"train": hand_map(n, everything), "eval": hand_map(n, everything)}
    result = result_of(s, checks=("receptive_field", "certificate"), maps=maps, certificate=cert)
    conclude(result)
    assert len(result.unsound) == facts.GRADIENT_PAIRS_KEPT
    assert {v.evidence for v in result.unsound} == {"gradient"}
    kept = facts.GRADIENT_PAIRS_KEPT
    assert result.notes[0].startswith(f"{SOUNDNESS_BUG} (proved): {kept} dynamic")


def test_a_bound_the_map_reaches_makes_the_receptive_field_exact():
    n = 6
    s = taps_subject("neither", n, predicts="current")
    cert = Certificate("proved", mode="strict", bound=bound_of(n, past(n)))
    result = result_of(s, maps={"eval": hand_map(n, past(n))}, certificate=cert)
    conclude(result)
    assert result.unsound == [] and soundness_note(result) is None
    assert result.certificate_exact is True
    assert result.notes == [
        "the certificate's bound equals the measured dependency map: the receptive field "
        "is exact (proved from above, reached from below)"
    ]
    assert (result.mode, result.causal, result.passed) == ("strict", True, True)
    # a bound wider than the map: sound, not exact
    wide = Certificate("proved", mode="strict", bound=bound_of(n, past(n, 2)))
    result = result_of(s, maps={"eval": hand_map(n, past(n))}, certificate=wide)
    conclude(result)
    assert (result.unsound, result.certificate_exact, result.notes) == ([], False, [])
    # a map of some outputs only says nothing about exactness
    partial = hand_map(n, past(n), outputs=[0, 3, 5])
    result = result_of(s, maps={"eval": partial}, certificate=cert)
    conclude(result)
    assert (result.unsound, result.certificate_exact, result.notes) == ([], None, [])


def test_without_a_bound_there_is_no_cross_check():
    n = 6
    s = taps_subject("present", n, predicts="current")
    for cert in (None, Certificate("unavailable", reason="no tracer")):
        result = result_of(s, maps={"eval": hand_map(n, {(t, t) for t in range(n)})},
                           certificate=cert)
        result.unsound, result.certificate_exact = ["stale"], True
        conclude(result)
        assert (result.unsound, result.certificate_exact) == ([], None)
        assert (result.mode, result.causal) == ("inclusive", False)
        assert soundness_note(result) is None


def sweep_report(records, train=False, **fields):
    return PerturbationReport(train=train, sweep=dict(records), cuts_swept=6, **fields)


def test_training_violations_are_checked_against_a_training_bound_only():
    """A perturbation of training mode the inference bound does not allow is a bug of the
    bound only when the certificate covered training mode."""
    n = 6
    s = taps_subject("neither", n, predicts="current")
    train_report = sweep_report(
        {3: (4, 0.5, "future")}, train=True, batch_independent=False
    )
    for cert_train, unsound in ((False, []), (True, [(3, 4, "future", "perturbation/train")])):
        cert = Certificate("proved", mode="strict", bound=bound_of(n, past(n)), train=cert_train)
        result = result_of(s, maps={"eval": hand_map(n, past(n))}, certificate=cert,
                           perturbations={"train": train_report})
        conclude(result)
        assert [(v.output, v.input, v.kind, v.evidence) for v in result.unsound] == unsound
        assert (result.mode, result.causal) == ("none", False)
        # the soundness note goes before every other note (here the batch's)
        assert result.notes[0].startswith(SOUNDNESS_BUG) is cert_train
        assert "predictions depend on the other samples of the batch" in result.notes[cert_train]


# ---------------------------------------------------------------------------------------------
# Concluding from the evidence


def test_conclude_collects_every_mode_and_kind_of_evidence():
    n = 6
    s = taps_subject("present", n, predicts="next")
    eval_map = hand_map(n, past(n) | {(1, 1), (4, 4)})
    train_map = hand_map(n, past(n) | {(2, 2)})
    eval_report = sweep_report({5: (5, 0.25, "present")}, rounding=3)
    train_report = sweep_report({0: (0, 0.5, "present")}, train=True, batch_independent=False)
    result = result_of(
        s, maps={"eval": eval_map, "train": train_map},
        perturbations={"eval": eval_report, "train": train_report},
    )
    for _ in range(2):  # concluding again gives the same conclusions, not twice as many
        conclude(result)
        got = [(v.output, v.input, v.kind, v.evidence) for v in result.violations]
        assert got == [
            (1, 1, "present", "gradient"), (4, 4, "present", "gradient"),
            (5, 5, "present", "perturbation"),
            (2, 2, "present", "gradient/train"),
            (0, 0, "present", "perturbation/train"),
        ]
        assert result.violation_count == 5
        assert (result.mode, result.causal, result.passed) == ("inclusive", True, True)
        assert result.derived_notes == eval_report.notes(False) + train_report.notes(True)
        assert "(expected in training mode)" in result.derived_notes[-1]
    rf = result.receptive_field
    assert (rf.size, rf.span) == (2, 1)  # the inference map's
    assert result.blind_spot is None  # 1D


def test_checks_not_asked_are_not_concluded():
    n = 6
    s = taps_subject("future", n, predicts="next")
    dmap = hand_map(n, past(n) | {(1, 3)})
    report = sweep_report({1: (3, 0.5, "future")})
    result = result_of(s, checks=("receptive_field",), maps={"eval": dmap},
                       perturbations={"eval": report})
    conclude(result)
    # the gradient pairs are not violations without the causality check; the sweep's are
    assert [(v.output, v.input, v.evidence) for v in result.violations] == [
        (1, 3, "perturbation")
    ]
    assert result.violation_count == 1
    assert (result.mode, result.causal, result.blind_spot) == (None, None, None)
    assert result.passed  # no verdict asked for: nothing failed
    assert result.receptive_field is not None
    result = result_of(s, checks=("causality",), maps={"eval": dmap})
    conclude(result)
    assert (result.mode, result.causal, result.violation_count) == ("none", False, 1)
    assert result.receptive_field is None and result.blind_spot is None


def test_causality_without_any_evidence_has_no_verdict():
    s = taps_subject("present", 6, predicts="next")
    result = conclude(result_of(s, checks=("causality",)))
    assert (result.mode, result.causal, result.passed) == (None, None, True)


def test_a_map_without_outputs_has_no_facts():
    n = 6
    s = taps_subject("present", n, predicts="next")
    empty = hand_map(n, set(), outputs=[])
    result = conclude(result_of(s, maps={"eval": empty}))
    assert (result.receptive_field, result.blind_spot) == (None, None)
    assert (result.mode, result.causal) == ("strict", True)


def test_a_map_of_one_output_has_its_facts():
    n = 6
    s = taps_subject("neither", n, predicts="current")
    result = conclude(result_of(s, maps={"eval": hand_map(n, {(4, 3), (4, 1)}, outputs=[4])}))
    rf = result.receptive_field
    assert (rf.size, rf.span, rf.position) == (2, 3, 4)


def test_a_1d_grid_in_another_order_has_no_blind_spot_and_no_note():
    n = 6
    s = taps_subject("neither", n, predicts="current", order=list(range(n))[::-1])
    result = conclude(result_of(s, checks=("blind_spot",), maps={"eval": hand_map(n, {(1, 2)})}))
    assert (result.blind_spot, result.derived_notes) == (None, [])


def test_receptive_field_reaching_the_border_says_so():
    n = 6
    s = taps_subject("neither", n, predicts="current")
    everything_before = {(t, i) for t in range(n) for i in range(t)}
    result = conclude(result_of(s, checks=("receptive_field",),
                                maps={"eval": hand_map(n, everything_before)}))
    note = facts.clipping_note(s, result.maps["eval"])
    assert note and result.derived_notes == [note]
    result = conclude(result_of(s, checks=("causality",),
                                maps={"eval": hand_map(n, everything_before)}))
    assert result.derived_notes == []


def test_blind_spot_of_a_2d_raster_and_the_note_off_raster():
    from properties import make_subject

    def model(x):
        return x

    raster = make_subject(model, grid=(3, 3), layout="BCHW")
    n = raster.n_positions
    # output (2, 0) sees (0, 0) but not (1, 0) below it: one pixel of blind spot
    above = {(6, 0)}
    result = conclude(result_of(raster, checks=("blind_spot",), maps={"eval": hand_map(n, above)}))
    assert (result.blind_spot.size, result.blind_spot.position) == (1, 6)
    assert result.derived_notes == []
    assert result.receptive_field is None
    # without a map (no gradient evidence) there is no blind spot, and nothing to say of it
    result = conclude(result_of(raster, checks=("blind_spot",)))
    assert (result.blind_spot, result.derived_notes) == (None, [])
    other = make_subject(model, grid=(3, 3), layout="BCHW", order=list(range(n))[::-1])
    result = conclude(result_of(other, checks=("blind_spot",), maps={"eval": hand_map(n, above)}))
    assert result.blind_spot is None
    assert result.derived_notes == ["blind spot: defined for raster order only, not computed"]


def loss(diff, position=0):
    rows = [{"position": position, "max_abs_diff": diff}]
    return LossEquivalence(diff, None, None, None, rows, tolerance=0.1)


@pytest.mark.parametrize(
    "predicts, mode, convention",
    [("auto", "inclusive", "next"), ("auto", "strict", "current"), ("auto", None, "current"),
     ("next", "strict", "next"), ("current", "inclusive", "current")],
)
def test_loss_convention(predicts, mode, convention):
    s = taps_subject("present", 6, predicts=predicts)
    result = result_of(s)
    result.mode = mode
    assert loss_convention(result) == convention


@pytest.mark.parametrize("predicts, convention", [("next", "next"), ("current", "current")])
def test_the_loss_verdict_is_the_rows_of_the_subjects_convention(predicts, convention):
    n = 6
    s = taps_subject("neither", n, predicts=predicts)
    losses = {"next": loss(0.0), "current": loss(1.0)}
    result = conclude(result_of(s, checks=("loss",), losses=losses))
    assert result.loss is losses[convention]
    assert result.coverage == Coverage(loss_convention=convention)
    assert result.passed is (convention == "next")
    # an auto subject takes the convention of the mode its evidence found
    auto = taps_subject("present", n, predicts="auto")
    result = conclude(result_of(auto, checks=("causality", "loss"), losses=losses,
                                maps={"eval": hand_map(n, {(2, 2)})}))
    assert (result.mode, result.loss, result.coverage.loss_convention) == (
        "inclusive", losses["next"], "next")
    result = conclude(result_of(auto, checks=("loss",), losses={"next": loss(0.0)}))
    assert result.loss is None and result.coverage == Coverage() and result.passed


def test_certificate_alone_passes_only_when_proved():
    s = taps_subject("neither", 6, predicts="current")
    for status, passed in (("proved", True), ("not_proved", False), ("unavailable", False)):
        result = conclude(result_of(s, checks=("certificate",),
                                    certificate=Certificate(status)))
        assert result.passed is passed
    assert not conclude(result_of(s, checks=("certificate",))).passed


# ---------------------------------------------------------------------------------------------
# Arguments


def test_checks_are_validated_and_put_in_canonical_order():
    size = DEFAULT_POLICY.certificate_positions
    assert AuditOptions().checked(size).checks == STATIC  # the default: all but incremental
    assert AuditOptions().checked(size + 1).checks == DYNAMIC  # above the certificate's size
    assert _checked_checks(["loss", "causality"]) == ("causality", "loss")
    assert _checked_checks(("certificate", "blind_spot", "blind_spot")) == (
        "blind_spot", "certificate")
    assert DYNAMIC == ("causality", "receptive_field", "blind_spot", "loss")
    with pytest.raises(AdapterError) as info:
        _checked_checks(["speed", "causality", "accuracy"])
    assert info.value.problem == "unknown checks ['accuracy', 'speed']"
    assert info.value.fix == f"use some of {', '.join(CHECKS)}"


def test_shards_are_validated():
    assert _checked_shard(None) is None
    assert _checked_shard((0, 1)) == (0, 1)
    assert _checked_shard(["2", 3.0]) == (2, 3)
    for bad in [(1, 1), (-1, 2), (0, 0), (1,), (0, 1, 2), "ab", 3, ("a", 2)]:
        with pytest.raises(AdapterError) as info:
            _checked_shard(bad)
        assert info.value.problem == f"shard {bad} is not (index, count) with 0 <= index < count"
        assert info.value.fix == (
            "pass shard=(i, n) for the i-th of n shards, e.g. from properties.testing.shards(n)"
        )


def test_stratified_positions():
    assert stratified(5, 5, 0) == [0, 1, 2, 3, 4]
    assert stratified(5, 9, 0) == [0, 1, 2, 3, 4]
    picks = stratified(100, 4, 3)
    assert picks[0] == 0 and picks[-1] == 99
    inner = picks[1:-1]
    strata = [(0, 25), (25, 50), (50, 75), (75, 100)]
    # one pick in each stratum (the edges may coincide with a stratum's own pick)
    assert all(any(lo <= p < hi for p in picks) for lo, hi in strata)
    assert len(picks) in (4, 5, 6) and picks == sorted(set(picks)) and len(inner) >= 2
    assert stratified(100, 4, 3) == picks  # seeded
    assert len({tuple(stratified(1000, 8, seed)) for seed in range(5)}) > 1
    assert stratified(10, 0, 0) == [0, 9]
    assert stratified(3, 2, 0)[0] == 0 and stratified(3, 2, 0)[-1] == 2


# ---------------------------------------------------------------------------------------------
# Merging shards


def test_merge_coverage_sums_counts_and_keeps_the_first_of_the_rest():
    def mapped(outputs, passes, method):
        return MapCoverage(outputs, 12, method, passes, 3)

    a = Coverage(gradient={"eval": mapped(3, 4, "colored")}, loss_checked=5, loss_total=12,
                 exhaustive=True)
    b = Coverage(gradient={"eval": mapped(2, 1, "plain"), "train": UNAVAILABLE},
                 loss_checked=7, loss_total=12, exhaustive=False, budgeted=True)
    c = Coverage(gradient={"eval": UNAVAILABLE}, perturbation_unavailable=["train"])
    assert Coverage.merged([a, b, c]) == Coverage(
        gradient={"eval": mapped(5, 5, "colored"), "train": UNAVAILABLE},
        perturbation_unavailable=["train"],
        loss_checked=12,
        loss_total=12,
        exhaustive=True,
        budgeted=True,
    )
    assert Coverage.merged([c, a]) == Coverage(
        gradient={"eval": UNAVAILABLE}, perturbation_unavailable=["train"], loss_checked=5,
        loss_total=12, exhaustive=True)
    assert a.gradient["eval"].passes == 4  # the inputs are left as they were


def test_merge_unites_the_evidence_and_concludes_again():
    n = 6
    s = taps_subject("future", n, predicts="next")
    parts = []
    for i, records in enumerate([{1: (3, 0.5, "future")}, {4: (4, 0.25, "present")}]):
        part = AuditResult(s, ("causality", "receptive_field", "loss", "certificate"), True,
                           True, shard=(i, 2))
        # shard i mapped every other output
        part.maps = {"eval": hand_map(n, past(n) | {(1, 3)}, outputs=list(range(i, n, 2))),
                     "train": hand_map(n, past(n), outputs=list(range(i, n, 2)))}
        part.perturbations = {"eval": sweep_report(records)}
        part.losses = {"next": loss(0.5 * i, i), "current": loss(0.0, i)}
        part.evidence_notes = ["both", f"shard {i}"]
        part.coverage = Coverage(gradient={"eval": MapCoverage(3, n, "plain", 2 + i, 3)})
        part.seconds = 1.5 + i
        part.certificate = Certificate("not_proved", bound=bound_of(n, past(n))) if i else None
        parts.append(part)
    merged = merge(parts[::-1])  # in any order: shard 0's notes first
    assert (merged.subject, merged.checks, merged.train, merged.exact) == (
        s, ("causality", "receptive_field", "loss", "certificate"), True, True)
    assert merged.shard is None
    assert merged.evidence_notes == ["both", "shard 0", "shard 1"]
    assert merged.maps["eval"].seen.equal(hand_map(n, past(n) | {(1, 3)}).seen)
    assert merged.maps["train"].seen.equal(hand_map(n, past(n)).seen)
    assert merged.maps["eval"].outputs.tolist() == list(range(n))
    assert merged.perturbations["eval"].sweep == {1: (3, 0.5, "future"), 4: (4, 0.25, "present")}
    assert (merged.mode, merged.causal, merged.violation_count) == ("none", False, 3)
    assert merged.losses["current"].max_abs_diff == 0.0
    assert [r["position"] for r in merged.losses["current"].positions] == [0, 1]
    assert merged.losses["next"].max_abs_diff == 0.5 and merged.loss is merged.losses["next"]
    assert merged.certificate is parts[1].certificate
    assert merged.coverage == Coverage(
        gradient={"eval": MapCoverage(6, n, "plain", 5, 3)}, loss_convention="next")
    assert merged.seconds == 4.0
    # shard 1's certificate, cross-checked against every shard's evidence
    assert [(v.output, v.input, v.evidence) for v in merged.unsound] == [
        (1, 3, "gradient"), (1, 3, "gradient"), (1, 3, "perturbation"),
        (4, 4, "perturbation")]
    with pytest.raises(ValueError, match="^merge needs at least one result$"):
        merge([])


def test_merge_of_one_result_and_of_results_without_a_certificate():
    n = 6
    s = taps_subject("neither", n, predicts="current")
    whole = AuditResult(s, ("causality",), False, False)
    whole.maps = {"eval": hand_map(n, past(n))}
    whole.evidence_notes = ["whole"]
    merged = merge([whole])
    assert (merged.mode, merged.causal, merged.certificate) == ("strict", True, None)
    assert merged.maps["eval"].seen.equal(whole.maps["eval"].seen)
    # an unsharded result is shard 0 of 1: its notes come before shard 1's
    second = AuditResult(s, ("causality",), False, False, shard=(1, 2))
    second.evidence_notes = ["second"]
    merged = merge([second, whole])
    assert merged.evidence_notes == ["whole", "second"] and merged.certificate is None
