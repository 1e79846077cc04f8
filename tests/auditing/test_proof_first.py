"""Proof first (properties/auditing/evidence_plan.py): the plan the certificate sets for the
dynamic evidence, from hand-made certificates, and what the default audit then gathers and
concludes: the confirmation of a proof, the directed search of a model the proof does not cover,
a wrong proof caught by the cross-check, and every planted bug still caught."""

from dataclasses import replace

import pytest
import torch
from known_models import taps_subject

import properties.evidence.certificate as certificate_module
from properties import audit, make_subject
from properties.auditing.coverage import BY_BOUND
from properties.auditing.evidence_plan import (
    PlanKind,
    candidate_cuts,
    plan_evidence,
    stratified,
    stratified_among,
)
from properties.auditing.options import DEFAULT_POLICY, AuditOptions
from properties.evidence.certificate import Certificate, Forbidden
from properties.extra.architectures import BUGS_1D, BUGS_2D, Architecture, PlantedLeak
from properties.output.report import coverage_line, render_text, to_dict
from properties.verdict import Kind


def bound_of(n, pairs):
    bound = torch.zeros(n, n, dtype=torch.bool)
    for t, s in pairs:
        bound[t, s] = True
    return bound


def causal_pairs(n, present=True):
    return {(t, s) for t in range(n) for s in range(t + (1 if present else 0))}


def options(**changes):
    return AuditOptions(**changes).checked(0)


# ---------------------------------------------------------------------------------------------
# Candidate cuts: where the bound admits a change


def test_candidate_cuts_are_where_the_bound_reaches_a_later_rank():
    """Output 3 may see input 7: replacing ranks >= c for c in 4..7 could move it (future);
    outputs 2 and 5 may see themselves (present at cuts 2 and 5; output 3 reaches past itself,
    so its own cut too)."""
    n = 10
    bound = bound_of(n, causal_pairs(n, present=False) | {(3, 7), (2, 2), (5, 5)})
    cuts = candidate_cuts(taps_subject("neither", n), Certificate("not_proved", bound=bound))
    assert cuts == {Kind.FUTURE: [4, 5, 6, 7], Kind.PRESENT: [2, 3, 5]}


def test_candidate_cuts_follow_the_generation_order():
    """With ranks reversed (position 9 generated first), output 3 (rank 6) seeing input 2
    (rank 7) is a future pair, at cut 7 only."""
    n = 10
    subject = taps_subject("neither", n, order=list(range(n))[::-1])
    ranks = subject.ranks.tolist()
    past = {(t, s) for t in range(n) for s in range(n) if ranks[s] < ranks[t]}
    bound = bound_of(n, past | {(3, 2)})
    cuts = candidate_cuts(subject, Certificate("not_proved", bound=bound))
    assert cuts == {Kind.FUTURE: [ranks[2]], Kind.PRESENT: [ranks[3]]}


def test_a_proved_bound_admits_no_future_cut():
    n = 12
    cuts = candidate_cuts(taps_subject("present", n), Certificate("proved", bound=bound_of(
        n, causal_pairs(n))))
    assert cuts == {Kind.FUTURE: [], Kind.PRESENT: list(range(n))}


# ---------------------------------------------------------------------------------------------
# The plan's decisions, from hand-made certificates


def test_a_proved_model_gets_the_confirmation_plan():
    n = 40
    subject = taps_subject("present", n, predicts="next")
    cert = Certificate("proved", mode="inclusive", bound=bound_of(n, causal_pairs(n)))
    plan = plan_evidence(subject, options(seed=3), cert)
    assert plan.kind == PlanKind.CONFIRMATION
    assert plan.cuts == stratified(n, DEFAULT_POLICY.confirm_cuts, 3 + 1)
    assert plan.examples == DEFAULT_POLICY.confirm_examples
    assert plan.focus.more_cuts == () and plan.focus.search_cuts == {}  # searches range freely
    assert plan.focus.present_if_open and not plan.focus.stop_at_forbidden
    assert plan.map_rows and plan.candidates is None


