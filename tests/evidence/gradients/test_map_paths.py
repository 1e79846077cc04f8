"""The dependency map's paths, each pinned on models whose map is known exactly: the probe
positions and the coloring periods they give, the fallback from the colored map to the plain
one (and the passes each spends), stacking copies within the memory budget and not across a
batch that interacts, the token-embedding input and its shape check, and the error messages
when there is no gradient to take."""

import io
import re
from dataclasses import replace

import pytest
import torch
from known_models import shifted, taps_subject
from torch import nn

from properties import make_subject, progress
from properties.evidence import gradients
from properties.evidence.gradients import (
    DependencyMap,
    DifferentiableInput,
    GradientUnavailable,
    color_count,
    colored_map,
    coordinates,
    dependency_map,
    offset_periods,
    plain_map,
    plain_map_around,
    probe_positions,
)
from properties.subject import memory


def pairs_of(dmap):
    return {(int(dmap.outputs[r]), int(s)) for r, s in dmap.seen.nonzero().tolist()}


def taps_pairs(offsets, n):
    return {(t, t + k) for t in range(n) for k in offsets if 0 <= t + k < n}


def inputs_of(subject, batch=3):
    return subject.draw_inputs(batch, torch.Generator().manual_seed(0))


def probe(grid, rows):
    """A probe map whose output ``t`` sees exactly the inputs ``rows[t]``."""
    n = len(coordinates(grid))
    seen = torch.zeros(len(rows), n, dtype=torch.bool)
    for i, deps in enumerate(rows.values()):
        seen[i, list(deps)] = True
    outputs = torch.tensor(list(rows), dtype=torch.long)
    return DependencyMap(outputs, seen, seen.to(torch.bfloat16), passes=len(rows), method="plain")


# ---------------------------------------------------------------------------------------------
# Probe positions and the coloring they give


def test_probe_positions_are_the_corners_the_centre_and_an_even_spread():
    # 99 * i / 7 rounded, for i = 0 .. 7, with the centre 50
    assert probe_positions((100,)).tolist() == [0, 14, 28, 42, 50, 57, 71, 85, 99]
    assert probe_positions((3, 4)).tolist() == [0, 2, 3, 5, 6, 8, 9, 11]  # flat, 12 positions
    assert probe_positions((10,), count=3).tolist() == [0, 4, 5, 9]
    assert probe_positions((1,)).tolist() == [0]
    assert probe_positions((2,)).tolist() == [0, 1]
    assert probe_positions((100,)).dtype == torch.long


def test_coordinates_are_row_major():
    assert coordinates((2, 3)).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert coordinates((3,)).tolist() == [[0], [1], [2]]


def test_offset_periods_are_the_box_of_offsets_including_the_output_itself():
    # output 5 sees 3 and 4: offsets -2 .. -1, and the box holds offset 0 (the output's color)
    assert offset_periods(probe((10,), {5: [3, 4]}), (10,)) == (3,)
    # an output that sees nothing adds nothing, wherever it is
    assert offset_periods(probe((10,), {0: [], 5: [3, 4, 5]}), (10,)) == (3,)
    assert offset_periods(probe((10,), {2: [4, 6]}), (10,)) == (5,)  # offsets 0 .. 4
    # offsets from -9 to 9: the period is at most the grid
    assert offset_periods(probe((10,), {0: [9], 9: [0]}), (10,)) == (10,)
    assert offset_periods(probe((10,), {4: []}), (10,)) == (1,)


def test_offset_periods_per_axis_of_a_2d_grid():
    grid = (4, 6)
    at = {(r, c): r * 6 + c for r in range(4) for c in range(6)}
    # output (2, 3) sees (1, 1) and (2, 4): rows -1 .. 0, columns -2 .. 1
    one = probe(grid, {at[2, 3]: [at[1, 1], at[2, 4]]})
    assert offset_periods(one, grid) == (2, 4)
    assert color_count(one, grid) == 8
    # and output (0, 0) sees (3, 0): rows up to +3, the whole height
    two = probe(grid, {at[2, 3]: [at[1, 1], at[2, 4]], at[0, 0]: [at[3, 0]]})
    assert offset_periods(two, grid) == (4, 4)
    assert color_count(two, grid) == 16


