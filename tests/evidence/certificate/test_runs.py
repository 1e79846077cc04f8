"""Run-form summaries (:mod:`.certificate.runs`) against the dense form they stand for: every
operation on runs, drawn at random, gives the dense operation's result, bit for bit, below the
cap of runs per element; above it, a superset with the same extremes (a causal verdict never
changes, only holes are lost). A run-form operation one element off is an unsound bound."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from properties.evidence.certificate import deps
from properties.evidence.certificate import runs as R

N = 23


def dense_of(shape, seed, density=0.3, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, n, generator=g) < density


def runs_of(d):
    return R.from_dense(d)


seeds = st.integers(0, 2**16)
densities = st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0])


@given(seeds, densities)
def test_dense_and_runs_convert_both_ways_exactly(seed, density):
    d = dense_of((3, 4), seed, density)
    r = runs_of(d)
    assert torch.equal(R.to_dense(r), d)
    assert torch.equal(R.sizes(r), d.sum(-1))
    assert tuple(r.shape) == tuple(d.shape)


@given(seeds, seeds, densities, densities)
def test_union_broadcasts_like_the_dense_or(a, b, da, db):
    x, y = dense_of((3, 1), a, da), dense_of((1, 4), b, db)
    u = deps.union([runs_of(x), None, runs_of(y)], 2)
    assert torch.equal(deps.dense(u), x | y)
    # disjoint, sorted runs: the sizes count each input once
    assert torch.equal(R.sizes(u), (x | y).sum(-1))


@given(seeds, densities, st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True))
def test_any_over_is_the_union_over_axes(seed, density, axes):
    d = dense_of((2, 3, 4), seed, density)
    for keepdim in (True, False):
        got = deps.dense(deps.any_over(runs_of(d), axes, keepdim=keepdim))
        assert torch.equal(got, deps.any_over(d, axes, keepdim=keepdim))
    assert torch.equal(deps.dense(deps.everything(runs_of(d))), deps.everything(d))


@given(seeds, densities, seeds)
def test_restrict_keeps_the_marked_elements(seed, density, mask_seed):
    d = dense_of((3, 4), seed, density)
    keep = torch.rand(3, 4, generator=torch.Generator().manual_seed(mask_seed)) < 0.5
    assert torch.equal(deps.dense(deps.restrict(runs_of(d), keep)), d & keep[..., None])
    column = keep[:, :1]  # a mask broadcast over the second axis
    assert torch.equal(deps.dense(deps.restrict(runs_of(d), column)), d & column[..., None])


def test_a_mask_alike_along_a_broadcast_axis_keeps_the_summary_broadcast():
    """RoPE's ``sin`` is zero at position 0 for every feature: the product stays one summary
    per position, not one per feature (in both forms)."""
    d = dense_of((4, 1), 3, 0.5)
    keep = torch.ones(4, 8, dtype=torch.bool)
    keep[0] = False
    for form in (d, runs_of(d)):
        out = deps.restrict(form, keep)
        assert tuple(out.shape) == (4, 1, N)
        assert torch.equal(deps.dense(out), d & keep[:, :1, None])


@given(seeds, densities, st.integers(0, 2))
def test_running_unions_are_a_cumulative_or(seed, density, axis):
    d = dense_of((3, 4, 5), seed, density)
    got = deps.dense(deps.cumulative(runs_of(d), axis))
    assert torch.equal(got, deps.cumulative(d, axis))


@given(seeds, densities, st.lists(st.integers(-1, 3), min_size=4, max_size=4))
def test_pad_and_cat_are_the_dense_ones(seed, density, spec):
    d = dense_of((3, 4), seed, density)
    assert torch.equal(deps.dense(deps.pad(runs_of(d), spec)), deps.pad(d, spec))
    e = dense_of((3, 2), seed + 1, density)
    assert torch.equal(deps.dense(deps.cat([runs_of(d), runs_of(e)], 1)), torch.cat([d, e], 1))
    nothing = deps.nothing((3, 2), runs_of(d))
    assert not deps.dense(nothing).any() and tuple(nothing.shape) == (3, 2, N)


MOVES = [
    lambda t, n: t.reshape(6, 2, n),
    lambda t, n: t.permute(1, 0, 2, 3),
    lambda t, n: t.transpose(0, 2),
    lambda t, n: t.narrow(1, 1, 1),
    lambda t, n: t.select(2, 1),
    lambda t, n: t.unsqueeze(0).squeeze(0),
    lambda t, n: t.flip([0, 2]),
    lambda t, n: t.index_select(0, torch.tensor([2, 0, 0])),
    lambda t, n: t.expand(3, 2, 2, n),
    lambda t, n: t.movedim(0, 2),
    lambda t, n: t.repeat_interleave(2, dim=1),
    lambda t, n: t[torch.tensor([1, 0]), :, 1:],
]


@pytest.mark.parametrize("move", range(len(MOVES)))
def test_element_moves_take_the_dense_forms_arguments(move):
    d = dense_of((3, 2, 2), move)
    r = MOVES[move](runs_of(d), N)
    assert torch.equal(R.to_dense(r), MOVES[move](d, N))


def test_the_inputs_axis_of_runs_cannot_be_moved():
    r = runs_of(dense_of((3, 2), 0))
    for bad in (lambda: r.transpose(0, -1), lambda: r.narrow(2, 0, 1), lambda: r[..., 0],
                lambda: r.permute(2, 0, 1), lambda: r.reshape(6, N + 1)):
        with pytest.raises(ValueError):
            bad()


@given(seeds, densities, seeds, st.integers(1, 3))
def test_range_unions_are_the_union_over_each_range(seed, density, ranges_seed, m):
    d = dense_of((2, 6, 3), seed, density)  # (batch, S, features)
    g = torch.Generator().manual_seed(ranges_seed)
    starts = torch.randint(-1, 7, (2, 5, m), generator=g)  # (batch, L, M): some empty
    stops = torch.randint(0, 8, (2, 5, m), generator=g)
    got = R.to_dense(R.range_unions(runs_of(d), 1, starts, stops))
    want = torch.zeros(2, 5, 3, N, dtype=torch.bool)
    for b in range(2):
        for i in range(5):
            for k in range(m):
                lo, hi = max(int(starts[b, i, k]), 0), min(int(stops[b, i, k]), 6)
                if hi > lo:
                    want[b, i] |= d[b, lo:hi].any(0)
    assert torch.equal(got, want)


@given(seeds, densities, seeds)
def test_attend_is_the_boolean_product_in_both_forms(seed, density, mask_seed):
    d = dense_of((2, 5, 3), seed, density)  # (heads, keys, features)
    mask = torch.rand(1, 4, 5, generator=torch.Generator().manual_seed(mask_seed)) < 0.5
    want = (mask.float() @ d.reshape(2, 5, -1).float() > 0).reshape(2, 4, 3, N)
    for form in (d, runs_of(d)):
        assert torch.equal(deps.dense(deps.attend(deps.Pattern(mask), form, 1)), want)
    causal = deps.Pattern.causal(4, 5)
    assert torch.equal(causal.dense(), torch.ones(4, 5, dtype=torch.bool).tril())
    got = deps.dense(deps.attend(causal, runs_of(d), 1))
    want = torch.stack([d[:, : i + 1].any(1) for i in range(4)], 1)
    assert torch.equal(got, want)


def test_more_runs_than_the_cap_fill_the_smallest_gaps_only():
    """A set of 150 isolated inputs keeps ``CAP`` runs: a superset with the same first and last
    input (so the same verdict on the future), and the other sets untouched."""
    n = 300
    d = torch.zeros(2, n, dtype=torch.bool)
    d[0, ::2] = True
    d[1, [3, 4, 5, 100]] = True
    r = R.from_dense(d)
    assert r.runs == R.CAP
    got = R.to_dense(r)
    assert bool((got | ~d).all())  # nothing dropped
    assert torch.equal(got[1], d[1])
    assert (int(got[0].nonzero().min()), int(got[0].nonzero().max())) == (0, 298)
    u = R.union([r, R.from_dense(torch.roll(d, 1, -1))])  # the odd inputs fill the holes
    assert bool(R.to_dense(u)[0].all()) and u.lo.shape[-1] >= 1


@given(seeds, densities)
def test_rank_extremes_over_runs_are_the_dense_ones(seed, density):
    d = dense_of((7,), seed, density)
    shuffled = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    for ranks in (torch.arange(N), shuffled):
        low, high = R.RankTable(ranks).extremes(runs_of(d))
        assert torch.equal(high, torch.where(d, ranks, -1).amax(-1))
        assert torch.equal(low, torch.where(d, ranks, N).amin(-1))


@given(seeds, densities)
def test_a_storage_unites_its_aliases_and_a_write_replaces(seed, density):
    size = 6
    a, b = dense_of((4,), seed, density), dense_of((3,), seed + 1, density)
    ia, ib = torch.tensor([0, 1, 2, 2]), torch.tensor([2, 3, 5])  # element 2 seen twice
    want = torch.zeros(size, N, dtype=torch.bool)
    want.index_put_((ia,), a, accumulate=True)
    want.index_put_((ib,), b, accumulate=True)
    for like in (a, runs_of(a)):
        pieces = [(ia, deps.in_form(a, like)), (ib, deps.in_form(b, like))]
        store = deps.storage(size, N, pieces, like)
        assert torch.equal(deps.dense(store), want)
        new = deps.in_form(dense_of((2,), seed + 2), like)
        written = deps.written(store, torch.tensor([1, 4]), new)
        expect = want.clone()
        expect[[1, 4]] = deps.dense(new)
        assert torch.equal(deps.dense(written), expect)
        cleared = deps.dense(deps.written(store, torch.tensor([2]), None))
        assert not cleared[2].any() and torch.equal(cleared[3], want[3])


def test_the_form_follows_the_length_unless_forced(monkeypatch):
    monkeypatch.delenv(deps.ENVIRONMENT, raising=False)
    assert deps.form_for(deps.DENSE_LIMIT) == deps.DENSE
    assert deps.form_for(deps.DENSE_LIMIT + 1) == deps.RUNS
    with deps.forced(deps.RUNS):
        assert deps.form_for(4) == deps.RUNS
    monkeypatch.setenv(deps.ENVIRONMENT, "dense")
    assert deps.form_for(10**6) == deps.DENSE
    monkeypatch.setenv(deps.ENVIRONMENT, "bits")
    with pytest.raises(ValueError, match="CAUSAL_AUDIT_SUMMARIES"):
        deps.form_for(4)
    with pytest.raises(ValueError, match="unknown summary form"), deps.forced("bits"):
        pass
