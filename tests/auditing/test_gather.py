"""What the audit gathers and what its report says was covered: the checks each audit runs,
the certificate's place, shards' memory, the gradient evidence's fallbacks (memory, a model
fixed to float32, no gradient at all) with their notes, and the time budget's plan on a clock
the test controls (:class:`FixedPlan`), so that every planned count is exact."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from known_models import shifted, taps_subject
from torch import nn

from properties import audit, make_subject
from properties import progress as bars
from properties.auditing import gather
from properties.auditing import time_budget as plan
from properties.auditing.coverage import UNAVAILABLE, Coverage, MapCoverage
from properties.auditing.gather import Gathering, stratified
from properties.auditing.options import CHECKS, DEFAULT_POLICY, DYNAMIC, AuditOptions
from properties.auditing.result import AuditResult
from properties.errors import AdapterError, ModelError
from properties.evidence import gradients
from properties.subject import memory
from properties.subject.memory import GIB, MemoryBudgetError
from properties.verdict import ModelMode


class FixedPlan(plan.Plan):
    """A budget whose time left is fixed: the plan's counts do not depend on the machine."""

    def __init__(self, left, forward=1.0):
        super().__init__(3600.0, forward=forward)
        self._left = left

    def left(self):
        return self._left


def gathered(subject, checks=CHECKS, train=False, exact=False, shard=None):
    return AuditResult(subject, tuple(checks), train, exact, shard)


def policy(**changes):
    return replace(DEFAULT_POLICY, **changes)


def gathering(subject, result, seed, timing, policy):
    options = AuditOptions(
        checks=result.checks, train=result.train, exact=result.exact, seed=seed,
        shard=result.shard, policy=policy,
    )
    return Gathering(subject, options, result, timing)


def _gradient_evidence(subject, result, training, seed, timing=None, policy=DEFAULT_POLICY):
    """The gradient evidence of ``result``'s audit in one mode (as the audit gathers it)."""
    g = gathering(subject, result, seed, timing, policy)
    gather._gradient_evidence(g, ModelMode.of(training))


def _perturbation_evidence(
    subject, result, training, seed, examples, timing=None, policy=DEFAULT_POLICY
):
    g = gathering(subject, result, seed, timing, policy)
    g = replace(g, options=replace(g.options, max_examples=examples))
    gather._perturbation_evidence(g, ModelMode.of(training))


# ---------------------------------------------------------------------------------------------
# Which checks run


def test_default_checks_add_the_certificate_up_to_its_grid_size():
    small_grids = policy(certificate_positions=8)
    small = audit(taps_subject("neither", 8, predicts="current"), max_examples=5,
                  policy=small_grids)
    assert small.checks == CHECKS and small.certificate.proved
    large = audit(taps_subject("neither", 9, predicts="current"), max_examples=5,
                  policy=small_grids)
    assert large.checks == DYNAMIC and large.certificate is None


def test_a_small_audit_covers_everything_and_says_so():
    n = 12
    s = taps_subject("neither", n, predicts="current")
    result = audit(s, max_examples=5)
    dmap = result.maps["eval"]
    assert result.coverage == Coverage(
        gradient={"eval": MapCoverage(n, n, dmap.method, dmap.passes, DEFAULT_POLICY.map_inputs)},
        loss_checked=n,
        loss_total=n,
        loss_convention="current",
        exhaustive=True,
    )
    assert dmap.method == "colored" and len(dmap.outputs) == n
    assert result.perturbations["eval"].cuts_swept == n
    assert (result.mode, result.causal, result.passed) == ("strict", True, True)
    assert result.certificate.proved and result.certificate_exact is True
    assert result.seconds > 0
    # one sample of the forward pass holds at least its (2 x n float64) output
    assert 2 * n * 8 <= result.sample_bytes < 1 << 20


def test_the_certificate_alone_runs_no_model_evidence():
    result = audit(taps_subject("future", 12, predicts="next"), checks=["certificate"])
    assert (result.maps, result.perturbations, result.losses) == ({}, {}, {})
    assert (result.coverage, result.sample_bytes, result.mode) == (Coverage(), 0, None)
    assert result.certificate.mode == "none" and not result.passed
    assert result.seconds > 0
    proved = audit(taps_subject("neither", 12, predicts="current"), checks=["certificate"])
    assert proved.passed and proved.certificate.proved