# ---------------------------------------------------------------------------------------------
# The colored map, its fallback to the plain map, and the passes each spends


def test_colored_map_spends_its_probe_and_two_passes_per_color():
    """Length 12, taps -1 and 0: 8 probe rows, period 2 (two colors, four passes)."""
    subject = taps_subject((-1, 0), 12)
    x = inputs_of(subject)
    dmap = colored_map(subject, x)
    assert (dmap.method, dmap.passes) == ("colored", 8 + 2 * 2)
    assert pairs_of(dmap) == taps_pairs((-1, 0), 12)
    assert torch.equal(dmap.outputs, torch.arange(12))
    # the probe passed in is used, not recomputed, and counted once
    given = plain_map(subject, x, outputs=probe_positions((12,)))
    assert colored_map(subject, x, probe=given).passes == given.passes + 4
    # a shard that does not lead spends no probe passes: its colors only
    second = colored_map(subject, x, shard=(1, 2))
    first = colored_map(subject, x, shard=(0, 2))
    assert (first.passes, second.passes) == (8 + 2, 2)
    assert (len(first.outputs), len(second.outputs)) == (6, 6)
    assert pairs_of(first) | pairs_of(second) == taps_pairs((-1, 0), 12)


@pytest.mark.parametrize(
    "offsets, fraction, method, passes",
    [
        ((-5, 0), 0.5, "plain", 12),  # 6 colors = half of 12 positions: no cheaper, plain
        ((-4, 0), 0.5, "colored", 8 + 2 * 5),  # 5 colors, below half: colored
        ((-5, 0), 0.51, "colored", 8 + 2 * 6),
        ((-4, 0), 5 / 12, "plain", 12),  # the threshold is inclusive
        ((-6, 0), 1.0, "colored", 8 + 2 * 7),  # colors 5 and 6 have one output each
    ],
)
def test_colored_map_falls_back_to_plain_when_colors_are_half_the_positions(
    offsets, fraction, method, passes
):
    subject = taps_subject(offsets, 12)
    x = inputs_of(subject)
    dmap = colored_map(subject, x, max_colors_fraction=fraction)
    assert (dmap.method, dmap.passes) == (method, passes)
    assert pairs_of(dmap) == taps_pairs(offsets, 12)
    assert torch.equal(dmap.outputs, torch.arange(12))
    assert torch.equal(dmap.strength, plain_map(subject, x).strength)
    if fraction == 0.5:  # the default
        default = colored_map(subject, x)
        assert (default.method, default.passes) == (method, passes)


def test_fallback_reuses_the_probe_rows_in_the_leading_shard_only():
    subject = taps_subject((-6, 0), 12)
    x = inputs_of(subject)
    whole = plain_map(subject, x)
    parts = [colored_map(subject, x, shard=(i, 2)) for i in range(2)]
    assert [p.method for p in parts] == ["plain", "plain"]
    merged = gradients.merge_maps(parts)
    assert torch.equal(merged.outputs, torch.arange(12))
    assert torch.equal(merged.seen, whole.seen) and torch.equal(merged.strength, whole.strength)
    assert merged.passes == 12
    assert parts[0].passes == 8 + len(parts[0].outputs) - 8
    probe_rows = set(probe_positions((12,)).tolist())
    assert probe_rows <= set(parts[0].outputs.tolist())  # the probe's rows go to shard 0
    assert not probe_rows & set(parts[1].outputs.tolist())


def test_the_fallback_keeps_to_the_budget():
    model = Recorded().double().eval()
    subject = make_subject(model, grid=(12,), layout="BTC")
    model.sizes.clear()
    dmap = colored_map(subject, inputs_of(subject), per_pass=3 * 12, max_colors_fraction=0.01)
    assert dmap.method == "plain" and pairs_of(dmap) == taps_pairs((-1,), 12)
    assert set(model.sizes) == {1, 3}  # one copy of the 3 samples per pass, probe included