def test_an_unproved_model_gets_the_directed_plan_on_exactly_the_candidate_cuts():
    n = 30
    subject = taps_subject("neither", n, predicts="next")
    bound = bound_of(n, causal_pairs(n) | {(3, 7), (20, 22)})
    where = "aten.mul.Tensor in layers.2 (Conv1d)"
    cert = Certificate(
        "not_proved", mode="none", bound=bound, forbidden=[Forbidden(3, 4, "future", where)]
    )
    plan = plan_evidence(subject, options(), cert)
    assert plan.kind == PlanKind.DIRECTED
    assert plan.all_cuts == [4, 5, 6, 7, 21, 22] == plan.cuts  # no more than directed_cuts
    assert plan.focus.more_cuts == ()
    assert plan.focus.search_cuts == {Kind.FUTURE: (4, 5, 6, 7, 21, 22),
                                      Kind.PRESENT: tuple(range(n))}
    assert plan.focus.stop_at_forbidden
    assert plan.focus.after_leak == DEFAULT_POLICY.directed_examples
    assert (plan.candidates, plan.entered, plan.examples) == (6, where, None)


def test_many_candidate_cuts_are_swept_a_stratified_round_first():
    """Every cut a candidate (a bidirectional layer): a stratified round of directed_cuts, then
    the rest of them, as many as the sampled plan would sweep."""
    n = 50
    subject = taps_subject("neither", n, predicts="current")
    cert = Certificate("not_proved", bound=torch.ones(n, n, dtype=torch.bool))
    plan = plan_evidence(subject, options(), cert)
    everything = list(range(n))  # present pairs are forbidden for 'current': cut 0 too
    assert plan.cuts == stratified_among(everything, DEFAULT_POLICY.directed_cuts, 1)
    assert sorted(plan.all_cuts) == everything and len(set(plan.all_cuts)) == n
    small = replace(DEFAULT_POLICY, exhaustive_positions=20, sampled_cuts=10)
    capped = plan_evidence(subject, options(policy=small), cert)
    covered = stratified_among(everything, 10, 1)
    assert sorted(capped.all_cuts) == covered
    assert capped.cuts == stratified_among(covered, DEFAULT_POLICY.directed_cuts, 1)


@pytest.mark.parametrize(
    "why, opts, cert",
    [
        ("exact", {"exact": True}, "proved"),
        ("the policy says so", {"policy": replace(DEFAULT_POLICY, proof_first=False)}, "proved"),
        ("no certificate", {}, None),
        ("an unavailable certificate", {}, "unavailable"),
    ],
)
def test_no_proof_to_lead_keeps_the_coverage_by_grid_size(why, opts, cert):
    n = 12
    subject = taps_subject("present", n)
    certificate = None
    if cert == "proved":
        certificate = Certificate("proved", bound=bound_of(n, causal_pairs(n)))
    elif cert == "unavailable":
        certificate = Certificate("unavailable", reason="no tracer")
    plan = plan_evidence(subject, options(**opts), certificate)
    expected = PlanKind.EXHAUSTIVE if opts.get("exact") else PlanKind.SAMPLED
    assert (plan.kind, plan.cuts, plan.focus.more_cuts) == (expected, list(range(n)), ()), why


def test_a_big_model_gets_no_map_under_a_proof_first_plan():
    """The map is left to the bound when the float64 copy alone exceeds confirm_map_bytes."""
    n = 12
    subject = taps_subject("present", n)
    cert = Certificate("proved", bound=bound_of(n, causal_pairs(n)))
    tiny = replace(DEFAULT_POLICY, confirm_map_bytes=8)  # Taps has 4 float64 weights: 32 bytes
    plan = plan_evidence(subject, options(policy=tiny), cert)
    assert not plan.map_rows and "float64 copy" in plan.why_no_map
    result = audit(subject, policy=tiny, max_examples=5)
    assert result.maps == {} and result.coverage.gradient["eval"] == BY_BOUND
    assert result.causal and result.certificate.proved
    assert "map: left to the bound" in coverage_line(to_dict(result, "t")["coverage"])


# ---------------------------------------------------------------------------------------------
# What the default audit gathers under each plan


def test_a_proved_model_is_confirmed_by_a_handful_of_cuts_and_examples():
    n = 64
    subject = taps_subject("present", n, predicts="next")
    result = audit(subject, seed=2)
    assert result.certificate.proved and result.coverage.plan == "confirmation"
    report = result.perturbations["eval"]
    cuts = stratified(n, DEFAULT_POLICY.confirm_cuts, 2 + 1)
    assert sorted({c for c, _, _ in report.sweep.values()}) == cuts  # each shows the present
    assert report.cuts_swept == len(cuts) and {0, n - 1} <= set(cuts)
    # the sweep showed the present, which a 'next' model may see: no search for it
    assert report.examples == DEFAULT_POLICY.confirm_examples and report.found == []
    assert report.batch_independent is None  # nothing stacked: not measured
    assert result.coverage.verdict_by == "certificate" and result.passed
    assert result.coverage.exhaustive is False and result.coverage.cuts_stratified
    line = coverage_line(to_dict(result, "t")["coverage"])
    assert line.startswith(
        f"proved by the certificate; confirmed by: swept {len(cuts)} of 64 cuts, stratified;"
    )
    # the map is whole (the field colours cheaply): the receptive field is exact
    assert len(result.maps["eval"].outputs) == n and result.certificate_exact


