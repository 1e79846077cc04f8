"""The dependency summaries the certificate's rules compute with (:mod:`.certificate.deps`):
their shapes (broadcast axes kept at size 1, the inputs' axis last), their unions and reductions,
and which elements count as structural constants. A summary one element too small drops a
dependency (an unsound bound); one too large loses a proof."""

import torch

from properties.evidence.certificate import deps

N = 5


def summary(*shape, seed=0):
    """A random summary of a tensor of ``shape`` over ``N`` inputs, every element live."""
    d = torch.rand(*shape, N, generator=torch.Generator().manual_seed(seed)) > 0.5
    d[..., seed % N] = True
    return d


def test_compress_makes_expanded_axes_size_one_and_keeps_the_others():
    d = summary(3, 1, 4)
    wide = d.expand(3, 2, 4, N)  # a stride-0 axis of size 2, before the inputs' axis
    assert tuple(deps.compress(wide).shape) == (3, 1, 4, N)
    last = summary(3, 1).expand(3, 6, N)  # the stride-0 axis just before the inputs' axis
    out = deps.compress(last)
    assert tuple(out.shape) == (3, 1, N)
    assert torch.equal(out.expand(3, 6, N), last)
    assert deps.compress(None) is None
    real = summary(2, 3)  # no stride-0 axis: unchanged
    assert deps.compress(real) is real


def test_all_live_says_whether_every_element_depends_on_something_and_caches_it():
    live = summary(4, 3)
    assert deps.all_live(live) is True
    assert deps._ALL_LIVE.get(live) is True
    dead = live.clone()
    dead[2, 1] = False  # one element depends on nothing
    assert deps.all_live(dead) is False
    # only the last axis is the inputs': a column of false along another axis is not dead
    column = torch.ones(4, 3, N, dtype=torch.bool)
    column[:, 0, 0] = False
    assert deps.all_live(column) is True


def test_aligned_prepends_broadcast_axes_only():
    assert deps.aligned(None, 3) is None
    d = summary(4)
    assert tuple(deps.aligned(d, 3).shape) == (1, 1, 4, N)
    assert tuple(deps.aligned(d, 2).shape) == (1, 4, N)
    assert deps.aligned(d, 1) is d


def test_union_broadcasts_summaries_like_their_tensors():
    a = summary(3, 1, seed=1)  # (3, 1): broadcast over the second axis
    b = summary(4, seed=2)  # a lower-rank tensor (4,): aligned to (1, 4)
    u = deps.union([None, a, None, b], 2)
    assert tuple(u.shape) == (3, 4, N)
    assert torch.equal(u, a.expand(3, 4, N) | b.expand(3, 4, N))
    assert deps.union([None, None], 2) is None
    assert deps.union([a, a], 2) is a  # the same summary twice is not copied
    c = summary(3, 1, seed=3)
    three = deps.union([a, c, b], 2)
    assert torch.equal(three, a | c | b)
    single = deps.union([b], 3)
    assert tuple(single.shape) == (1, 1, 4, N)


def test_expanded_and_full_on_are_views_of_the_full_shape():
    d = summary(1, 3, 1)
    e = deps.expanded(d, (2, 3, 4))
    assert tuple(e.shape) == (2, 3, 4, N) and e.stride(0) == 0
    assert torch.equal(e[1, :, 3], d[0, :, 0])
    f = deps.full_on(d, (2, 3, 4), [2])
    assert tuple(f.shape) == (1, 3, 4, N)
    assert torch.equal(f[0, :, 2], d[0, :, 0])


def test_any_over_is_the_union_over_the_reduced_axes():
    d = summary(2, 3, 2, seed=4)
    r = deps.any_over(d, [-1])  # a negative axis counts from the tensor's last, not the inputs'
    assert tuple(r.shape) == (2, 3, 1, N)
    assert torch.equal(r, d.any(2, keepdim=True))
    r = deps.any_over(d, [0, 2], keepdim=False)
    assert tuple(r.shape) == (3, N)
    assert torch.equal(r, d.any(2).any(0))
    broadcast = summary(2, 1, seed=5)  # a size-1 axis: nothing to reduce, still squeezed
    assert tuple(deps.any_over(broadcast, [1], keepdim=False).shape) == (2, N)
    assert torch.equal(deps.any_over(broadcast, [1]), broadcast)
    assert deps.any_over(None, [0]) is None


def test_everything_is_the_union_of_every_element():
    d = torch.zeros(2, 3, N, dtype=torch.bool)
    d[1, 2, 4] = d[0, 0, 1] = True
    row = deps.everything(d)
    assert row.tolist() == [False, True, False, False, True]
    assert deps.everything(None) is None


def test_constant_where_keeps_only_elements_no_input_reaches():
    value = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    d = torch.zeros(1, 4, N, dtype=torch.bool)
    d[0, 2, 0] = True  # the zero at 2 was computed from input 0: another input moves it
    zero = deps.constant_zero(value, d)
    assert zero.tolist() == [[True, False, False, True]]
    assert deps.constant_zero(value, None).tolist() == [[True, False, True, True]]
    big = deps.constant_where(value, d, lambda v: v > 0.5)
    assert big.tolist() == [[False, True, False, False]]
    # a lower-rank summary broadcasts against the value from the left
    row = torch.zeros(4, N, dtype=torch.bool)
    row[0, 1] = True
    assert deps.constant_zero(value, row).tolist() == [[False, False, True, True]]
    # none: every element live, or no element passes
    assert deps.constant_zero(value, torch.ones(1, 4, N, dtype=torch.bool)) is None
    assert deps.constant_zero(torch.ones(1, 4), None) is None
    assert deps.constant_where(value, d, lambda v: v < 0) is None


def test_as_float_counts_dependencies_with_a_matrix_product():
    d = torch.tensor([[True, False], [True, True]])
    assert deps.as_float(d).dtype == torch.float32
    assert (deps.as_float(d) @ deps.as_float(d)).tolist() == [[1.0, 0.0], [2.0, 1.0]]