def test_merging_one_map_gives_that_map():
    subject = taps_subject((-1, 2), 12)
    one = plain_map(subject, inputs_of(subject), outputs=torch.tensor([7, 2]))
    one = replace(one, probe_silent=True)
    merged = gradients.merge_maps([one])
    assert merged.outputs.tolist() == [2, 7] and torch.equal(merged.seen, one.seen[[1, 0]])
    assert (merged.method, merged.passes, merged.probe_silent) == ("plain", 2, True)


def test_plain_map_around_keeps_only_the_wanted_probe_rows():
    subject = taps_subject((-1, 2), 12)
    x = inputs_of(subject)
    probed = plain_map(subject, x, outputs=torch.tensor([0, 5, 11]))
    dmap = plain_map_around(subject, x, torch.tensor([5, 6, 7]), probed, seed=0)
    assert dmap.outputs.tolist() == [5, 6, 7]
    assert pairs_of(dmap) == {(t, s) for t, s in taps_pairs((-1, 2), 12) if t in (5, 6, 7)}
    assert dmap.passes == probed.passes + 2  # the probe's passes, and rows 6 and 7
    assert dmap.method == "plain"


def test_dependency_map_of_chosen_outputs_is_plain_whatever_the_method():
    subject = taps_subject((-1, 2), 12)
    x = inputs_of(subject)
    some = dependency_map(subject, x, method="colored", outputs=torch.tensor([4, 9]))
    assert (some.method, some.outputs.tolist(), some.passes) == ("plain", [4, 9], 2)
    assert pairs_of(some) == {(4, 3), (4, 6), (9, 8), (9, 11)}
    assert dependency_map(subject, x).method == "colored"


# ---------------------------------------------------------------------------------------------
# Stacked copies: within the memory budget, and never across a batch that interacts


class Recorded(nn.Module):
    """``y_t = x_{t-1}``, plus the batch mean of ``x_{t-1}`` when ``mixes``; records the batch
    size of every forward pass."""

    def __init__(self, mixes=False):
        super().__init__()
        self.mixes, self.sizes = mixes, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        y = shifted(x, -1)
        return y + y.mean(0, keepdim=True) if self.mixes else y


def test_copies_are_stacked_in_chunks_of_the_budget():
    """12 outputs of 3 samples: at most MIN_CHUNKS = 8 chunks (of 2 copies), or fewer copies
    when the budget of position-samples per pass is smaller."""
    model = Recorded().double()
    subject = make_subject(model, grid=(12,), layout="BTC")
    x = inputs_of(subject)
    dmap = plain_map(subject, x)
    assert pairs_of(dmap) == taps_pairs((-1,), 12)
    model.sizes.clear()
    plain_map(subject, x)  # measured once per model and shape: no probe passes now
    assert model.sizes == [3] + [2 * 3] * 6
    model.sizes.clear()
    plain_map(subject, x, per_pass=3 * 12)  # one copy per pass
    assert model.sizes == [3] * 13
    model.sizes.clear()
    plain_map(subject, x, per_pass=3 * 12 * 5)  # at most 5, spread: 2
    assert model.sizes == [3] + [6] * 6


def test_a_batch_that_interacts_gets_one_copy_per_pass():
    """Stacked copies of a model that averages over its batch would read one copy's output in
    another copy's inputs: each copy gets a pass of its own, and the map stays exact."""
    model = Recorded(mixes=True).double()
    subject = make_subject(model, grid=(12,), layout="BTC")
    x = inputs_of(subject)
    for dmap in (plain_map(subject, x), colored_map(subject, x, max_colors_fraction=1.0)):
        assert pairs_of(dmap) == taps_pairs((-1,), 12)
    model.sizes.clear()
    plain_map(subject, x)
    assert model.sizes == [3] * 13
    source = DifferentiableInput(subject, x)
    assert source.interacts() is True
    assert (
        DifferentiableInput(
            make_subject(Recorded().double(), grid=(12,), layout="BTC"), x
        ).interacts()
        is False
    )