def test_a_strict_model_is_searched_for_the_present_too():
    """'current' forbids the present: both searches run, each with the confirmation's count."""
    result = audit(taps_subject("neither", 40, predicts="current"))
    report = result.perturbations["eval"]
    assert result.coverage.plan == "confirmation" and result.mode == "strict"
    assert report.examples == 2 * DEFAULT_POLICY.confirm_examples


def test_exact_keeps_the_exhaustive_audit():
    n = 40
    result = audit(taps_subject("present", n, predicts="next"), exact=True, max_examples=7)
    report = result.perturbations["eval"]
    assert result.coverage.plan == "exhaustive" and result.coverage.exhaustive
    assert report.cuts_swept == n and len(result.maps["eval"].outputs) == n
    # both searches ran, the present's too (the sweep showed it already)
    assert report.examples > 7 and Kind.PRESENT in report.counterexamples
    assert result.coverage.verdict_by == "dynamic"


def test_a_leak_is_found_where_the_bound_admits_it_and_the_sweep_stops():
    """A leak at the end of the sequence only (outputs >= 30 see t + 1): the candidate cuts are
    31..40, the sweep's first chunk there shows it, the searches draw among those cuts."""
    arch = Architecture(1, (2, 2), (1, 2), seed=1)
    model = PlantedLeak(arch.build(), "late", start=30).double()
    subject = make_subject(model, grid=(41,), layout="BCT", predicts="next")
    result = audit(subject)
    cov = result.coverage
    assert cov.plan == "directed" and cov.candidate_cuts == 10 and cov.verdict_by == "dynamic"
    report = result.perturbations["eval"]
    swept = {c for c, _, _ in report.sweep.values()}
    assert swept and min(swept) >= 31 and report.cuts_swept < cov.cuts_planned
    assert result.mode == "none" and not result.passed
    cut = report.counterexamples[Kind.FUTURE].cut
    assert 31 <= cut <= 40
    assert "layers" in cov.entered or "PlantedLeak" in cov.entered
    text = render_text(result, "late")
    assert "directed by the bound's 10 candidate cuts, the future entering at" in text
    assert "stopped at a forbidden change" in text


def test_a_leak_the_sweep_cannot_see_is_searched_for_in_full_among_the_candidates():
    """Only future values beyond 100 leak: the sweep's zeros show nothing, so every candidate cut
    is swept and the search gets the whole profile's examples among them (it finds it)."""
    model = PlantedLeak(Architecture(1, (2, 2), (1, 2), seed=1).build(), "large").double()
    subject = make_subject(model, grid=(24,), layout="BCT")
    result = audit(subject, max_examples=60)
    report = result.perturbations["eval"]
    assert result.coverage.plan == "directed" and result.mode == "none"
    assert report.cuts_swept == result.coverage.cuts_planned == result.coverage.candidate_cuts
    assert Kind.FUTURE in report.counterexamples


def test_shard_zero_gathers_a_proof_first_plan_whole():
    """Every shard certifies (the certificate decides the plan); shard 0 gathers the whole
    confirmation, the others nothing: merged, they are the unsharded audit."""
    from properties.auditing.conclude import merge

    def make():
        return taps_subject("present", 40, predicts="next")

    whole = audit(make(), max_examples=5)
    parts = [audit(make(), max_examples=5, shard=(i, 3)) for i in range(3)]
    assert [p.coverage.plan for p in parts] == ["confirmation"] * 3
    assert parts[0].perturbations["eval"].cuts_swept == whole.perturbations["eval"].cuts_swept
    assert parts[1].perturbations == {} and parts[2].maps == {}
    assert parts[0].certificate is not None and parts[1].certificate is None
    merged, plain = to_dict(merge(parts), "t"), to_dict(whole, "t")
    for data in (merged, plain):
        data.pop("seconds")
        data["certificate"].pop("seconds")
    assert merged == plain


