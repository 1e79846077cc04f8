"""causal/sample.py: the synthesis loop of slide 17, its RNG discipline and the pictures."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from causal import registry
from causal.layers import shift_right
from causal.sample import GridError, check_grid, full_recompute_step, sample, save_picture


class CountUp(nn.Module):
    """A causal stand-in whose prediction is certain: ``x_t = (x_{t-1} + 1) mod K`` in raster
    order. Sampling it must write 1, 2, 3, ... whatever the seed, in raster order."""

    def __init__(self, nb_classes):
        super().__init__()
        self.nb_classes = nb_classes
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the model a dtype and device

    def forward(self, x):  # (B, 1, *grid) -> (B, *grid, K)
        flat = shift_right(x.flatten(1))  # (B, T): previous value in raster order
        target = (flat.long() + 1) % self.nb_classes
        logits = 100.0 * F.one_hot(target, self.nb_classes).to(x.dtype) + self.dummy
        return logits.view(*x.shape[:1], *x.shape[2:], self.nb_classes)


@pytest.mark.parametrize("grid", [(7,), (3, 4)])
def test_sampling_fills_the_grid_in_raster_order(grid):
    samples = sample(CountUp(5), 2, grid, seed=0)
    expected = (torch.arange(1, 1 + torch.Size(grid).numel()) % 5).view(grid)
    assert samples.dtype == torch.long and samples.shape == (2, *grid)
    assert torch.equal(samples[0], expected) and torch.equal(samples[1], expected)


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    return registry.get("nettoy1d").make(grid=(16,))


@given(seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_samples(toy_model, seed):
    a = sample(toy_model, 3, (16,), seed=seed)
    b = sample(toy_model, 3, (16,), seed=seed)
    assert torch.equal(a, b)


def test_different_seeds_give_different_samples(toy_model):
    a = sample(toy_model, 4, (16,), seed=0)
    b = sample(toy_model, 4, (16,), seed=1)
    assert not torch.equal(a, b)


def test_sampling_leaves_the_global_rng_and_the_model_alone(toy_model):
    state = torch.get_rng_state()
    before = {k: v.clone() for k, v in toy_model.state_dict().items()}
    sample(toy_model, 2, (16,), seed=5, dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, toy_model.state_dict()[k]) for k, v in before.items())
    assert next(toy_model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_values_are_in_range_for_every_model(name):
    spec = registry.get(name)
    grid = (12,) if spec.dims == 1 else (5, 6)
    torch.manual_seed(0)
    model = spec.make(nb_classes=9, grid=grid)
    samples = sample(model, 3, grid, seed=1)
    assert samples.shape == (3, *grid)
    assert samples.min() >= 0 and samples.max() < 9


def test_float64_works_and_matches_float32_draws_mostly(toy_model):
    s64 = sample(toy_model, 8, (16,), seed=2, dtype=torch.float64)
    s32 = sample(toy_model, 8, (16,), seed=2, dtype=torch.float32)
    assert s64.dtype == torch.long and s64.shape == (8, 16)
    # same RNG stream, nearly identical probabilities: the first draws agree
    assert torch.equal(s64[:, 0], s32[:, 0])


def test_the_step_returns_the_logits_at_t():
    model = CountUp(4)
    x = torch.tensor([[[0.0, 1.0, 3.0]]])
    step = full_recompute_step(model)
    assert step(x, 2).argmax(-1).item() == 2  # (x_1 + 1) mod 4
    assert step(x, 0).argmax(-1).item() == 1  # the shifted-in zero


def test_a_custom_stepper_can_be_plugged_in():
    calls = []

    def stepper(model):
        full = full_recompute_step(model)

        def step(x, t):
            calls.append(t)
            return full(x, t)

        return step

    sample(CountUp(3), 1, (2, 3), seed=0, stepper=stepper)
    assert calls == list(range(6))


@pytest.mark.parametrize(
    "name, grid, message",
    [
        ("nettoy1d", (1,), "too small"),
        ("nettoy1d", (8, 8), "works on sequences"),
        ("pixelcnn", (8,), "works on images"),
        ("pixelcnn_pe", (8, 8), "positional encoding built for grid \\(28, 28\\)"),
    ],
)
def test_check_grid_refuses_what_the_model_cannot_run_on(name, grid, message):
    spec = registry.get(name)
    with pytest.raises(GridError, match=message):
        check_grid(spec.make(), grid, dims=spec.dims)


def test_sample_itself_checks_the_grid():
    with pytest.raises(GridError, match="positional encoding"):
        sample(registry.get("pixelcnn_pe").make(grid=(6, 6)), 1, (5, 5), seed=0)


@pytest.mark.parametrize("shape", [(6, 8, 8), (5, 40)])
def test_save_picture_writes_a_png(tmp_path, shape):
    samples = torch.randint(17, shape, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "s.png"
    save_picture(samples, path, nb_classes=17, title="samples")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