def test_measurements_are_made_once_per_model_shape_and_mode():
    model = Recorded().double().eval()
    subject = make_subject(model, grid=(12,), layout="BTC")
    x = inputs_of(subject)
    first = DifferentiableInput(subject, x)
    model.sizes.clear()
    cost = first.cost()
    assert cost > 0 and model.sizes  # a probe pass
    model.sizes.clear()
    assert DifferentiableInput(subject, x).cost() == cost and model.sizes == []
    # another batch size, another cost (per sample of the batch)
    assert DifferentiableInput(subject, x[:1]).cost() * 3 == cost
    assert model.sizes == [1]
    model.sizes.clear()
    model.train()
    DifferentiableInput(subject, x).cost()  # training mode: measured again
    assert model.sizes == [1]
    model.eval()
    assert gradients.vjp_bytes(subject, x) == cost


def test_a_model_that_is_a_function_measures_on_its_own():
    def lagged(x):
        return shifted(x, -1)

    subject = make_subject(lagged, grid=(12,), layout="BTC")
    x = inputs_of(subject).double()
    source = DifferentiableInput(subject, x)
    assert source.cost() > 0 and source.interacts() is False
    assert pairs_of(dependency_map(subject, x)) == taps_pairs((-1,), 12)


# ---------------------------------------------------------------------------------------------
# Token models: the embedding's output is the input, of shape (B, positions, D)


class Embedded(nn.Module):
    """Tokens through ``embed`` (an embedding subclass that may reshape), then ``x_{t-1}``."""

    def __init__(self, embed):
        super().__init__()
        self.embed, self.head = embed, nn.Linear(4, 5)

    def forward(self, tokens):
        h = self.embed(tokens)
        if h.dim() == 3 and h.shape[1] == tokens.shape[1]:
            h = shifted(h, -1)
        b, n = tokens.shape
        return self.head(h.reshape(-1)[: b * n * 4].reshape(b, n, 4))


class Pooled(nn.Embedding):
    def forward(self, x):  # (B, D): no positions
        return super().forward(x).sum(1).repeat(1, x.shape[1])


class Transposed(nn.Embedding):
    def forward(self, x):  # (T, B, D)
        return super().forward(x).transpose(0, 1).contiguous()


class Dropped(nn.Embedding):
    def forward(self, x):  # (B, T - 1, D): one position lost, 3 * 6 values per sample
        return super().forward(x)[:, 1:]


@pytest.mark.parametrize(
    "embed, shape",
    [
        (Pooled(5, 4), "(3, 16)"),
        (Transposed(5, 4), "(4, 3, 4)"),
        (Dropped(5, 6), "(3, 3, 6)"),
    ],
)
def test_an_embedding_output_without_positions_gives_no_gradient_evidence(embed, shape):
    model = Embedded(embed).double()
    subject = make_subject(model, grid=(4,), layout="BT->BTC", vocab=5)
    x = inputs_of(subject)
    expected = f"the embedding's output has shape {shape}, not (B, positions, D)"
    with pytest.raises(GradientUnavailable, match=f"^{re.escape(expected)}$"):
        plain_map(subject, x)


def test_a_token_embedding_of_the_right_shape_is_differentiated():
    model = Embedded(nn.Embedding(5, 4)).double()
    subject = make_subject(model, grid=(4,), layout="BT->BTC", vocab=5)
    x = inputs_of(subject)
    assert pairs_of(dependency_map(subject, x)) == taps_pairs((-1,), 4)
    leaf, y = DifferentiableInput(subject, x).run(2)
    assert leaf.shape == (6, 4, 4) and leaf.requires_grad and y.shape == (6, 4, 5)


# ---------------------------------------------------------------------------------------------
# No gradient to take


