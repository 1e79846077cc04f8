"""The subject, piece by piece: structured outputs, orders, positions, random inputs, targets,
the native <-> canonical call, the batch-size fallback, the diagnoses of a model that raised, and
``make_subject``'s checks. Where the message is the product it is checked whole: it names the
problem and the fix."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from properties import AdapterError, make_subject
from properties.errors import ModelError
from properties.subject.canonical import (
    NAMED_ORDERS,
    Subject,
    named_order,
    output_fields,
    ranks_from_order,
    select_output,
)
from properties.subject.layout import Layout


def message(call, *args, **kwargs) -> str:
    with pytest.raises(AdapterError) as info:
        call(*args, **kwargs)
    return str(info.value)


class Scale(nn.Module):
    """``y = w * x``: any layout in, the same layout out."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.w * x


# ---------------------------------------------------------------------------------------------
# Structured outputs


class Keyed:
    """A ``transformers.ModelOutput``-like value: keys() and item access, no dict."""

    def __init__(self, **values):
        self._values = values

    def keys(self):
        return self._values.keys()

    def __getitem__(self, key):
        return self._values[key]


@dataclass
class Pair:
    logits: torch.Tensor
    loss: float


class Slotted:
    __slots__ = ("logits",)


@dataclass(slots=True)
class SlottedPair:
    logits: torch.Tensor
    _state: int = 0


def test_output_fields_of_every_kind_of_value():
    t = torch.zeros(1)
    assert output_fields({"logits": t, 3: t}) == ["logits", "3"]
    assert output_fields(Keyed(scores=t, past=None)) == ["scores", "past"]
    assert output_fields((t, t, t)) == ["0", "1", "2"]
    assert output_fields([t]) == ["0"]
    assert output_fields(Pair(t, 0.0)) == ["logits", "loss"]
    assert output_fields(SimpleNamespace(logits=t, _cache=t, keys=3)) == ["logits", "keys"]
    assert output_fields(Slotted()) == []
    assert output_fields(SlottedPair(t)) == ["logits", "_state"]  # a dataclass's own fields
    assert output_fields(3) == []


def test_select_output_follows_a_path():
    t, u = torch.zeros(2), torch.ones(3)
    assert select_output(t, None) is t
    assert select_output({"logits": t}, "logits") is t
    assert select_output(Keyed(logits=t), "logits") is t
    assert select_output(SimpleNamespace(logits=t), "logits") is t
    assert select_output(Pair(t, 0.0), "logits") is t
    nested = {"hidden_states": (u, t), "logits": u}
    assert select_output(nested, "hidden_states.-1") is t
    assert select_output(nested, "hidden_states.-2") is u
    assert select_output(nested, "hidden_states.0") is u
    assert select_output(nested, "hidden_states.1") is t
    assert select_output([[u, t]], "0.1") is t


def test_a_structured_output_without_output_names_its_fields_and_an_example():
    t = torch.zeros(1)
    fix = "say which field holds the predictions with --output (e.g. --output {})"
    assert message(select_output, {"hidden": t, "logits": t}, None) == (
        "the model returns a dict, not a tensor (fields: hidden, logits): " + fix.format("logits")
    )
    assert message(select_output, (t, t), None) == (
        "the model returns a tuple, not a tensor (fields: 0, 1): " + fix.format("0")
    )
    assert message(select_output, 3, None) == (
        "the model returns a int, not a tensor (fields: none): " + fix.format("logits")
    )


def test_a_path_that_leads_nowhere_lists_the_fields_there():
    t = torch.zeros(1)
    fix = "pass one of the listed fields to --output"
    assert message(select_output, {"logits": t}, "scores") == (
        f"the model's output has no field 'scores' (in --output scores; fields: logits): {fix}"
    )
    out = {"hidden": (t, t)}
    for step in ["2", "-3", "x", "X0"]:
        assert message(select_output, out, f"hidden.{step}").startswith(
            f"the model's output has no field {step!r} (in --output hidden.{step}; "
            "fields: 0, 1)"
        )
    assert message(select_output, Keyed(a=t), "b").endswith("(in --output b; fields: a): " + fix)
    assert message(select_output, SimpleNamespace(a=t), "b").startswith(
        "the model's output has no field 'b'"
    )
    assert "fields: none" in message(select_output, {"a": 3}, "a.b")
    # not a tensor at the end of the path
    assert message(select_output, out, "hidden") == (
        "--output hidden selects a tuple, not a tensor: pick a tensor field of the output "
        "(fields: 0, 1)"
    )


# ---------------------------------------------------------------------------------------------
# Orders


