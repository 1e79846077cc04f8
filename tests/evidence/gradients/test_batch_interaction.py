"""Gradient maps of models whose samples interact (a batch mean): one copy per VJP pass, so that
no copy's backward shows another copy's dependencies as its own; independent samples still share
passes."""

import pytest
import torch
from known_models import shifted
from torch import nn

from properties import audit, make_subject
from properties.evidence.gradients import dependency_map


class PastOfOthers(nn.Module):
    """Causal in both modes, but samples interact: output (b, t) reads every sample's x_{t-1}.
    Stacking the cuts of a sweep in one pass would make one cut's zeros move another's past.
    A float64 weight makes it a float64 subject: no float64 confirmation (which reruns each
    perturbed copy alone) stands between the sweep and its stacked passes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        past = shifted(x, -1) * self.weight
        return past + past.mean(0, keepdim=True)


class WidePastOfOthers(nn.Module):
    """Causal in both modes, samples interact: output (b, t) reads every sample's x_{<t}. Its
    receptive field is too wide to colour, so its map is the plain one: one row per output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        past = torch.cumsum(shifted(x, -1), 1) * self.weight
        return past + past.mean(0, keepdim=True)


class MixedPast(nn.Module):
    """``cumsum(x_{<t})`` plus ``mix`` times its batch mean, recording the batch size of every
    pass that builds a graph (the VJP passes)."""

    def __init__(self, mix):
        super().__init__()
        self.mix, self.sizes = mix, []

    def forward(self, x):
        if torch.is_grad_enabled():
            self.sizes.append(x.shape[0])
        past = torch.cumsum(shifted(x, -1), 1)
        return past + self.mix * past.mean(0, keepdim=True)


@pytest.mark.parametrize(
    "model, pairs",
    [
        pytest.param(PastOfOthers, lambda t, s: s == t - 1, id="colored"),  # one color
        pytest.param(WidePastOfOthers, lambda t, s: s < t, id="plain"),
    ],
)
@pytest.mark.parametrize("n", [10, 40])
def test_interacting_samples_give_no_false_gradient_pairs(model, pairs, n):
    """A map that stacked copies of the inputs for different outputs in one pass would hand
    one copy's gradient the dependencies of another copy's output through the batch mean: false
    future pairs. At 40 positions the probe's 9 rows and the plain map's 32 would stack
    (chunks of ceil(rows / MIN_CHUNKS)); the map measures the interaction and does not."""
    subject = make_subject(model().double(), grid=(n,), layout="BTC", predicts="current")
    result = audit(subject, checks=("causality",), max_examples=10)
    assert (result.mode, result.causal, result.violations) == ("strict", True, [])
    assert result.perturbations["eval"].batch_independent is False
    expected = torch.tensor([[bool(pairs(t, s)) for s in range(n)] for t in range(n)])
    assert torch.equal(result.maps["eval"].seen, expected)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    plain = dependency_map(subject, x, method="plain")
    assert torch.equal(plain.seen, expected)


def test_independent_samples_still_share_vjp_passes():
    """The interaction decides the stacking: 40 plain rows of 3 inputs go 5 copies to a pass
    (15 samples) when the samples are independent, one copy (3 samples) when they interact.
    Passes of 1 sample: the cost probe; of 3: the random directions' pass."""
    n = 40
    sizes = {}
    for mix in (0.0, 1.0):
        model = MixedPast(mix).double()
        subject = make_subject(model, grid=(n,), layout="BTC", predicts="current")
        x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
        dmap = dependency_map(subject, x, method="plain")
        assert torch.equal(dmap.seen, torch.ones(n, n, dtype=torch.bool).tril(-1))
        assert dmap.passes == n
        sizes[mix] = set(model.sizes)
    assert sizes == {0.0: {1, 3, 15}, 1.0: {1, 3}}