def test_outputs_without_gradient_are_named():
    def detached(x):
        return shifted(x, -1).detach()

    subject = make_subject(detached, grid=(6,), layout="BTC")
    with pytest.raises(
        GradientUnavailable, match="^the outputs do not depend differentiably on the inputs$"
    ):
        plain_map(subject, inputs_of(subject).double())

    class Cut(nn.Module):  # needs grad (its weight) but no path reaches the input
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1, dtype=torch.float64))

        def forward(self, x):
            return shifted(x, -1).detach() * self.w

    cut = make_subject(Cut(), grid=(6,), layout="BTC")
    with pytest.raises(GradientUnavailable, match="^no gradient path from the outputs to the in"):
        plain_map(cut, inputs_of(cut).double())


class FixedBatch(nn.Module):
    """Tokens at batch 2 only (larger batches come in slices): ``x_{t-1}`` through an embedding;
    after ``honest`` calls, it embeds its tokens reversed (not the slice it was given)."""

    def __init__(self, honest=None):
        super().__init__()
        self.embed, self.head = nn.Embedding(5, 4), nn.Linear(4, 5)
        self.calls, self.honest = 0, honest

    def forward(self, tokens):
        assert tokens.shape[0] == 2, "batch 2 only"
        self.calls += 1
        if self.honest is not None and self.calls > self.honest:
            tokens = tokens.flip(1)
        return self.head(shifted(self.embed(tokens), -1))


def test_a_token_model_run_in_slices_is_differentiated_across_its_slices():
    """3 samples (and stacks of copies of them) in slices of 2, the last one padded: one leaf
    embeds every token, each slice reads its rows of it, and the map is exact."""
    model = FixedBatch().double()
    subject = make_subject(model, grid=(6,), layout="BT->BTC", vocab=5, batch=2)
    x = inputs_of(subject)
    for method in ("plain", "colored"):
        assert pairs_of(dependency_map(subject, x, method=method)) == taps_pairs((-1,), 6)
    leaf, y = DifferentiableInput(subject, x).run(3)
    assert leaf.shape == (9, 6, 4) and y.shape == (9, 6, 5)
    (g,) = torch.autograd.grad(y[4, 2].sum(), leaf)  # sample 4 (slice 2), output 2: input 1
    assert g.abs().sum((1, 2)).nonzero().flatten().tolist() == [4]
    assert g[4].abs().sum(1).nonzero().flatten().tolist() == [1]


def test_a_slice_that_embeds_other_tokens_is_named():
    model = FixedBatch(honest=2).double()  # the two calls that find the embedding only
    subject = make_subject(model, grid=(6,), layout="BT->BTC", vocab=5, batch=2)
    message = (
        "the model runs in slices and its embedding read (2, 6) tokens that are not the slice "
        "expected"
    )
    with pytest.raises(GradientUnavailable, match=f"^{re.escape(message)}$"):
        plain_map(subject, inputs_of(subject))


# ---------------------------------------------------------------------------------------------
# Shards without rows, seeds and budgets passed on, progress, failures of the backward


def test_a_shard_without_chunks_maps_no_rows():
    """12 rows in chunks of 2 (6 chunks): shard 7 of 8 has none, and merges as nothing."""
    subject = taps_subject((-1, 2), 12)
    x = inputs_of(subject)
    whole = plain_map(subject, x)
    parts = [plain_map(subject, x, shard=(i, 8)) for i in range(8)]
    empty = parts[7]
    assert (empty.outputs.tolist(), empty.passes, tuple(empty.seen.shape)) == ([], 0, (0, 12))
    assert empty.outputs.dtype == torch.long and empty.strength.dtype == torch.bfloat16
    merged = gradients.merge_maps(parts)
    assert torch.equal(merged.outputs, whole.outputs) and torch.equal(merged.seen, whole.seen)
    # colored: 4 colors (offsets -1 .. 2) in chunks of 1; shard 5 of 8 has no color
    none = colored_map(subject, x, shard=(5, 8))
    assert (none.outputs.tolist(), none.passes, tuple(none.seen.shape)) == ([], 0, (0, 12))
    assert none.outputs.dtype == torch.long
    colored = [colored_map(subject, x, shard=(i, 8)) for i in range(8)]
    assert torch.equal(gradients.merge_maps(colored).seen, whole.seen)