def test_the_certificate_runs_on_the_leading_shard_only():
    s = taps_subject("neither", 12, predicts="current")
    parts = [audit(s, checks=["causality", "certificate"], shard=(i, 2)) for i in range(2)]
    assert parts[0].certificate.proved and parts[1].certificate is None
    assert [p.shard for p in parts] == [(0, 2), (1, 2)]


def test_training_mode_gathers_both_modes_and_the_loss_in_inference_only():
    s = taps_subject("neither", 12, predicts="current")
    result = audit(s, checks=["causality", "loss"], train=True, max_examples=5)
    assert set(result.maps) == {"eval", "train"}
    assert set(result.perturbations) == {"eval", "train"}
    assert set(result.coverage.gradient) == {"eval", "train"}
    assert (result.coverage.loss_checked, result.coverage.loss_total) == (12, 12)
    loss_only = audit(s, checks=["loss"], train=True, max_examples=5)
    assert (loss_only.maps, loss_only.perturbations) == ({}, {})
    assert loss_only.loss.holds and loss_only.coverage == Coverage(
        loss_checked=12, loss_total=12, loss_convention="current", exhaustive=True
    )
    field_only = audit(s, checks=["receptive_field"], max_examples=5)
    assert set(field_only.maps) == {"eval"} and field_only.perturbations == {}
    assert field_only.receptive_field.size == 2 and field_only.losses == {}


def test_subject_notes_come_first_and_once():
    s = taps_subject("neither", 12, predicts="current")
    s.notes.append("a note of the subject")
    result = audit(s, checks=["causality"], max_examples=5)
    assert result.evidence_notes.count("a note of the subject") == 1
    assert result.notes[0] == "a note of the subject"


# ---------------------------------------------------------------------------------------------
# Arguments of audit()


@pytest.mark.parametrize("budget", [0, -1.0, math.nan])
def test_a_budget_must_be_positive(budget):
    with pytest.raises(AdapterError) as info:
        audit(taps_subject("neither", 8), budget=budget)
    assert info.value.problem == f"the time budget must be positive, got {budget}"
    assert info.value.fix == "pass --budget S"


def test_a_budget_and_shards_do_not_mix():
    with pytest.raises(AdapterError) as info:
        audit(taps_subject("neither", 8), budget=5.0, shard=(0, 2))
    assert info.value.problem == (
        "a time budget cannot be combined with shards (each shard would plan differently)"
    )
    assert info.value.fix == "drop --budget, or shard an audit with a fixed plan"


