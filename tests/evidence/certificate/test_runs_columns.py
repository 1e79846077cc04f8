"""The run-form operations the merge with cert-sound added (:mod:`.certificate.runs`): a union of
every element as a dense row (the tracer's rows), and the cut of the unknown-origin slots after
the inputs, each against the dense operation, bit for bit."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from properties.evidence.certificate import deps
from properties.evidence.certificate import runs as R

N, SLOTS = 23, 4
seeds = st.integers(0, 2**16)
densities = st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0])
shapes = st.sampled_from([(1,), (3,), (2, 1, 4), (1, 5, 1)])


def dense_of(shape, seed, density, n=N + SLOTS):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, n, generator=g) < density


@given(seeds, densities, shapes)
def test_the_union_of_every_element_as_a_dense_row_is_the_dense_any(seed, density, shape):
    d = dense_of(shape, seed, density)
    r = R.from_dense(d)
    assert torch.equal(R.union_dense(r), d.reshape(-1, d.shape[-1]).any(0))
    assert torch.equal(deps.everything_dense(r), deps.everything_dense(d))
    broadcast = r.expand(*[4 if s == 1 else s for s in shape], r.n)  # stride-0 axes count once
    assert torch.equal(R.union_dense(broadcast), d.reshape(-1, d.shape[-1]).any(0))


@given(seeds, densities, shapes)
def test_the_inputs_columns_cut_the_slots_off_exactly(seed, density, shape):
    d = dense_of(shape, seed, density)
    cut = deps.columns(R.from_dense(d), N)
    assert cut.n == N and torch.equal(R.to_dense(cut), d[..., :N])
    assert torch.equal(deps.columns(d, N), d[..., :N])
    # a run across the boundary keeps its inputs' part only; live elements stay live only if
    # they depend on an input
    assert torch.equal(R.live(cut), d[..., :N].any(-1))