class HiddenLeak(nn.Module):
    """``y_t = x_{t-1} + x_t``, and output 8 (no probe position) also reads input 30; records
    the batch size of every forward pass."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        y = shifted(x, -1) + x
        leak = torch.zeros_like(y)
        leak[:, 8] = 0.1 * x[:, 30]
        return y + leak


def test_a_hidden_leak_is_settled_with_plain_rows_of_its_seed_and_budget():
    """Probe (9 rows), period 2 (4 passes): color 0 has input 30 read by outputs 8 and 30, so
    its 20 rows are mapped plainly, with the map's seed (the same strengths as the plain map)
    and within its budget (one copy per pass: no pass of more than the 3 samples)."""
    model = HiddenLeak().double().eval()
    subject = make_subject(model, grid=(40,), layout="BTC")
    x = inputs_of(subject)
    model.sizes.clear()
    dmap = colored_map(subject, x, seed=5, per_pass=3 * 40)
    assert (dmap.method, dmap.passes) == ("colored", 9 + 2 * 2 + 20)
    assert set(model.sizes) == {1, 3}  # the cost's probe pass of one sample, then 3 per pass
    assert pairs_of(dmap) == taps_pairs((-1, 0), 40) | {(8, 30)}
    assert torch.equal(dmap.strength, plain_map(subject, x, seed=5).strength)
    assert not torch.equal(dmap.strength, plain_map(subject, x, seed=0).strength)


class Wide(nn.Module):
    """``y_t = x_{t-15} + ... + x_t`` (16 colors), recording the batch size of every pass."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return sum(shifted(x, -k) for k in range(16))


def test_the_colored_passes_keep_to_the_budget():
    """16 colors make 8 chunks of 2 at the default budget; a budget of one copy per pass is
    kept by the colored passes too."""
    model = Wide().double().eval()
    subject = make_subject(model, grid=(40,), layout="BTC")
    x = inputs_of(subject)
    expected = taps_pairs(tuple(range(-15, 1)), 40)
    model.sizes.clear()
    assert pairs_of(colored_map(subject, x, per_pass=3 * 40)) == expected
    assert set(model.sizes) == {1, 3}
    model.sizes.clear()
    assert pairs_of(colored_map(subject, x)) == expected
    assert max(model.sizes) == 2 * 3


class Dropout(nn.Module):
    """``dropout(x)_{t-1}`` in training mode: the seed picks which inputs are dropped."""

    def forward(self, x):
        return shifted(nn.functional.dropout(x, 0.5, self.training), -1)


def test_the_colored_passes_draw_the_dropout_masks_of_the_maps_seed():
    """One copy per pass, each pass seeded alike: the colored map drops the inputs the plain
    map of the same seed drops (another seed drops others)."""
    subject = make_subject(Dropout().train(), grid=(40,), layout="BTC")
    x = inputs_of(subject)
    colored = colored_map(subject, x, seed=5, per_pass=3 * 40, max_colors_fraction=1.0)
    assert colored.method == "colored"
    assert torch.equal(colored.seen, plain_map(subject, x, seed=5, per_pass=3 * 40).seen)
    assert not torch.equal(colored.seen, plain_map(subject, x, seed=0, per_pass=3 * 40).seen)


def test_the_fallback_keeps_probe_rows_of_the_maps_seed():
    subject = taps_subject((-6, 0), 12)
    x = inputs_of(subject)
    dmap = colored_map(subject, x, seed=5)
    assert dmap.method == "plain"
    assert torch.equal(dmap.strength, plain_map(subject, x, seed=5).strength)


def test_no_interaction_is_measured_where_no_copies_are_stacked():
    """A budget of one copy per pass: the batch-interaction check (passes of 2 x 3 samples)
    is not needed, and not run."""
    model = Recorded().double().eval()
    subject = make_subject(model, grid=(12,), layout="BTC")
    model.sizes.clear()
    plain_map(subject, inputs_of(subject), per_pass=3 * 12)
    assert set(model.sizes) == {1, 3}


