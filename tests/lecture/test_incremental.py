"""causal/incremental.py: the cached steppers against the one-pass model, Fleuret's self-check
(``mygpt.py``: cached evaluation equals full evaluation) written as properties.

For every registry model, in float64, with random weights and random ``Normalize`` statistics:
under teacher forcing the cached step's logits at ``t`` equal the full pass's logits at ``t``, and
``sample`` draws the same values with and without the cache. "Equal" is ``assert_close`` at
``1e-12``: the full pass and the cached step sum in different orders (which order the BLAS picks
for the full pass even depends on the grid's length), so a few ulps apart is all one can ask.
"""

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from torch import nn

from causal import models, registry
from causal.cli import main
from causal.incremental import NoCachedStepper, cached_stepper
from causal.sample import full_recompute_step, sample

NB_CLASSES = 7
TIGHT = {"rtol": 1e-12, "atol": 1e-12}  # float64 eps is 2.2e-16; the steppers land within ~1e-15


def _small_wavenet(ks):
    """Two blocks of dilations 1, 2, 4, 8: the registry's structure on a grid of ~40."""
    config = models.WaveNetConfig(NB_CLASSES, blocks=2, layers_per_block=4, kernel_size=ks)
    return models.WaveNet(config)


# name -> (kernel sizes to draw from, the registry's first; build(ks, grid))
BUILDERS = {
    "nettoy1d": ([2, 3], lambda ks, grid: models.NetToy1d(NB_CLASSES, ks=ks)),
    "nettoy1d_dilated": ([2, 3], lambda ks, grid: models.NetToy1dWithDilation(NB_CLASSES, ks=ks)),
    "wavenet": ([2, 3], lambda ks, grid: _small_wavenet(ks)),
    "pixelcnn": ([5, 3], lambda ks, grid: models.PixelCNN(NB_CLASSES, ks=ks)),
    "pixelcnn_pe": (
        [5, 3],
        lambda ks, grid: models.PixelCNNWithPositionalEncoding(NB_CLASSES, grid, ks=ks),
    ),
    "pixelcnn_gated": ([5, 3], lambda ks, grid: models.GatedPixelCNN(NB_CLASSES, ks=ks)),
    "pixelcnn_masked": (
        [(7, 3), (3, 5)],
        lambda ks, grid: models.MaskedPixelCNN(NB_CLASSES, first_ks=ks[0], ks=ks[1]),
    ),
}


