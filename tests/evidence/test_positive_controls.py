"""Positive controls: every kind of leak is caught, by the evidence that can see it, and nothing
is flagged on models that do not leak (dropout in training mode included)."""

import pytest
import torch
from torch import nn

from properties import audit, make_subject
from properties.evidence.perturbation import Runner, hypothesis_search
from properties.extra.architectures import Architecture, PlantedLeak
from properties.subject.calls import model_mode

GRID = (24,)


def causal_net():
    return Architecture(1, (2, 2), (1, 2), seed=1).build()


def subject_of(model, **options):
    return make_subject(model, grid=GRID, layout="BCT", **options)


def evidences(result):
    return {v.evidence for v in result.violations}


def test_causal_control_passes_strict():
    result = audit(subject_of(causal_net(), predicts="current"), max_examples=20)
    assert (result.mode, result.causal, result.violations) == ("strict", True, [])


def test_missing_shift_is_inclusive_and_fails_current():
    model = Architecture(1, (2, 2), (1, 2), bug="no_shift").build()
    result = audit(subject_of(model, predicts="current"), max_examples=20)
    assert result.mode == "inclusive" and not result.causal
    assert {"gradient", "perturbation"} <= evidences(result)
    # the same model is fine for a next-value predictor
    assert audit(subject_of(model, predicts="next"), max_examples=20).causal


def test_symmetric_padding_sees_the_future():
    arch = Architecture(1, (2, 5), (1, 1), bug="same_padding")  # sees t+1 after the shift
    assert arch.expected_mode == "none"
    result = audit(subject_of(arch.build()), max_examples=20)
    assert result.mode == "none" and not result.causal
    assert not result.loss.holds


def test_threshold_leak_is_seen_by_perturbations_only():
    model = PlantedLeak(causal_net(), "threshold")
    result = audit(subject_of(model), max_examples=30)
    assert result.mode == "none"
    assert evidences(result) == {"perturbation"}  # a step function has no gradient


def test_leak_of_large_future_values_needs_a_wide_search():
    model = PlantedLeak(causal_net(), "large")
    result = audit(subject_of(model), max_examples=50)
    assert result.mode == "none"
    assert "gradient" not in evidences(result)  # inputs of ordinary size never reach it
    counterexample = result.perturbations["eval"].counterexamples["future"]
    assert counterexample.magnitude >= 100


def test_tiny_leak_is_caught():
    model = PlantedLeak(causal_net(), "linear", scale=1e-4)
    result = audit(subject_of(model), max_examples=20)
    assert result.mode == "none"
    assert {"gradient", "perturbation"} <= evidences(result)
    effects = [v.effect for v in result.violations if v.evidence == "perturbation"]
    assert 0 < min(effects) < 1e-2


def test_batchnorm_over_time_leaks_in_training_mode_only():
    model = Architecture(1, (2, 2), (1, 2), bug="batchnorm_over_time").build()
    assert audit(subject_of(model), max_examples=10).mode == "strict"
    result = audit(subject_of(model), train=True, max_examples=10)
    assert result.mode == "none"
    assert {v.evidence for v in result.violations} >= {"perturbation/train"}
    assert all(v.evidence.endswith("/train") for v in result.violations)


def test_dropout_in_training_mode_is_not_a_leak():
    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = causal_net()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.net(x))

    result = audit(subject_of(Dropped(), predicts="current"), train=True, max_examples=20)
    assert result.mode == "strict" and result.causal


def test_audit_leaves_the_model_as_it_found_it():
    model = Architecture(1, (2, 2), (1, 2), bug="batchnorm_over_time").build()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    audit(subject_of(model), train=True, max_examples=5)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hypothesis_shrinks_a_leak_to_its_earliest_cut():
    """A leak that starts at output 15 (seeing x_16): the minimal cut is 16, found by the search
    alone (no sweep), with the gentlest kind and the smallest magnitude."""
    model = PlantedLeak(causal_net(), "late", start=15)
    subject = subject_of(model)
    runner = Runner(subject, seed=0)
    with model_mode(subject, train=False):
        violation, p, examples = hypothesis_search(runner, "future", max_examples=100, seed=3)
    assert p is not None, f"not found in {examples} examples"
    assert p.cut == 16
    assert (p.kind, p.magnitude) == ("add", 1e-3)
    assert (violation.output, violation.input) == (15, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_floor_is_measured_and_small(dtype):
    result = audit(subject_of(causal_net().to(dtype)), checks=["causality"], max_examples=5)
    report = result.perturbations["eval"]
    assert report.batch_independent
    assert report.noise_floor < (1e-5 if dtype == torch.float32 else 1e-12)


def test_float32_rounding_is_not_a_leak():
    """``cumsum(h) - h`` never depends on ``h_t`` mathematically, but in float32 its last bits
    do; the float64 confirmation dismisses those changes (and says so)."""

    class ExclusiveSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 4)

        def forward(self, x):  # (B, T, 1) -> (B, T, 4)
            h = self.lin(x)
            return torch.cumsum(h, 1) - h

    subject = make_subject(ExclusiveSum(), grid=GRID, layout="BTC", predicts="current")
    result = audit(subject, max_examples=30)
    assert (result.mode, result.causal) == ("strict", True)
    assert any("vanished in float64" in note for note in result.notes)