def test_dependency_map_passes_its_budget_on():
    model = Recorded().double().eval()
    subject = make_subject(model, grid=(12,), layout="BTC")
    x = inputs_of(subject)
    for options in ({}, {"method": "plain"}, {"outputs": torch.tensor([2, 3, 4])}):
        model.sizes.clear()
        dmap = dependency_map(subject, x, per_pass=3 * 12, **options)
        assert set(model.sizes) <= {1, 3}, options  # one copy of the 3 samples per pass
        assert pairs_of(dmap) <= taps_pairs((-1,), 12)
    model.sizes.clear()
    dependency_map(subject, x, method="plain")
    assert max(model.sizes) == 2 * 3  # the default budget stacks copies


def test_progress_advances_by_the_rows_mapped():
    subject = taps_subject((-1,), 12)
    x = inputs_of(subject)
    with progress.showing(True, stream=io.StringIO(), delay=0) as shown:
        progress.phase("gradients", 12)
        plain_map(subject, x)
        assert shown.bar.n == 12
        progress.phase("some", 3)
        plain_map(subject, x, outputs=torch.tensor([1, 4, 7]))
        assert shown.bar.n == 3


class FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise ValueError("no backward here")


def test_a_backward_that_raises_is_named():
    subject = make_subject(lambda x: shifted(FailingBackward.apply(x), -1), grid=(6,), layout="BTC")
    with pytest.raises(
        GradientUnavailable, match="^backward failed: ValueError: no backward here$"
    ):
        plain_map(subject, inputs_of(subject).double())


def test_a_pass_over_the_memory_budget_is_named():
    subject = taps_subject((-1,), 12)
    with memory.limited(1e-9), pytest.raises(
        memory.MemoryBudgetError, match=r"^one VJP pass \(3 input\(s\), torch.float64\) needs"
    ):
        plain_map(subject, inputs_of(subject))


# ---------------------------------------------------------------------------------------------
# Attribution of a color's two gradients to single outputs (hand-made gradients)

BETA = torch.tensor([1.0, 1.25, 1.5, 1.75], dtype=torch.float64)  # outputs 0 .. 3
MEMBERS = [torch.tensor([0, 2]), torch.tensor([1, 3])]  # colors 0 and 1


def gradients_of(owners):
    """``(g1, g2)`` of shape (2 colors, 2 samples, 4 inputs, 1): ``owners[c][(b, s)] = (t, a)``
    puts gradient ``a`` of output ``t`` at input ``s`` of sample ``b`` in color ``c`` (and
    ``a * beta[t]`` in the second pass; ``t = None``: ``a`` in the first pass only, ``t`` a
    float: that ratio)."""
    g1 = torch.zeros(2, 2, 4, 1, dtype=torch.float64)
    g2 = torch.zeros_like(g1)
    for c, entries in enumerate(owners):
        for (b, s), (t, a) in entries.items():
            if t == "raw":  # both gradients given: a = (first, second)
                g1[c, b, s, 0], g2[c, b, s, 0] = a
                continue
            ratio = 0.0 if t is None else BETA[t] if isinstance(t, int) else t
            g1[c, b, s, 0], g2[c, b, s, 0] = a, a * ratio
    return g1, g2


CLEAN_1 = {(0, 2): (1, 0.5), (1, 2): (1, -0.25), (0, 3): (3, 4.0)}  # color 1 resolves


def attribute(owners):
    seen, strength, unresolved = gradients._attribute(*gradients_of(owners), MEMBERS, BETA, 4)
    pairs = {(t, s) for t, s in seen.nonzero().tolist()}
    return pairs, strength, unresolved