@dataclass(frozen=True)
class Case:
    """A model to build: drawn by Hypothesis, built (from the torch RNG) by the test."""

    name: str
    grid: tuple[int, ...]
    ks: object
    seed: int
    mean: float
    std: float

    def build(self) -> nn.Module:
        """The float64 model, with weights from ``seed`` and the drawn input statistics."""
        kernel_sizes, build = BUILDERS[self.name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build(self.ks, self.grid).double().eval()
        model.normalize.mean.fill_(self.mean)
        model.normalize.std.fill_(self.std)
        return model


@st.composite
def cases(draw, *, names=tuple(BUILDERS)):
    name = draw(st.sampled_from(names))
    if registry.get(name).dims == 1:
        grid = (draw(st.integers(2, 48)),)  # up to past the small nets' dilations (16)
    else:
        grid = (draw(st.integers(2, 7)), draw(st.integers(2, 7)))
    return Case(
        name=name,
        grid=grid,
        ks=draw(st.sampled_from(BUILDERS[name][0])),
        seed=draw(st.integers(0, 2**32 - 1)),
        mean=draw(st.floats(-3.0, 3.0)),  # a non-zero mean tells the shift's zero from norm(0)
        std=draw(st.floats(0.25, 4.0)),
    )


def assert_same_logits(cached, full, t, what):
    __tracebackhide__ = True
    torch.testing.assert_close(
        cached, full, **TIGHT, msg=lambda m: f"{what}: cached step != full pass at t={t}\n{m}"
    )


def random_grid(nb, grid, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(NB_CLASSES, (nb, 1, *grid), generator=g).double()


def test_every_registry_model_has_a_builder_here_and_a_cached_stepper():
    assert set(BUILDERS) == set(registry.REGISTRY)
    for spec in registry.REGISTRY.values():
        cached_stepper(spec.make())


# ---------------------------------------------------------------------------------------------
# Teacher forcing: the cached step at t against the one pass, on a grid filled in advance


@given(case=cases(), nb=st.integers(1, 3), data_seed=st.integers(0, 2**32 - 1))
def test_cached_logits_equal_the_one_pass_logits(case, nb, data_seed):
    model = case.build()
    x = random_grid(nb, case.grid, data_seed)  # the future is there too: the step must not read it
    with torch.no_grad():
        full = model(x).reshape(nb, -1, NB_CLASSES)  # (N, T, K)
    step = cached_stepper(model)
    for t in range(full.size(1)):
        assert_same_logits(step(x, t), full[:, t], t, case)


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_registry_models_on_their_default_grids(name):
    """The models the CLI samples, as built: WaveNet at 1100 > its span of 1024, images 28x28."""
    spec = registry.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = spec.make().double().eval()
    model.normalize.mean.fill_(spec.nb_classes / 2)
    model.normalize.std.fill_(spec.nb_classes / 4)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(spec.nb_classes, (1, 1, *spec.grid), generator=g).double()
    with torch.no_grad():
        full = model(x).reshape(1, -1, spec.nb_classes)
    step = cached_stepper(model)
    cached = torch.stack([step(x, t) for t in range(full.size(1))], dim=1)
    torch.testing.assert_close(cached, full, **TIGHT)


class TeacherForcing(RuleBasedStateMachine):
    """Feeds the values one by one, as sampling does; before each, the cached step's logits at the
    next position must equal the full pass's on the grid so far. At the end, a new sequence starts
    on the same stepper, over the old values (which the steps must ignore: ``t = 0`` resets)."""

    @initialize(case=cases(), nb=st.integers(1, 3))
    def build(self, case, nb):
        self.case, self.model = case, case.build()
        self.x = torch.zeros(nb, 1, *case.grid, dtype=torch.float64)
        self.flat = self.x.view(nb, -1)  # (N, T), a view of x
        self.cached, self.full = cached_stepper(self.model), full_recompute_step(self.model)
        self.t = 0
        self.compare()

    def compare(self):
        with torch.no_grad():
            full = self.full(self.x, self.t)
        assert_same_logits(self.cached(self.x, self.t), full, self.t, self.case)

    @precondition(lambda self: self.t < self.flat.size(1))
    @rule(data=st.data())
    def feed(self, data):
        values = data.draw(st.lists(st.integers(0, NB_CLASSES - 1), min_size=len(self.x)))
        self.flat[:, self.t] = torch.tensor(values[: len(self.x)], dtype=torch.float64)
        self.t += 1
        if self.t < self.flat.size(1):
            self.compare()

    @precondition(lambda self: self.t == self.flat.size(1))
    @rule()
    def restart(self):
        self.t = 0
        self.compare()


TeacherForcing.TestCase.settings = settings(stateful_step_count=60)
test_teacher_forcing = TeacherForcing.TestCase


# ---------------------------------------------------------------------------------------------
# Samples


@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_float64_samples_are_identical_with_and_without_the_cache(case, seed):
    model = case.build()
    cached = sample(model, 3, case.grid, seed=seed, dtype=torch.float64, cache=True)
    full = sample(model, 3, case.grid, seed=seed, dtype=torch.float64, cache=False)
    assert torch.equal(cached, full)


@pytest.mark.parametrize(
    "name, grid_args",
    [("nettoy1d_dilated", ["--length", "40"]), ("pixelcnn", ["--shape", "5", "6"])],
)
def test_cli_samples_the_same_with_and_without_the_cache(tmp_path, capsys, name, grid_args):
    common = ["sample", "--model", name, "--n", "2", "--seed", "4", "--dtype", "float64"]
    assert main([*common, *grid_args, "--out", str(tmp_path / "cached.pt")]) == 0
    assert main([*common, *grid_args, "--no-cache", "--out", str(tmp_path / "full.pt")]) == 0
    cached, full = torch.load(tmp_path / "cached.pt"), torch.load(tmp_path / "full.pt")
    assert cached.shape == (2, *map(int, grid_args[1:])) and torch.equal(cached, full)


# ---------------------------------------------------------------------------------------------
# What the steppers refuse, and sample's cache argument


class Unknown(nn.Module):
    """A causal model with no cached stepper: predicts ``x_{t-1}``."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):  # (B, 1, T) -> (B, T, 3)
        previous = nn.functional.pad(x, (1, -1))[:, 0].long().clamp(0, 2)
        return 50.0 * self.scale * nn.functional.one_hot(previous, 3).to(x.dtype)


class SubclassedToy(models.NetToy1d):
    """A subclass may change forward: the parent's stepper must not be used for it."""


@pytest.mark.parametrize("model", [Unknown(), SubclassedToy(3), nn.Linear(2, 2)])
def test_a_model_without_a_stepper_is_refused_by_name(model):
    with pytest.raises(NoCachedStepper, match=f"no cached stepper for {type(model).__name__}"):
        cached_stepper(model)


def test_cache_auto_falls_back_to_the_full_recompute_and_cache_true_does_not():
    assert sample(Unknown(), 2, (5,), seed=0, cache="auto").tolist() == [[0] * 5] * 2
    with pytest.raises(NoCachedStepper):
        sample(Unknown(), 2, (5,), seed=0, cache=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cache": "yes"}, "cache must be False, True or 'auto'"),
        ({"cache": 1}, "cache must be False, True or 'auto'"),
        ({"cache": True, "stepper": full_recompute_step}, "either stepper or cache"),
    ],
)
def test_sample_refuses_a_bad_cache_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(registry.get("nettoy1d").make(), 1, (4,), seed=0, **kwargs)


def test_steps_must_come_in_order_and_t0_starts_afresh():
    case = Case("nettoy1d_dilated", (40,), 2, seed=0, mean=1.5, std=0.5)
    model, x = case.build(), random_grid(2, (40,), seed=0)
    step = cached_stepper(model)
    with pytest.raises(ValueError, match="in order; got t=3 after a fresh stepper"):
        step(x, 3)
    for t in range(20):  # an interrupted sequence ...
        step(x, t)
    with pytest.raises(ValueError, match="got t=22 after t=19"):
        step(x, 22)
    with torch.no_grad():
        full = model(x).reshape(2, 40, NB_CLASSES)
    for t in range(40):  # ... leaves nothing behind in the caches
        assert_same_logits(step(x, t), full[:, t], t, case)