def test_ranks_are_the_inverse_of_the_order():
    assert ranks_from_order([2, 0, 1], 3).tolist() == [1, 2, 0]
    assert ranks_from_order(torch.tensor([[3, 1], [0, 2]]), 4).tolist() == [2, 1, 3, 0]
    assert ranks_from_order([2.0, 0.0, 1.0], 3).tolist() == [1, 2, 0]
    assert ranks_from_order(torch.tensor([1 + 0j, 0j]), 2).tolist() == [1, 0]
    assert ranks_from_order(range(4), 4).dtype == torch.long


def test_orders_that_are_not_permutations_say_so():
    whole = "the order has values that are not whole numbers: pass the positions in " \
        "generation order, as integers"
    assert message(ranks_from_order, [0.5, 1.0, 0.0], 3) == whole
    assert message(ranks_from_order, torch.tensor([1 + 1j, 0j]), 2) == whole
    fix = "pass the positions in generation order, each exactly once"
    assert message(ranks_from_order, [0, 1, 2], 4) == (
        "the order must be a permutation of the 4 positions of the grid (got 3 values): " + fix
    )
    assert message(ranks_from_order, [0, 1, 1], 3).endswith("(got 3 values): " + fix)
    assert "(got 4 values)" in message(ranks_from_order, [0, 1, 2, 3], 3)
    assert "permutation" in message(ranks_from_order, [1, 2, 3], 3)


def test_named_orders_over_a_subpixel_axis():
    grid = (2, 3)  # S first (BCT read as BST): positions [[0, 1, 2], [3, 4, 5]]
    assert named_order("raster", grid, 0).tolist() == [0, 1, 2, 3, 4, 5]
    assert named_order("raster+channels", grid, 0).tolist() == [0, 3, 1, 4, 2, 5]
    assert named_order("channels+raster", grid, 0).tolist() == [0, 1, 2, 3, 4, 5]
    grid = (3, 2)  # S last (BTC read as BTS)
    assert named_order("raster+channels", grid, 1).tolist() == [0, 1, 2, 3, 4, 5]
    assert named_order("channels+raster", grid, 1).tolist() == [0, 2, 4, 1, 3, 5]
    assert named_order("raster+channels", grid, None).tolist() == [0, 1, 2, 3, 4, 5]
    assert named_order("raster", grid, 1).tolist() == [0, 1, 2, 3, 4, 5]
    grid = (2, 2, 2)  # H, S, W
    assert named_order("raster+channels", grid, 1).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert named_order("channels+raster", grid, 1).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]


def test_make_subject_orders():
    s = make_subject(Scale(), grid=(2, 2), layout="BCHW", features=3, order="raster+channels")
    assert (s.grid, s.subpixel_axis, s.features) == ((3, 2, 2), 0, 1)
    assert s.ranks.tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    s = make_subject(Scale(), grid=(2, 2), layout="BHWC", features=3, order="channels+raster")
    assert (s.grid, s.subpixel_axis) == ((2, 2, 3), 2)
    assert s.ranks.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    s = make_subject(Scale(), grid=(4,), layout="BTC", features=2, order="raster")
    assert (s.grid, s.subpixel_axis, s.features) == ((4,), None, 2)
    assert s.ranks.tolist() == [0, 1, 2, 3]
    s = make_subject(Scale(), grid=(4,), layout="BTC", features=2, order=[3, 2, 1, 0])
    assert s.subpixel_axis is None and s.ranks.tolist() == [3, 2, 1, 0]
    # a permutation of every (position, channel) pair is a sub-pixel order
    s = make_subject(Scale(), grid=(2,), layout="BCT", features=2, order=[3, 2, 1, 0])
    assert (s.grid, s.subpixel_axis, s.features) == ((2, 2), 0, 1)
    assert s.ranks.tolist() == [3, 2, 1, 0]
    s = make_subject(Scale(), grid=(4,), layout="BT", order=[1, 0, 3, 2])
    assert s.subpixel_axis is None and s.ranks.tolist() == [1, 0, 3, 2]
    assert make_subject(Scale(), grid=(4,), layout="BT").ranks.tolist() == [0, 1, 2, 3]
    assert message(make_subject, Scale(), grid=(4,), order="zigzag") == (
        "unknown order 'zigzag': use one of raster, raster+channels, channels+raster, or a "
        "permutation of the positions"
    )
    assert NAMED_ORDERS == ("raster", "raster+channels", "channels+raster")


# ---------------------------------------------------------------------------------------------
# Sub-pixel views