def test_shards_share_one_memory_budget(monkeypatch):
    seen = []

    def spy(subject, o):
        seen.append((memory.limit_bytes(), o.shard, o.budget, o.seed, o.max_examples, o.train,
                     o.exact, o.checks))
        return "result"

    monkeypatch.setattr(gather, "_audit", spy)
    s = taps_subject("neither", 8)
    assert audit(s, shard=[1, 3], seed=4, max_examples=7, train=True, exact=True) == "result"
    assert audit(s, shard=(0, 2), memory=0.5, checks=["loss"]) == "result"
    assert audit(s, budget=0.5) == "result"
    assert seen == [
        (memory.DEFAULT_CAP, (1, 3), None, 4, 7, True, True, CHECKS),
        (GIB // 2, (0, 2), None, 0, None, False, False, ("loss",)),
        (memory.default_limit_bytes(), None, 0.5, 0, None, False, False, CHECKS),
    ]


# ---------------------------------------------------------------------------------------------
# The gradient evidence: fallbacks and their notes


class Fixed32(nn.Module):
    """Causal, but computes in float32 whatever its weights: its float64 copy raises."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1))

    def forward(self, x):
        return shifted(F.linear(x.to(torch.float32), self.weight), -1)


def test_a_model_fixed_to_float32_gives_its_gradients_in_float32():
    s = make_subject(Fixed32(), grid=(8,), layout="BTC", predicts="current")
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, False, 0)
    assert len(result.evidence_notes) == 1
    note = result.evidence_notes[0]
    assert note.startswith("the float64 copy of the model raised (")
    assert note.endswith("): gradients taken in torch.float32")
    assert result.maps["eval"].seen.equal(torch.eye(8, dtype=torch.bool).roll(-1, 1).tril())
    assert result.coverage.gradient["eval"].outputs_mapped == 8


class ZeroGradient(nn.Module):
    """Reads x_{t-1} through a threshold only: differentiable, with zero gradients."""

    def forward(self, x):
        return x * 0 + (shifted(x, -1) > 0).to(x.dtype)


def test_a_model_without_gradients_leaves_the_verdict_to_the_perturbations():
    s = make_subject(ZeroGradient(), grid=(8,), layout="BTC", predicts="current")
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, True, 0)
    assert result.maps == {}
    assert result.evidence_notes == [
        "gradient evidence unavailable in training mode: the gradients are zero everywhere "
        "(a non-differentiable step such as round, argmax or a threshold, or a model that "
        "ignores its input); the perturbations decide"
    ]
    assert result.coverage == Coverage(gradient={"train": UNAVAILABLE})
    whole = audit(s, checks=["causality"], max_examples=5)
    assert (whole.mode, whole.causal) == ("strict", True) and "eval" not in whole.maps
    detached = taps_subject((), 8, steps=(-1,), predicts="current")  # no graph at all
    result = gathered(detached, ("causality",))
    _gradient_evidence(detached, result, False, 0)
    assert result.evidence_notes == [
        "gradient evidence unavailable in inference: the outputs do not depend "
        "differentiably on the inputs"
    ]
    assert result.coverage == Coverage(gradient={"eval": UNAVAILABLE})


def test_a_float64_pass_over_the_memory_budget_is_not_attempted():
    s = taps_subject("neither", 8, dtype=torch.float32, predicts="current")
    with memory.limited(1.0):
        result = gathered(s, ("causality",))
        result.sample_bytes = GIB // 2 + 1  # twice that in float64: just over
        _gradient_evidence(s, result, False, 0)
        exc = MemoryBudgetError("one float64 VJP pass (1 input)", GIB + 2, GIB, bound=True)
        assert result.evidence_notes == [
            f"gradient evidence unavailable in inference: {exc.problem} ({exc.fix})"
        ]
        assert result.coverage == Coverage(gradient={"eval": UNAVAILABLE})
        assert result.maps == {}
        result = gathered(s, ("causality",))
        result.sample_bytes = GIB // 2  # exactly the budget: it fits
        _gradient_evidence(s, result, False, 0)
        assert "eval" in result.maps and result.evidence_notes == []
        double = taps_subject("neither", 8, predicts="current")  # float64: no copy to make
        result = gathered(double, ("causality",))
        result.sample_bytes = GIB
        _gradient_evidence(double, result, False, 0)
        assert "eval" in result.maps and result.evidence_notes == []


def test_the_map_falls_back_to_one_input_when_three_do_not_fit(monkeypatch):
    s = taps_subject("neither", 8, predicts="current")
    real = gather._map
    sizes = []

    def tight(subject, x, g, probes):
        sizes.append(len(x))
        if len(x) > 1:
            raise MemoryBudgetError("one float64 VJP pass (3 inputs)", 3 * GIB, GIB)
        return real(subject, x, g, probes)

    monkeypatch.setattr(gather, "_map", tight)
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, False, 0)
    assert sizes == [3, 1]
    assert result.coverage.gradient["eval"].inputs == 1
    assert result.maps["eval"].seen.sum() == 7 + 5  # x_{t-1} and x_{t-3}


def test_a_map_that_never_fits_is_unavailable_with_the_fix(monkeypatch):
    s = taps_subject("neither", 8, predicts="current")

    def never(subject, x, g, probes):
        raise MemoryBudgetError("one float64 VJP pass (1 input)", 3 * GIB, GIB)

    monkeypatch.setattr(gather, "_map", never)
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, False, 0)
    exc = MemoryBudgetError("one float64 VJP pass (1 input)", 3 * GIB, GIB)
    assert result.evidence_notes == [
        f"gradient evidence unavailable in inference: {exc.problem} ({exc.fix})"
    ]
    assert result.coverage == Coverage(gradient={"eval": UNAVAILABLE})


def test_a_model_error_in_the_map_is_a_note():
    calls = []

    def model(x):  # not a module: no float64 copy; raises from its third call on
        calls.append(len(x))
        if len(calls) > 2:
            raise RuntimeError("broken after two calls")
        return shifted(x, -1)

    s = make_subject(model, grid=(8,), layout="BTC", predicts="current")
    result = gathered(s, ("causality",))
    calls.append(0)
    calls.append(0)
    _gradient_evidence(s, result, False, 0)
    assert result.evidence_notes[0] == (
        "the model is not an nn.Module: gradients taken in its own dtype"
    )
    assert result.evidence_notes[1].startswith("gradient evidence unavailable in inference: ")
    assert "broken after two calls" in result.evidence_notes[1]
    assert len(calls) == 3  # one failed attempt: the model itself has no other dtype to try
    with pytest.raises(ModelError) as info:  # the problem, as the model's error names it
        gather.forward(s, s.draw_inputs(3, torch.Generator()), seed=0, grad=True)
    assert result.evidence_notes[1] == (
        f"gradient evidence unavailable in inference: {info.value.problem}"
    )
    assert result.coverage == Coverage(gradient={"eval": UNAVAILABLE})


def test_sampled_rows_on_one_input_are_reported():
    wide_and_big = policy(max_map_passes=0, big_vjp=0)  # too wide to colour, a "big" VJP
    n = 40
    s = taps_subject("neither", n, predicts="current")
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, False, 0, policy=wide_and_big)
    dmap = result.maps["eval"]
    probes = gradients.probe_positions(s.grid).tolist()
    sampled = stratified(n, DEFAULT_POLICY.sampled_outputs, 0)
    assert dmap.outputs.tolist() == sorted(set(probes) | set(sampled))
    assert (dmap.method, dmap.row_inputs) == ("sampled", 1)
    assert result.coverage.gradient["eval"] == MapCoverage(
        outputs_mapped=len(dmap.outputs),
        outputs_total=n,
        method="sampled",
        passes=dmap.passes,
        inputs=3,
        sampled_row_inputs=1,
    )
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, False, 0, policy=policy(max_map_passes=0, big_vjp=1 << 40))
    assert result.maps["eval"].row_inputs == 3
    assert result.coverage.gradient["eval"].sampled_row_inputs is None


# ---------------------------------------------------------------------------------------------
# The time budget's plan, on a fixed clock


def test_no_time_for_one_vjp_skips_the_gradients():
    s = taps_subject("neither", 12, predicts="current")
    result = gathered(s)
    _gradient_evidence(s, result, False, 0, FixedPlan(left=0.0))
    assert result.maps == {}
    assert result.evidence_notes == [
        "gradient evidence skipped in inference: one VJP pass would not fit the time budget; "
        "the perturbations decide"
    ]
    assert result.coverage == Coverage(gradient={"eval": "skipped (budget)"}, budgeted=True)


def test_a_budget_for_a_few_probe_rows_takes_them_on_one_input():
    n = 40
    s = taps_subject("neither", n, predicts="current")
    probes = gradients.probe_positions(s.grid)
    # room for 5 rows of one input (a row: VJP_FACTOR forward passes), not for all on three
    left = 5 * plan.VJP_FACTOR / plan.MAP_SHARE + 1e-6
    result = gathered(s)
    _gradient_evidence(s, result, False, 0, FixedPlan(left=left))
    dmap = result.maps["eval"]
    assert len(probes) > 5
    picks = torch.tensor(stratified(len(probes), 3, 0))
    assert set(probes[picks][:5].tolist()) <= set(dmap.outputs.tolist())
    assert result.coverage.budgeted is True
    assert result.coverage.gradient["eval"].inputs == 1


def test_an_ample_budget_changes_nothing_in_the_map():
    n = 40
    s = taps_subject("neither", n, predicts="current")
    plain, timed = gathered(s), gathered(s)
    _gradient_evidence(s, plain, False, 0)
    _gradient_evidence(s, timed, False, 0, FixedPlan(left=1e9, forward=1e-9))
    assert timed.coverage == plain.coverage and not timed.coverage.budgeted
    assert timed.maps["eval"].seen.equal(plain.maps["eval"].seen)


def test_the_sweep_takes_the_cuts_it_can_afford():
    n = 40
    s = taps_subject("neither", n, predicts="current")
    result = gathered(s, ("loss",))
    # passes of half a second: 0.55 * left - 6 noise-floor passes = 8.5 passes: the first, the
    # last and 6 strata
    left = (8.5 + plan.NOISE_FLOOR_PASSES) * 0.5 / plan.SWEEP_SHARE
    _perturbation_evidence(s, result, False, 0, 5, FixedPlan(left=left, forward=0.5))
    cuts = stratified(n, 6, 1)
    assert result.coverage == Coverage(
        budgeted=True, cuts_stratified=True, loss_checked=len(cuts), loss_total=n
    )
    assert result.perturbations == {}  # the loss check alone keeps no perturbation report
    assert sorted({r["position"] for r in result.losses["current"].positions}) == cuts


def test_the_sweep_within_an_ample_budget_is_the_whole_sweep():
    n = 12
    s = taps_subject("future", n, predicts="next")
    for passes in (n + 0.5, 1e9):  # just room for every cut, and plenty
        result = gathered(s, ("causality", "loss"))
        left = (passes + plan.NOISE_FLOOR_PASSES) * 0.5 / plan.SWEEP_SHARE
        _perturbation_evidence(s, result, False, 0, 5, FixedPlan(left=left, forward=0.5))
        assert result.coverage == Coverage(loss_checked=n, loss_total=n)
        assert result.perturbations["eval"].cuts_swept == n
    result = gathered(s, ("causality",), train=True)
    _perturbation_evidence(s, result, True, 0, 5)
    assert set(result.perturbations) == {"train"} and result.losses == {}
    assert result.coverage == Coverage()


def test_large_grids_sample_their_cuts_unless_exact():
    small = policy(exhaustive_positions=16, sampled_cuts=5)
    n = 30
    s = taps_subject("neither", n, predicts="current")
    result = gathered(s, ("causality",))
    _perturbation_evidence(s, result, False, 0, 5, policy=small)
    assert result.coverage == Coverage(cuts_stratified=True)
    assert result.perturbations["eval"].cuts_swept == len(stratified(n, 5, 1))
    exact = gathered(s, ("causality",), exact=True)
    _perturbation_evidence(s, exact, False, 0, 5, policy=small)
    assert exact.coverage == Coverage() and exact.perturbations["eval"].cuts_swept == n


def test_a_budgeted_audit_reports_its_budget_and_forward_cost():
    s = taps_subject("neither", 12, predicts="current")
    result = audit(s, budget=120, max_examples=5)
    cov = result.coverage
    assert cov.budget_seconds == 120.0 and isinstance(cov.budget_seconds, float)
    assert 0 < cov.forward_seconds == round(cov.forward_seconds, 6) < 1
    assert cov.exhaustive is True and not cov.budgeted
    assert (result.mode, result.passed) == ("strict", True)


# ---------------------------------------------------------------------------------------------
# Validation and progress


class Recording(nn.Module):
    """Causal; records each call's batch size and mode, and (``in_place``) scales its input."""

    def __init__(self, in_place=False):
        super().__init__()
        self.calls, self.inputs, self.in_place = [], [], in_place

    def forward(self, x):
        self.calls.append((len(x), self.training))
        self.inputs.append(x.detach().clone())
        if self.in_place:
            x.mul_(2)
        return shifted(x, -1)


def test_validation_runs_one_batch_of_two_in_inference():
    model = Recording()
    s = make_subject(model, grid=(8,), layout="BTC", predicts="current")
    model.train()
    model.calls.clear()
    model.inputs.clear()
    notes = []
    sample_bytes = gather.validate(s, 3, notes)
    assert model.calls == [(2, False), (2, False)] and notes == []
    assert model.training  # the model's own mode is given back
    x = s.draw_inputs(2, torch.Generator().manual_seed(3))
    assert torch.allclose(model.inputs[0].double(), x.double(), atol=1e-6)
    _, cost = memory.measure(lambda: gather.forward(s, x, seed=3))
    assert sample_bytes == cost.per_copy // 2  # per sample of the batch of two
    assert isinstance(sample_bytes, int)  # whole bytes
    # with a time budget, one sample's forward pass is timed (best of two)
    model.calls.clear()
    timing = FixedPlan(left=10.0, forward=0.0)
    gather.validate(s, 3, notes, timing)
    assert model.calls == [(2, False), (2, False), (1, False), (1, False)]
    assert 0 < timing.forward < 1


def test_validation_notes_a_model_that_changes_its_input():
    s = make_subject(Recording(in_place=True), grid=(8,), layout="BTC", predicts="current")
    notes = []
    gather.validate(s, 0, notes)
    assert notes == [
        "the model changes its input in place (the audit passes it a fresh copy each time)"
    ]


def test_progress_phases_plan_the_passes_they_run(monkeypatch):
    log = []
    monkeypatch.setattr(bars.Progress, "phase", lambda self, name, planned: log.append(
        [name, planned, 0]))
    monkeypatch.setattr(bars.Progress, "advance", lambda self, n=1: log[-1].__setitem__(
        2, log[-1][2] + n))
    n = 40
    s = taps_subject("neither", n, predicts="current")
    with bars.showing(True):
        _gradient_evidence(s, gathered(s), False, 0)
    probes = len(gradients.probe_positions(s.grid))
    assert [name for name, _, _ in log] == ["map: probe rows", "map: colors"]
    assert log[0][1] == probes
    assert all(planned == done for _, planned, done in log), log
    log.clear()
    with bars.showing(True):
        result = gathered(s)
        _gradient_evidence(s, result, False, 0, policy=policy(max_map_passes=0))
    assert [name for name, _, _ in log] == ["map: probe rows", "map: sampled rows"]
    assert log[1][1] == len(result.maps["eval"].outputs) - probes
    assert all(planned == done for _, planned, done in log), log


# ---------------------------------------------------------------------------------------------
# Evidence the model cannot give, and the whole audit within a budget


class FailsOnZeros(nn.Module):
    """Runs on random inputs, raises on the sweep's zeros; ``steps``: reads the past through a
    threshold only (no gradient either)."""

    def __init__(self, steps=False):
        super().__init__()
        self.steps = steps

    def forward(self, x):
        if (x == 0).any():
            raise RuntimeError("zeros are not allowed")
        past = shifted(x, -1)
        return x * 0 + (past > 0).to(x.dtype) if self.steps else past


def test_perturbations_the_model_cannot_run_leave_the_gradients_to_decide():
    s = make_subject(FailsOnZeros(), grid=(8,), layout="BTC", predicts="current")
    result = audit(s, checks=["causality"], max_examples=5)
    assert (result.mode, result.causal) == ("strict", True)
    assert result.perturbations == {}
    assert result.coverage.perturbation_unavailable == ["eval"]
    (note,) = [n for n in result.notes if n.startswith("perturbation evidence")]
    assert note.startswith("perturbation evidence unavailable in inference: ")
    assert "zeros are not allowed" in note


def test_a_model_that_gives_no_evidence_at_all_raises_its_error():
    s = make_subject(FailsOnZeros(steps=True), grid=(8,), layout="BTC", predicts="current")
    with pytest.raises(ModelError, match="zeros are not allowed"):
        audit(s, checks=["causality"], max_examples=5)
    # without the causality check the error is a note: the loss check has no rows
    result = audit(s, checks=["loss", "receptive_field"], max_examples=5)
    assert result.loss is None and result.coverage.perturbation_unavailable == ["eval"]


def test_the_loss_check_runs_its_sweep_in_inference_only():
    model = Recording()
    s = make_subject(model, grid=(8,), layout="BTC", predicts="current")
    model.calls.clear()
    result = audit(s, checks=["loss"], train=True, max_examples=5)
    assert result.loss.holds
    assert {training for _, training in model.calls} == {False}


def test_training_mode_certificate_covers_training_mode():
    s = taps_subject("neither", 8, predicts="current")
    result = audit(s, checks=["causality", "certificate"], train=True, max_examples=5)
    assert result.certificate.train is True and result.certificate.proved
    assert (result.mode, result.passed) == ("strict", True)
    assert 0 < result.seconds < 600


class NoTimeLeft(plan.Plan):
    """A budget already spent once the forward pass is measured."""

    def left(self):
        return 0.0


def test_a_spent_budget_still_sweeps_the_first_and_last_cut(monkeypatch):
    monkeypatch.setattr(plan, "Plan", NoTimeLeft)
    n = 12
    s = taps_subject("future", n, predicts="next")
    result = audit(s, checks=["causality"], budget=0.5, max_examples=5)
    cov = result.coverage
    assert cov.gradient == {"eval": "skipped (budget)"}
    assert (cov.budgeted, cov.cuts_stratified, cov.exhaustive) == (True, True, False)
    assert cov.budget_seconds == 0.5
    report = result.perturbations["eval"]
    assert (report.cuts_swept, report.examples) == (2, 0)
    assert result.maps == {}
    # the last cut replaces x_{n-1}: a future input of output n - 3
    assert (result.mode, result.causal) == ("none", False)


# ---------------------------------------------------------------------------------------------
# The map's plan within a budget, on a clock the test sets


class Clock:
    """``perf_counter`` that advances ``step`` seconds a call: the probe rows of a map of
    ``probes`` rows then took ``step / probes`` seconds a row."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def perf_counter(self):
        self.now += self.step
        return self.now


@pytest.mark.parametrize("affordable, method", [(8, "colored"), (7, "sampled"), (30, "colored")])
def test_the_map_colours_only_when_its_passes_fit(monkeypatch, affordable, method):
    """40 positions, 9 probe rows at one second a row, 4 colors: the colored map needs 8 more
    passes; with 7 the map samples 5 outputs (7 less the first and the last) besides the
    probes."""
    n, seed = 40, 0
    s = taps_subject("neither", n, predicts="current")
    probes = gradients.probe_positions(s.grid)
    monkeypatch.setattr(gather, "time", Clock(step=float(len(probes))))
    result = gathered(s)
    timing = FixedPlan(left=(affordable + 0.5) / plan.MAP_SHARE, forward=1e-9)
    _gradient_evidence(s, result, False, seed, timing)
    dmap = result.maps["eval"]
    assert dmap.method == method
    if method == "colored":
        assert dmap.outputs.tolist() == list(range(n))
        assert not result.coverage.budgeted
    else:
        sampled = stratified(n, affordable - 2, seed)
        assert dmap.outputs.tolist() == sorted(set(probes.tolist()) | set(sampled))
        assert result.coverage.budgeted is True


def test_the_map_with_no_time_after_its_probes_keeps_the_probe_rows(monkeypatch):
    n = 40
    s = taps_subject("neither", n, predicts="current")
    probes = gradients.probe_positions(s.grid)
    monkeypatch.setattr(gather, "time", Clock(step=float(len(probes))))
    result = gathered(s)
    _gradient_evidence(s, result, False, 0, FixedPlan(left=1.0, forward=1e-9))
    dmap = result.maps["eval"]
    assert (dmap.method, dmap.outputs.tolist()) == ("sampled", probes.tolist())
    assert result.coverage.budgeted is True
    assert result.coverage.gradient["eval"].outputs_mapped == len(probes)


def test_budgeted_probe_rows_are_the_first_the_last_and_evenly_spread(monkeypatch):
    n = 40
    s = taps_subject("neither", n, predicts="current")
    probes = gradients.probe_positions(s.grid)
    asked = []
    real = gradients.plain_map

    def spy(subject, x, *, outputs, seed, **options):
        asked.append(outputs.tolist())
        return real(subject, x, outputs=outputs, seed=seed, **options)

    monkeypatch.setattr(gradients, "plain_map", spy)
    left = 5 * plan.VJP_FACTOR / plan.MAP_SHARE + 1e-6  # 5 rows of one input
    _gradient_evidence(s, gathered(s), False, 2, FixedPlan(left=left))
    picks = torch.tensor(stratified(len(probes), 3, 2))
    assert asked[0] == probes[picks][:5].tolist()
    assert asked[0][0] == 0 and asked[0][-1] == n - 1 and len(asked[0]) < len(probes)


def test_probe_rows_that_just_fit_stay_on_three_inputs():
    n = 40
    s = taps_subject("neither", n, predicts="current")
    probes = len(gradients.probe_positions(s.grid))
    row = plan.VJP_FACTOR * 1.0
    left = probes * 3 * row / plan.MAP_SHARE
    assert plan.MAP_SHARE * left == probes * 3 * row  # exactly the map's share
    result = gathered(s)
    _gradient_evidence(s, result, False, 0, FixedPlan(left=left, forward=1.0))
    assert result.coverage.gradient["eval"].inputs == 3


@pytest.mark.parametrize("below, rows", [(-1, 1), (1, 3)])
def test_sampled_rows_go_to_one_input_above_the_big_vjp(monkeypatch, below, rows):
    """big_vjp is per input: one input's VJP just above it samples rows on one input."""
    s = taps_subject("neither", 40, predicts="current")
    x = s.draw_inputs(3, torch.Generator().manual_seed(7))
    per_input = gradients.vjp_bytes(s, x) // 3
    result = gathered(s)
    wide = policy(max_map_passes=0, big_vjp=per_input + below)
    _gradient_evidence(s, result, False, 0, policy=wide)
    assert result.maps["eval"].row_inputs == rows


class Recording64(Recording):
    """Recording, in float64 (the map runs on the model itself, not on a copy)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("unit", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return super().forward(x) * self.unit


@pytest.mark.parametrize("training", [False, True])
def test_the_map_runs_on_three_seeded_inputs_in_the_asked_mode(training):
    model = Recording64()
    s = make_subject(model, grid=(8,), layout="BTC", predicts="current")
    model.calls.clear()
    model.inputs.clear()
    result = gathered(s, ("causality",))
    _gradient_evidence(s, result, training, 5)
    x = s.draw_inputs(3, torch.Generator().manual_seed(5 + 7))
    assert model.inputs[0].shape[-3:] == (3, 8, 1) or model.inputs[0].shape[0] % 3 == 0
    assert torch.equal(model.inputs[0].reshape(-1, 3, 8, 1)[0], x)
    assert {mode for _, mode in model.calls} == {training}


@pytest.mark.parametrize("step, outputs", [(10.0, [0]), (9.0, [0, 39])])
def test_one_probe_row_and_room_for_at_most_one_more(monkeypatch, step, outputs):
    """Time for one probe row (the first output); then the row took ``step`` seconds: with no
    room for another the map is that row, with room for one the sample adds the last output
    (output 0 sees x_0: its probe row is not silent)."""
    n = 40
    s = taps_subject("present", n, predicts="next")
    monkeypatch.setattr(gather, "time", Clock(step=step))
    result = gathered(s)
    left = 1.5 * plan.VJP_FACTOR / plan.MAP_SHARE  # one and a half rows of one input
    _gradient_evidence(s, result, False, 0, FixedPlan(left=left, forward=1.0))
    dmap = result.maps["eval"]
    assert (dmap.method, dmap.outputs.tolist()) == ("sampled", outputs)
    assert result.coverage.budgeted is True
    assert result.coverage.gradient["eval"].inputs == 1


def test_the_sweep_runs_on_the_audits_seed():
    from properties.evidence.perturbation import perturbation_evidence

    n = 12
    s = taps_subject("future", n, predicts="next")
    result = gathered(s, ("causality",))
    _perturbation_evidence(s, result, False, 3, 5)
    direct = {
        seed: perturbation_evidence(s, cut_list=list(range(n)), max_examples=5, seed=seed).sweep
        for seed in (0, 3)
    }
    assert direct[0] != direct[3]  # the effects depend on the random inputs
    assert result.perturbations["eval"].sweep == direct[3]