def test_attribution_names_one_output_per_input_with_its_largest_gradient():
    # output 0 (weight 1.0) with a gradient of exactly 1: both passes give 1
    clean_0 = {(0, 0): (0, 1.0), (1, 0): (0, -5.0), (1, 1): (2, 3.0)}
    pairs, strength, unresolved = attribute([clean_0, CLEAN_1])
    assert unresolved == []
    assert pairs == {(0, 0), (2, 1), (1, 2), (3, 3)}
    assert [float(strength[t, s]) for t, s in [(0, 0), (2, 1), (1, 2), (3, 3)]] == [
        5.0,
        3.0,
        0.5,
        4.0,
    ]
    assert strength.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "color_0, flagged",
    [
        ({}, []),  # silent: nothing to attribute, nothing to settle
        ({(0, 0): (None, 2.0)}, [0]),  # the weighted pass cancelled: several contributors
        ({(0, 1): ("raw", (0.0, 1.5))}, [0]),  # the plain pass cancelled, though 1.5 = beta_2
        ({(0, 1): (1.1, 2.0)}, [0]),  # the ratio names no output (1.0 or 1.5)
        ({(0, 1): (0, 2.0), (1, 1): (2, 2.0)}, [0]),  # the samples name different outputs
        ({(0, 1): (1.5 * (1 + 0.9e-6), 2.0)}, []),  # within RATIO_TOLERANCE of output 2's
        ({(0, 1): (1.5 * (1 + 1.1e-6), 2.0)}, [0]),  # beyond it
    ],
)
def test_a_color_that_cannot_be_attributed_is_flagged_and_the_next_still_is(color_0, flagged):
    pairs, _, unresolved = attribute([color_0, CLEAN_1])
    assert unresolved == flagged
    resolved_0 = {(2, 1)} if color_0 and not flagged else set()
    assert pairs == {(1, 2), (3, 3)} | resolved_0


class KeywordEmbedding(nn.Module):
    """Tokens embedded by keyword (``embed(input=tokens)``), then ``x_{t-1}``."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(5, 4), nn.Linear(4, 5)

    def forward(self, tokens):
        return self.head(shifted(self.embed(input=tokens), -1))


def test_an_embedding_called_by_keyword_is_the_input():
    model = KeywordEmbedding().double()
    subject = make_subject(model, grid=(6,), layout="BT->BTC", vocab=5)
    x = inputs_of(subject)
    assert gradients.find_token_embedding(subject, x) is model.embed
    assert pairs_of(dependency_map(subject, x)) == taps_pairs((-1,), 6)


class Scaled(nn.Module):
    """``w[:1] * x_{t-1}``: autograd saves a view of the parameter ``w`` of ``size`` values."""

    def __init__(self, size):
        super().__init__()
        self.w = nn.Parameter(torch.ones(size, dtype=torch.float64))

    def forward(self, x):
        return self.w[:1] * shifted(x, -1)


class Squared(nn.Module):
    """``x_{t-1}^2`` (autograd saves ``x_{t-1}``) or ``2 x_{t-1}`` (it saves nothing)."""

    def __init__(self, squares):
        super().__init__()
        self.squares = squares

    def forward(self, x):
        y = shifted(x, -1)
        return y * y if self.squares else y * 2.0


def test_the_cost_of_a_pass_counts_what_autograd_saves():
    saving = make_subject(Squared(True), grid=(64,), layout="BTC")
    x = inputs_of(saving)
    free = make_subject(Squared(False), grid=(64,), layout="BTC")
    # the saved x_{t-1}: 64 values (float32, the subjects' dtype) for each of the 3 samples
    assert gradients.vjp_bytes(saving, x) >= gradients.vjp_bytes(free, x) + 3 * 64 * 4


def test_the_cost_of_a_pass_leaves_out_the_parameters():
    """What a copy costs is what the pass itself holds: a parameter (saved by autograd, but
    the model's) of a million values costs no more than one of a single value."""
    small = make_subject(Scaled(1), grid=(12,), layout="BTC")
    large = make_subject(Scaled(1 << 20), grid=(12,), layout="BTC")
    x = inputs_of(small)
    cost = gradients.vjp_bytes(small, x)
    assert cost == gradients.vjp_bytes(large, x)
    assert 0 < cost < 1 << 20