@pytest.mark.parametrize(
    "layout, grid, axis, layout_in, layout_out",
    [
        ("BCHW", (3, 4), (0, (2, 3, 4)), "BSHW", None),
        ("BHCW", (3, 4), (1, (3, 2, 4)), "BHSW", None),
        ("BHWC", (3, 4), (2, (3, 4, 2)), "BHWS", None),
        ("BCHW->B(SC)HW", (3, 4), (0, (2, 3, 4)), "BSHW", "B(SC)HW"),
        ("BCHW->BSHWC", (3, 4), (0, (2, 3, 4)), "BSHW", "BSHWC"),
        ("BCT->BST", (5,), (0, (2, 5)), "BST", "BST"),
    ],
)
def test_a_subpixel_order_reads_the_channels_as_a_grid_axis(
    layout, grid, axis, layout_in, layout_out
):
    s = make_subject(Scale(), grid=grid, layout=layout, features=2, order="raster+channels")
    assert (s.subpixel_axis, s.grid) == axis
    assert s.layout_in == Layout(layout_in)
    assert s.layout_out == (None if layout_out is None else Layout(layout_out))
    assert s.features == 1 and s.pixel_grid == grid


@pytest.mark.parametrize(
    "options, problem",
    [
        (
            dict(layout="BHW", vocab=5),
            "tokens have no channel axis to put in the generation order",
        ),
        (dict(layout="BHW"), "layout BHW has no channel axis C to put in the generation order"),
        (dict(layout="bcsw"), "layout 'bcsw' uses S, the letter of the sub-pixel axis"),
    ],
)
def test_a_subpixel_order_needs_float_channels(options, problem):
    fix = "a sub-pixel order needs float inputs with channels (e.g. --layout BCHW)"
    assert message(
        make_subject, Scale(), grid=(3, 4), features=2, order="raster+channels", **options
    ) == f"{problem}: {fix}"


def test_a_subpixel_output_layout_names_s_and_c():
    options = dict(grid=(3, 4), features=2, order="raster+channels")
    assert message(make_subject, Scale(), layout="BCHW->BCHW", **options) == (
        "output layout 'BCHW' has 2 grid axes but the grid has 3: at sub-pixel level the output "
        "layout names the channel axis S and the values per sub-position C, e.g. "
        "BCHW->B(SC)HW"
    )
    assert message(make_subject, Scale(), layout="BHWC->BHWC", **options).endswith(
        "e.g. BHWC->B(SC)HW"
    )
    assert message(make_subject, Scale(), layout="BCHW->BHSWC", **options) == (
        "output layout BHSWC orders the grid axes HSW, the input BSHW (its C read as S) SHW: "
        "write the output's grid axes in the input's order"
    )


def test_a_subpixel_subject_calls_the_model_with_its_channels():
    s = make_subject(Scale(), grid=(3,), layout="BCT->B(SC)T", features=2, order="raster+channels")
    x = torch.arange(6.0).reshape(1, 6, 1)  # canonical: S major, T minor
    y = s(x)
    assert y.shape == (1, 6, 1)
    assert torch.equal(y, 2 * x.float())


# ---------------------------------------------------------------------------------------------
# Shape facts, inputs and targets


def test_positions_as_the_user_sees_them():
    assert make_subject(Scale(), grid=(5,)).position(torch.tensor(3)) == 3
    assert type(make_subject(Scale(), grid=(5,)).position(torch.tensor(3))) is int
    s = make_subject(Scale(), grid=(3, 4))
    assert [s.position(f) for f in (0, 3, 4, 7, 11)] == [[0, 0], [0, 3], [1, 0], [1, 3], [2, 3]]
    s = make_subject(Scale(), grid=(2, 3, 4), layout="BCHWD")
    assert s.position(23) == [1, 2, 3] and s.position(13) == [1, 0, 1]
    assert s.position(torch.tensor(5)) == [0, 1, 1]


def test_with_model_shares_everything_but_the_model():
    s = make_subject(
        Scale(), grid=(4,), layout="BCT", classes=3, name="net", predicts="next", order=[3, 2, 1, 0]
    )
    s.notes.append("a note")
    other = Scale()
    copy = s.with_model(other)
    assert copy.model is other and s.model is not other
    assert copy.notes is s.notes  # a note added through either is the audit's note
    assert (copy.grid, copy.layout_in, copy.classes, copy.name, copy.predicts) == (
        (4,), Layout("BCT"), 3, "net", "next"
    )
    assert copy.ranks.tolist() == [3, 2, 1, 0]


def test_a_subject_built_directly_is_in_raster_order():
    s = Subject(model=Scale(), grid=(2, 3), layout_in=Layout("BHW"))
    assert s.ranks.tolist() == [0, 1, 2, 3, 4, 5] and s.is_raster
    s = Subject(model=Scale(), grid=(2,), layout_in=Layout("BT"), ranks=torch.tensor([1, 0]))
    assert s.ranks.tolist() == [1, 0] and not s.is_raster


