"""The colored dependency map equals the plain one (one VJP per output), on the registry's
models, on random architectures, and on leaky models; and it costs fewer passes."""

import pytest
import torch
from hypothesis import given

from properties import make_subject, strategies
from properties.evidence.gradients import (
    GradientUnavailable,
    colored_map,
    dependency_map,
    plain_map,
    probe_positions,
)
from properties.extra.architectures import Architecture, PlantedLeak
from properties.extra.zoo import zoo_subject
from properties.subject.calls import float64_copy


def both_maps(subject, seed=0):
    """Plain and colored maps; the colored one never falls back to plain here."""
    s64, _ = float64_copy(subject)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(seed))
    colored = colored_map(s64, x, seed=seed, max_colors_fraction=1.0)
    assert colored.method == "colored"
    return plain_map(s64, x, seed=seed), colored


def roomy(arch):
    """A grid several receptive fields wide, so that colors hold many outputs each."""
    return tuple(3 * g for g in arch.grid) if arch.dims == 1 else tuple(2 * g for g in arch.grid)


@pytest.mark.parametrize(
    "name, grid",
    [
        ("nettoy1d", (40,)),
        ("nettoy1d_dilated", (80,)),
        ("pixelcnn", (14, 20)),
        ("pixelcnn_pe", (14, 20)),
    ],
)
def test_colored_map_equals_plain_map_on_the_zoo(name, grid):
    plain, colored = both_maps(zoo_subject(name, grid))
    assert torch.equal(plain.seen, colored.seen)
    assert colored.passes < plain.passes


@given(strategies.causal_architectures(max_depth=3))
def test_colored_map_equals_plain_map_on_random_architectures(arch):
    subject = make_subject(arch.build(), grid=roomy(arch), layout=arch.layout)
    plain, colored = both_maps(subject)
    assert torch.equal(plain.seen, colored.seen)


@given(strategies.planted_bugs(bugs=("no_shift", "same_padding", "mask_open_below")))
def test_colored_map_equals_plain_map_on_leaky_models(arch):
    subject = make_subject(arch.build(), grid=roomy(arch), layout=arch.layout)
    plain, colored = both_maps(subject)
    assert torch.equal(plain.seen, colored.seen)


def test_colored_map_settles_shared_inputs_exactly():
    """A leak the probe does not see (output 8, not a probe position, also reads input 30)
    makes two outputs of one color share an input: the ratio test must notice and settle that
    color with exact rows, not hand input 30 to the wrong output."""

    class HiddenLeak(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Architecture(1, (2,), (1,)).build()

        def forward(self, x):  # (B, 1, T) -> (B, 3, T)
            y = self.net(x)
            leak = torch.zeros_like(y)
            leak[..., 8] = 0.1 * x[..., 30]
            return y + leak

    subject = make_subject(HiddenLeak(), grid=(40,), layout="BCT->BCT")
    assert 8 not in probe_positions(subject.grid).tolist()
    plain, colored = both_maps(subject)
    assert torch.equal(plain.seen, colored.seen)
    assert colored.seen[8, 30]
    assert colored.passes > 2 * 3 + len(probe_positions(subject.grid))  # settled with plain rows


def test_non_differentiable_model_has_no_gradient_evidence():
    class Rounded(torch.nn.Module):
        def forward(self, x):
            return torch.round(x).detach()

    subject = make_subject(Rounded(), grid=(8,), layout="BCT->BCT")
    with pytest.raises(GradientUnavailable):
        dependency_map(subject, subject.draw_inputs(2, torch.Generator()))


def test_threshold_leak_has_no_gradient():
    subject = make_subject(
        PlantedLeak(Architecture(1, (2,), (1,)).build(), "threshold"), grid=(16,), layout="BCT"
    )
    plain, colored = both_maps(subject)
    future = torch.triu(torch.ones(16, 16, dtype=torch.bool))
    assert not (plain.seen & future).any()
    assert torch.equal(plain.seen, colored.seen)