# ---------------------------------------------------------------------------------------------
# A wrong proof still fails the audit


def _claimed(bound_pairs, status="proved", mode="strict"):
    """A certify() that returns a hand-made certificate, whatever the model."""

    def certify(subject, *, train=False, seed=0):
        n = subject.n_positions
        return Certificate(status, mode=mode, bound=bound_of(n, bound_pairs(n)), train=train)

    return certify


def test_a_dynamic_dependency_outside_a_wrong_proof_is_a_soundness_bug(monkeypatch):
    """The certificate 'proves' a model that sees x_{t+2}: the confirmation's handful of cuts
    and its map see the future, outside the bound: SOUNDNESS BUG, and the audit fails."""
    monkeypatch.setattr(
        certificate_module, "certify", _claimed(lambda n: causal_pairs(n, present=False))
    )
    result = audit(taps_subject("future", 40, predicts="next"))
    assert result.coverage.plan == "confirmation"
    assert result.unsound and not result.passed
    assert result.coverage.verdict_by == "dynamic"
    text = render_text(result, "wrong proof")
    assert "SOUNDNESS BUG of the certificate" in text
    assert "REFUTED by the dynamic evidence" in text


def test_a_wrong_proof_of_a_leak_no_gradient_sees_is_caught_by_the_sweep(monkeypatch):
    """A threshold on x_{t+1} (no gradient): the confirmation's sweep alone refutes the proof."""
    monkeypatch.setattr(
        certificate_module, "certify", _claimed(lambda n: causal_pairs(n, present=False))
    )
    model = PlantedLeak(Architecture(1, (2, 2), (1, 2), seed=1).build(), "threshold")
    result = audit(make_subject(model, grid=(24,), layout="BCT"))
    assert result.coverage.plan == "confirmation"
    assert result.mode == "none" and result.unsound and not result.passed


# ---------------------------------------------------------------------------------------------
# Positive controls: the default audit still catches every planted bug


@pytest.mark.parametrize("bug", [*BUGS_1D])
def test_every_planted_1d_bug_is_caught_by_the_default_audit(bug):
    arch = Architecture(1, (2, 3), (1, 2), bug=bug)
    subject = make_subject(arch.build(), grid=(32,), layout="BCT", predicts="current")
    result = audit(subject, train=bug == "batchnorm_over_time")
    assert not result.passed, bug
    assert result.coverage.plan in ("directed", "confirmation")
    mode = arch.expected_train_mode if bug == "batchnorm_over_time" else arch.expected_mode
    assert result.mode == mode


@pytest.mark.parametrize("style", ["two_stack", "masked"])
@pytest.mark.parametrize("bug", [*BUGS_2D])
def test_every_planted_2d_bug_is_caught_by_the_default_audit(bug, style):
    if bug == "mask_open_below" and style != "masked":
        pytest.skip("a masked net's bug")
    arch = Architecture(2, (3, 3), (1, 1), style=style, bug=bug)
    subject = make_subject(arch.build(), grid=(8, 8), layout="BCHW", predicts="current")
    result = audit(subject, train=bug == "batchnorm_over_time")
    assert not result.passed, (bug, style)
    mode = arch.expected_train_mode if bug == "batchnorm_over_time" else arch.expected_mode
    assert result.mode == mode


@pytest.mark.parametrize(
    "kind", ["linear", "threshold", "late", "nan", "present_threshold", "present_integer"]
)
def test_every_planted_leak_is_caught_by_the_default_audit(kind):
    model = PlantedLeak(Architecture(1, (2, 2), (1, 2), seed=1).build(), kind, start=12)
    result = audit(make_subject(model, grid=(24,), layout="BCT", predicts="current"))
    assert not result.passed and result.coverage.plan == "directed", kind
    assert result.mode == ("inclusive" if kind.startswith("present") else "none")


def test_a_bidirectional_layer_of_a_gpt2_fails_the_default_audit_and_names_the_module():
    from hf_models import VOCAB, gpt2_leaky

    subject = make_subject(
        gpt2_leaky(), grid=(24,), layout="BT", vocab=VOCAB, output="logits", predicts="next"
    )
    result = audit(subject)
    assert result.coverage.plan == "directed" and result.mode == "none" and not result.passed
    assert "transformer.h.1.attn (GPT2Attention)" in result.coverage.entered
    assert result.perturbations["eval"].counterexamples  # a concrete, minimal counterexample