def test_random_inputs_follow_the_subject():
    def draw(s, n=200, seed=0, **kwargs):
        return s.draw_inputs(n, torch.Generator().manual_seed(seed), **kwargs)

    tokens = make_subject(Scale(), grid=(6,), vocab=7)
    x = draw(tokens)
    assert x.shape == (200, 6) and x.dtype == torch.long
    assert (x.min(), x.max()) == (0, 6)  # the whole vocabulary
    assert torch.equal(x, draw(tokens)) and not torch.equal(x, draw(tokens, seed=1))

    normal = make_subject(Scale(), grid=(3, 2), features=2)
    x = draw(normal)
    assert x.shape == (200, 6, 2) and x.dtype == torch.float64
    assert x.min() < -2 and x.max() > 2 and abs(x.mean()) < 0.1 and abs(x.std() - 1) < 0.1
    assert torch.equal(x, draw(normal)) and not torch.equal(x, draw(normal, seed=1))

    ranged = make_subject(Scale(), grid=(6,), features=2, value_range=(5.0, 7.0))
    x = draw(ranged)
    assert x.shape == (200, 6, 2) and x.dtype == torch.float64
    assert 5.0 <= x.min() < 5.05 and 6.95 < x.max() < 7.0
    assert x.frac().abs().sum() > 0  # not rounded: no classes
    assert torch.equal(x, draw(ranged)) and not torch.equal(x, draw(ranged, seed=1))

    classes = make_subject(Scale(), grid=(6,), classes=4, value_range=(-2.0, 6.0))
    x = draw(classes, integral=True)
    assert torch.equal(x, x.round()) and (x.min(), x.max()) == (0, 3)
    assert x.dtype == torch.float64
    x = draw(classes)
    assert x.frac().abs().sum() > 0 and x.min() < 0 and x.max() > 3  # integral only on demand
    x = draw(ranged, integral=True)
    assert x.frac().abs().sum() > 0  # nothing to round to without classes


def test_targets_per_convention_and_order():
    tokens = make_subject(Scale(), grid=(4,), vocab=9)
    x = torch.tensor([[5, 6, 7, 8]])
    assert tokens.targets(x, "current").tolist() == [[5, 6, 7, 8]]
    assert tokens.targets(x, "auto").tolist() == [[5, 6, 7, 8]]
    assert tokens.targets(x, "next").tolist() == [[6, 7, 8, -1]]
    ordered = make_subject(Scale(), grid=(4,), vocab=9, order=[2, 0, 3, 1])
    # ranks: position 2 first, then 0, 3, 1: the output at 2 predicts 0, at 0 predicts 3...
    assert ordered.targets(x, "next").tolist() == [[8, -1, 5, 6]]

    classes = make_subject(Scale(), grid=(4,), classes=3, layout="BTC")
    x = torch.tensor([[[0.2], [1.6], [-4.0], [7.0]]], dtype=torch.float64)
    t = classes.targets(x, "current")
    assert t.tolist() == [[0, 2, 0, 2]] and t.dtype == torch.long
    assert classes.targets(x, "next").tolist() == [[2, 0, 2, -1]]
    two = make_subject(Scale(), grid=(4,), classes=3, features=2)
    assert two.targets(torch.zeros(1, 4, 2), "current") is None  # several values per position
    assert make_subject(Scale(), grid=(4,)).targets(x, "current") is None


# ---------------------------------------------------------------------------------------------
# The call: native and canonical tensors


class Record(nn.Module):
    """Returns a fixed function of its input and remembers what it was given."""

    def __init__(self, out=lambda x: x):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.out = out
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return self.out(x) * self.w


def test_the_native_input_of_each_layout():
    x = torch.arange(2 * 6 * 2, dtype=torch.float64).reshape(2, 6, 2)  # (B, N, F), grid (2, 3)
    grid = x.reshape(2, 2, 3, 2)
    for layout, native in [
        ("BHWC", grid),
        ("BCHW", grid.permute(0, 3, 1, 2)),
        ("B(HWC)", grid.reshape(2, 12)),
    ]:
        s = make_subject(Scale(), grid=(2, 3), layout=layout, features=2)
        assert torch.equal(s.native_input(x), native)
    s = make_subject(Scale(), grid=(2, 3), layout="BHW")
    assert torch.equal(s.native_input(x[..., :1]), x[..., 0].reshape(2, 2, 3))
    tokens = make_subject(Scale(), grid=(2, 3), layout="BWH", vocab=5)
    ids = torch.arange(12).reshape(2, 6)
    assert torch.equal(tokens.native_input(ids), ids.reshape(2, 2, 3))
    s = make_subject(Scale(), grid=(6,), layout="BT", features=3)
    assert message(s.native_input, torch.zeros(1, 6, 3)) == (
        "layout BT has no channel axis but --features is 3: add C to the layout (e.g. BTC) or "
        "drop --features"
    )


