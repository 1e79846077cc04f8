"""Every registry model: output shape on its default grid and on a small one; causality by
gradient on one output; mu-law companding."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from causal import models, registry

NAMES = list(registry.REGISTRY)
SMALL = {1: (16,), 2: (8, 8)}


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_on_the_default_grid(name):
    spec = registry.get(name)
    model = spec.make()
    out = model(torch.zeros(2, 1, *spec.grid))
    assert out.shape == (2, *spec.grid, spec.nb_classes)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_on_a_small_grid(name):
    spec = registry.get(name)
    grid = SMALL[spec.dims]
    model = spec.make(nb_classes=7, grid=grid)
    out = model(torch.rand(3, 1, *grid) * 6)
    assert out.shape == (3, *grid, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_an_output_never_sees_its_own_position_or_later(name):
    spec = registry.get(name)
    grid = SMALL[spec.dims]
    model = spec.make(grid=grid).double()
    x = torch.rand(1, 1, *grid, dtype=torch.float64, requires_grad=True)
    t = math.prod(grid) // 2 + 1  # an interior position in raster order
    out = model(x).reshape(1, -1, spec.nb_classes)
    out[0, t].sum().backward()
    seen = x.grad.reshape(-1) != 0
    assert not seen[t:].any(), f"output {t} depends on inputs {seen[t:].nonzero().flatten() + t}"
    assert seen[t - 1], "output t must see x_{t-1}"


def test_registry_rejects_unknown_names_with_the_known_ones():
    with pytest.raises(KeyError, match="nettoy1d"):
        registry.get("nope")


# ---------------------------------------------------------------------------------------------
# mu-law


def test_mu_law_decode_then_encode_is_the_identity_on_codes():
    codes = torch.arange(256)
    assert torch.equal(models.mu_law_encode(models.mu_law_decode(codes)), codes)


@given(
    values=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=50),
    nb_classes=st.sampled_from([16, 256]),
)
def test_mu_law_round_trip_is_within_one_quantization_step(values, nb_classes):
    audio = torch.tensor(values, dtype=torch.float64)
    codes = models.mu_law_encode(audio, nb_classes)
    assert codes.dtype == torch.long
    assert ((0 <= codes) & (codes < nb_classes)).all()
    back = models.mu_law_decode(codes, nb_classes)
    # the step between neighbouring codes bounds the error
    step = models.mu_law_decode(codes + 1, nb_classes) - models.mu_law_decode(codes - 1, nb_classes)
    assert ((back - audio).abs() <= step.abs() / 2 + 1e-12).all()


def test_mu_law_is_finer_near_zero():
    codes = torch.arange(256)
    values = models.mu_law_decode(codes)
    steps = values.diff()
    torch.testing.assert_close(values[[0, -1]], torch.tensor([-1.0, 1.0], dtype=torch.float64))
    assert steps[127] < steps[0] / 100  # companding: small amplitudes get small steps