def test_the_call_gives_the_model_its_own_float_copy_and_reads_its_output_back():
    model = Record(lambda x: x.add_(1))  # changes its input in place
    s = make_subject(model, grid=(3, 2), layout="BCHW", features=2)
    x = torch.arange(12, dtype=torch.float64).reshape(1, 6, 2)
    before = x.clone()
    y = s(x)
    assert torch.equal(x, before)  # the audit's input is untouched
    assert model.seen[0].dtype == torch.float32 and model.seen[0].shape == (1, 2, 3, 2)
    assert y.shape == (1, 6, 2) and torch.equal(y, (before + 1).float())
    assert s.layout_out == Layout("BCHW") and s.first_batch == 1

    double = Record().double()
    s = make_subject(double, grid=(4,), layout="BT")
    s(torch.zeros(2, 4, 1))
    assert double.seen[0].dtype == torch.float64

    tokens = Record(lambda ids: torch.stack([ids.float(), -ids.float()], -1))
    s = make_subject(tokens, grid=(4,), vocab=9)
    y = s(torch.tensor([[1, 2, 3, 4]]))
    assert tokens.seen[0].dtype == torch.long
    assert y.tolist() == [[[1, -1], [2, -2], [3, -3], [4, -4]]]


def test_the_input_goes_to_the_models_device():
    class Where(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))
            self.devices = []

        def forward(self, x):
            self.devices.append(x.device)
            return torch.zeros(x.shape[0], 4)

    model = Where()
    s = make_subject(model, grid=(4,), layout="BT")
    model.to("meta")  # the one other device on a CPU-only machine (make_subject refuses it)
    assert s(torch.zeros(2, 4, 1)).shape == (2, 4, 1)
    assert model.devices == [torch.device("meta")]


def test_the_canonical_output_of_each_output_layout():
    s = make_subject(Scale(), grid=(4,), layout="BT->BCT")
    y = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    assert torch.equal(s.canonical_output(y), y.transpose(1, 2))
    s = make_subject(Scale(), grid=(2, 2), layout="BHW")
    y = torch.arange(8.0).reshape(2, 2, 2)
    assert torch.equal(s.canonical_output(y), y.reshape(2, 4, 1))  # one implicit channel
    assert s.layout_out == Layout("BHW")  # inferred once, then kept
    s = make_subject(Scale(), grid=(4,), layout="BT->B(CT)")
    y = torch.arange(2 * 12.0).reshape(2, 12)
    assert torch.equal(s.canonical_output(y), y.reshape(2, 3, 4).transpose(1, 2))


def test_an_output_that_does_not_fit_its_explicit_layout():
    s = make_subject(Scale(), grid=(8,), layout="BT->BCT")
    fix = "pass the right output layout with --layout IN->OUT"
    assert message(s.canonical_output, torch.zeros(2, 8, 4)) == (
        "the model's output has shape (2, 8, 4), which does not fit output layout BCT and grid "
        f"(8,): {fix}"
    )
    s = make_subject(Scale(), grid=(8,), layout="BT->BTC")
    assert message(s.canonical_output, torch.zeros(2, 8, 4), 3) == (
        "the model's output has shape (2, 8, 4), which does not fit output layout BTC and grid "
        f"(8,): {fix}"
    )
    assert s.canonical_output(torch.zeros(2, 8, 4), 2).shape == (2, 8, 4)


def test_an_inferred_output_that_fits_nothing_is_explained():
    # a known pattern (the last position only) gets its own story...
    s = make_subject(Scale(), grid=(8,), layout="BT")
    assert "predicts the last position only" in message(s.canonical_output, torch.zeros(2, 1, 5))
    assert s.layout_out is None
    # ...and an unknown one the layout's own message
    assert message(s.canonical_output, torch.zeros(2, 7, 6)).startswith(
        "the model's output has shape (2, 7, 6), which does not fit grid (8,)"
    )
    # the batch both are told about is the input's, not the output's
    assert "predicts the last position only" in message(
        s.canonical_output, torch.zeros(3, 1, 5), 3
    )
    assert message(s.canonical_output, torch.zeros(3, 1, 5), 2).startswith(
        "the model's output has shape (3, 1, 5), which does not fit grid (8,) (expected e.g. "
        "(2, 8, K) or (2, K, 8))"
    )
    assert s.canonical_output(torch.zeros(3, 8), 3).shape == (3, 8, 1)
    # a 0-d output (a loss, say) read on its own: a batch of one that it does not fit
    s = make_subject(Scale(), grid=(8,), layout="BT")
    assert message(s.canonical_output, torch.tensor(3.0)).startswith(
        "the model's output has shape (), which does not fit grid (8,) (expected e.g. "
        "(1, 8, K) or (1, K, 8))"
    )


# ---------------------------------------------------------------------------------------------
# One batch size


class FirstBatch(nn.Module):
    """Caches a tensor sized by its first batch: fails at another batch size (``broadcast``:
    returns the first batch size instead)."""

    def __init__(self, broadcast=False):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.cache = None
        self.broadcast = broadcast
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if self.cache is None:
            self.cache = torch.zeros(x.shape[0], 1)
        if self.broadcast:
            return self.w * x[:1] + self.cache
        return self.w * x + self.cache


@pytest.mark.parametrize("broadcast", [False, True])
def test_a_model_run_at_its_first_batch_from_then_on(broadcast):
    model = FirstBatch(broadcast)
    s = make_subject(model, grid=(1,), layout="BT")
    x = torch.arange(5.0).reshape(5, 1, 1)
    if broadcast:  # returns batch 2 always; right for the first call only where samples agree
        x = torch.ones(5, 1, 1)
    assert torch.equal(s(x[:2]), x[:2].float())
    assert (s.first_batch, s.batch) == (2, None)
    y = s(x)
    assert torch.equal(y, x.float())
    assert s.batch == 2
    assert model.batches[-3:] == [2, 2, 2]  # 5 samples in slices of 2, the last one padded
    assert len(s.notes) == 1
    assert s.notes[0].startswith("the model ran on batch 2 and fails on batch 5")
    if broadcast:  # the note says what was wrong with the output
        assert "(BatchMismatch: the output has 2 samples, not one per input sample)" in s.notes[0]
    s.notes.append("the model ran on batch 2 and ...")  # (a copy's note: the same note)
    s(x[:1])
    assert len(s.notes) == 2 and s.first_batch == 2


def test_the_note_is_added_once_across_copies():
    model = FirstBatch()
    s = make_subject(model, grid=(1,), layout="BT")
    s(torch.zeros(2, 1, 1))
    copy = s.with_model(model)
    copy(torch.zeros(3, 1, 1))
    assert copy.batch == 2 and len(s.notes) == 1
    other = s.with_model(model)
    other.first_batch = 2
    other(torch.zeros(4, 1, 1))
    assert len(s.notes) == 1  # the note is there already


def test_a_fixed_batch_runs_in_padded_slices():
    model = FirstBatch()
    s = make_subject(model, grid=(2,), layout="BT", batch=3)
    x = torch.arange(14.0).reshape(7, 2, 1)
    assert torch.equal(s(x), x.float())
    assert model.batches == [3, 3, 3]
    assert torch.equal(s(x[:3]), x[:3].float()) and model.batches[-1] == 3
    assert s.notes == [] and s.first_batch == 7


def test_a_model_that_fails_at_every_batch_size_is_a_model_error():
    class Fussy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                raise ValueError("only once")
            return self.w * x

    s = make_subject(Fussy(), grid=(3,), layout="BT")
    s(torch.zeros(2, 3, 1))
    with pytest.raises(ModelError, match="raised ValueError: only once"):
        s(torch.zeros(4, 3, 1))
    assert s.batch is None and s.notes == []


class FailsLater(nn.Module):
    """Runs, then (once ``fail`` is set) raises at batch sizes in ``fail``, ``times`` times."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.fail, self.times = (), 0

    def forward(self, x):
        if x.shape[0] in self.fail and self.times:
            self.times -= 1
            raise RuntimeError("not now")
        return self.w * x


def test_a_fixed_batch_is_never_switched_for_another():
    model = FailsLater()
    s = make_subject(model, grid=(3,), layout="BT", batch=2)
    s(torch.zeros(4, 3, 1))
    assert (s.first_batch, s.batch) == (4, 2)
    model.fail, model.times = (2,), 1  # a failure at the fixed batch: batch 4 would work
    with pytest.raises(ModelError, match="raised RuntimeError: not now"):
        s(torch.zeros(3, 3, 1))
    assert s.batch == 2 and s.notes == []


def test_a_failure_at_the_first_batch_size_is_not_blamed_on_the_batch_size():
    model = FailsLater()
    s = make_subject(model, grid=(3,), layout="BT")
    s(torch.zeros(2, 3, 1))
    model.fail, model.times = (2,), 1  # fails once: a retry at the same size would pass
    with pytest.raises(ModelError, match="raised RuntimeError: not now"):
        s(torch.zeros(2, 3, 1))
    assert s.batch is None and s.notes == []
    model.fail, model.times = (3,), 1  # at another size, the first size is tried
    assert s(torch.ones(3, 3, 1)).shape == (3, 3, 1)
    assert s.batch == 2 and s.notes[0].startswith("the model ran on batch 2 and fails on batch 3")


def test_a_fixed_batch_that_the_model_ignores():
    class Squeeze(nn.Module):
        def forward(self, x):
            return x.sum(0)  # no batch axis left

    s = make_subject(Squeeze(), grid=(3,), layout="BT", batch=2)
    with pytest.raises(ModelError, match="the output has 3 samples, not one per input sample"):
        s(torch.zeros(4, 3, 1))

    class Scalar(nn.Module):
        def forward(self, x):
            return x.sum()

    s = make_subject(Scalar(), grid=(3,), layout="BT", batch=2)
    with pytest.raises(ModelError, match="the output has 0 samples"):
        s(torch.zeros(4, 3, 1))


def test_a_batch_of_the_first_size_is_trusted():
    """A model whose output batch differs from its input's is not re-run at the first batch
    size unless that size is what came back (a cached tensor broadcast)."""

    class Half(nn.Module):
        def forward(self, x):
            return x[: max(1, x.shape[0] // 2)]

    s = make_subject(Half(), grid=(3,), layout="BT->BT")
    s.first_batch = 5
    with pytest.raises(AdapterError, match="does not fit output layout BT"):
        s(torch.zeros(4, 3, 1))
    assert s.batch is None


# ---------------------------------------------------------------------------------------------
# A model that raised: what to check


def test_the_generic_model_error_says_on_what_input():
    class Raises(nn.Module):
        def forward(self, x):
            raise ValueError("boom\n  deep inside")

    fix = "check --layout, --features, --vocab and --length/--shape against what the model expects"
    s = make_subject(Raises(), grid=(4,), layout="BCT", features=2)
    with pytest.raises(ModelError) as info:
        s(torch.zeros(2, 4, 2))
    assert str(info.value) == (
        "the model raised ValueError: boom deep inside on torch.float32 values of shape "
        f"(2, 2, 4) with autograd on (layout BCT, grid (4,)): {fix}"
    )
    s = make_subject(Raises(), grid=(4,), vocab=3)
    with torch.no_grad(), pytest.raises(ModelError) as info:
        s(torch.zeros(1, 4, dtype=torch.long))
    assert str(info.value) == (
        f"the model raised ValueError: boom deep inside on tokens of shape (1, 4) "
        f"(layout BT, grid (4,)): {fix}"
    )
    s = make_subject(
        nn.Identity(), grid=(4,), layout="BT", forward=lambda m, x: m(x) + torch.zeros(3)
    )
    assert message(s, torch.zeros(2, 4, 1)).startswith(
        "the model (through the forward hook) raised RuntimeError: "
    )
    s = make_subject(lambda x: x.foo(), grid=(4,), layout="BT")  # not a module: no diagnosis
    assert "raised AttributeError" in message(s, torch.zeros(1, 4, 1))


class Embedded(nn.Module):
    def __init__(self, entries=5, first=None):
        super().__init__()
        self.first = first
        self.table = nn.Embedding(entries, 3)

    def forward(self, x):
        if self.first is not None:
            x = self.first(x)
        return self.table(x)


def test_tokens_beyond_the_embedding_name_vocab():
    s = make_subject(Embedded(5), grid=(4,), vocab=8, layout="BT")
    assert message(s, torch.tensor([[7, 0, 1, 2]])) == (
        "--vocab is 8 but the nn.Embedding 'table' that reads the tokens has 5 entries "
        "(tokens >= 5 are out of its range): pass --vocab 5 (or less)"
    )
    # an embedding large enough: the model's own error
    s = make_subject(Embedded(5, first=lambda x: x + 10), grid=(4,), vocab=5, layout="BT")
    assert "raised IndexError" in message(s, torch.tensor([[1, 0, 1, 2]]))


def test_an_embedding_of_the_right_size_is_not_blamed():
    class After(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(5, 3)

        def forward(self, ids):
            self.table(ids)
            raise ValueError("after the embedding")

    s = make_subject(After(), grid=(4,), vocab=5, layout="BT")
    assert message(s, torch.tensor([[4, 0, 1, 2]])).startswith(
        "the model raised ValueError: after the embedding on tokens"
    )
    s = make_subject(After(), grid=(4,), vocab=4, layout="BT")
    assert "raised ValueError" in message(s, torch.tensor([[3, 0, 1, 2]]))


def test_an_embedding_called_by_keyword_or_on_a_cast_is_found():
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(6, 3)

        def forward(self, x):
            return self.table(input=x)

    assert "nn.Embedding 'table' (6 entries)" in message(
        make_subject(Keyword(), grid=(4,), layout="BT"), torch.zeros(1, 4, 1)
    )
    s = make_subject(Embedded(5, first=lambda x: x.int()), grid=(4,), vocab=9, layout="BT")
    assert message(s, torch.tensor([[8, 0, 1, 2]])).startswith(
        "--vocab is 9 but the nn.Embedding 'table'"
    )


def test_floats_fed_to_an_embedding_name_vocab():
    s = make_subject(Embedded(6), grid=(4,), layout="BT")
    assert message(s, torch.zeros(1, 4, 1)) == (
        "the model feeds its input to the nn.Embedding 'table' (6 entries): it reads tokens, but "
        "the audit gave it floats: pass --vocab 6 (and a token layout such as BT)"
    )


def test_an_embedding_that_does_not_read_the_input_is_not_blamed():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(5, 3)

        def forward(self, x):
            return self.table(x.long() + 7)  # reads a function of the input, out of range

    s = make_subject(Late(), grid=(4,), layout="BT")
    line = message(s, torch.zeros(1, 4, 1))
    assert line.startswith("the model raised IndexError") and "--vocab" in line

    class Before(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(5, 3)

        def forward(self, x):
            raise ValueError("before any embedding")

    assert "raised ValueError: before any embedding" in message(
        make_subject(Before(), grid=(4,), layout="BT"), torch.zeros(1, 4, 1)
    )
    # the hooks are gone afterwards: the embedding runs again
    model = Before()
    message(make_subject(model, grid=(4,), layout="BT"), torch.zeros(1, 4, 1))
    assert not model.table._forward_pre_hooks


def test_the_first_embedding_that_reads_the_input_is_named():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.other = nn.Embedding(50, 3)
            self.tokens = nn.Embedding(4, 3)

        def forward(self, x):
            self.other(torch.zeros_like(x, dtype=torch.long) + 1)  # runs first, not on x
            return self.tokens(x)

    s = make_subject(Two(), grid=(4,), vocab=9, layout="BT")
    assert "nn.Embedding 'tokens'" in message(s, torch.tensor([[8, 1, 0, 1]]))


def test_a_model_on_several_devices_is_told_to_move():
    model = Scale()
    s = make_subject(model, grid=(4,), layout="BT")
    model.register_buffer("stray", torch.empty(2, device="meta"))

    def forward(x):  # what torch says, without the seconds its first mixed-device op takes
        raise RuntimeError("Expected all tensors to be on the same device")

    model.forward = forward
    assert message(s, torch.zeros(1, 4, 1)) == (
        "the model's parameters and buffers are on several devices (cpu, meta), and it raised "
        "on its input: move the whole model to one device (model.to(device)) before auditing it"
    )


# ---------------------------------------------------------------------------------------------
# make_subject's checks


@pytest.mark.parametrize(
    "options, line",
    [
        (dict(grid=()), "the grid () is empty: give --length T or --shape H W"),
        (dict(grid=(4, 0)), "the grid (4, 0) is empty: give --length T or --shape H W"),
        (
            dict(grid=(4,), predicts="future"),
            "unknown convention 'future': use one of current, next, auto",
        ),
        (dict(grid=(4,), vocab=0), "--vocab must be positive, got 0: give the vocabulary size"),
        (dict(grid=(4,), features=0), "--features must be positive, got 0: give F >= 1"),
        (dict(grid=(4,), batch=0), "--batch must be positive, got 0: give a batch size >= 1"),
        (
            dict(grid=(4,), forward="model(x)[0]"),
            "forward is a str, not a callable: pass a function (model, x) -> predictions",
        ),
        (
            dict(grid=(4,), vocab=5, layout="BTC"),
            "token inputs have no channel axis, but layout BTC has C: use a layout without C for "
            "tokens (e.g. BT)",
        ),
    ],
)
def test_make_subject_rejects_bad_options_in_one_line(options, line):
    assert message(make_subject, Scale(), **options) == line


def test_make_subject_rejects_a_model_on_the_meta_device():
    with torch.device("meta"):
        model = nn.Linear(3, 3)
    assert message(make_subject, model, grid=(4,)) == (
        "the model's parameters are on the meta device (shapes only, no values): materialize "
        "its weights first (model.to_empty(device='cpu'), then load them)"
    )


def test_make_subject_passes_every_option_through():
    def hook(model, x):
        return model(x)

    model = Scale()
    s = make_subject(
        model,
        grid=[torch.tensor(1), 3.0],
        layout="BCHW->BHWC",
        features=1,
        vocab=None,
        output="logits",
        predicts="next",
        classes=4,
        value_range=(0.0, 3.0),
        forward=hook,
        batch=1,
    )
    assert s.grid == (1, 3) and all(type(g) is int for g in s.grid)
    assert (s.layout_in, s.layout_out) == (Layout("BCHW"), Layout("BHWC"))
    assert (s.output, s.predicts, s.classes, s.value_range) == ("logits", "next", 4, (0.0, 3.0))
    assert (s.forward, s.batch, s.name, s.model) == (hook, 1, "Scale", model)
    assert (s.subpixel_axis, s.first_batch, s.notes) == (None, None, [])
    s = make_subject(model, grid=(1,), vocab=1, features=2, name="mine")
    assert (s.vocab, s.features, s.name, s.layout_in, s.layout_out) == (
        1, 2, "mine", Layout("BT"), None
    )
    assert make_subject(model, grid=(1,)).layout_in == Layout("BTC")
    assert make_subject(model, grid=(2, 2), vocab=3).layout_in == Layout("BHW")
    assert make_subject(lambda x: x, grid=(2,)).name == "function"
