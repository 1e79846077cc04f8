"""The canonical form: layouts, structured outputs, orders, conventions, and their errors."""

import pytest
import torch
from torch import nn

from properties import AdapterError, make_subject
from properties.subject.canonical import ranks_from_order, select_output
from properties.subject.layout import Layout, infer_output_layout, parse_layout_pair


class Echo(nn.Module):
    """Returns its input, cast to float, with a trailing channel of 2."""

    def forward(self, x):
        x = x.float()
        return torch.stack([x, -x], dim=-1)


def test_layout_round_trip():
    layout = Layout("BCHW")
    x = torch.randn(2, 5, 6, 3)  # canonical (B, H, W, C)
    native = layout.to_native(x)
    assert native.shape == (2, 3, 5, 6)
    assert torch.equal(layout.to_canonical(native), x)


def test_parse_layout_pair_and_errors():
    a, b = parse_layout_pair("BCT->BTC", 1)
    assert (a.letters, b.letters) == ("BCT", "BTC")
    with pytest.raises(AdapterError, match="grid axes"):
        parse_layout_pair("BCHW", 1)
    with pytest.raises(AdapterError, match="repeats"):
        parse_layout_pair("BTT", 1)
    with pytest.raises(AdapterError, match="batch axis"):
        parse_layout_pair("CTB", 1)


def test_output_layout_inferred_or_refused_when_ambiguous():
    layout = Layout("BCT")
    assert infer_output_layout((2, 7, 5), 2, (7,), layout).letters == "BTC"
    assert infer_output_layout((2, 5, 7), 2, (7,), layout).letters == "BCT"
    with pytest.raises(AdapterError, match="fits several layouts"):
        infer_output_layout((2, 7, 7), 2, (7,), layout)
    with pytest.raises(AdapterError, match="does not fit grid"):
        infer_output_layout((2, 8, 5), 2, (7,), layout)


def test_subject_call_is_canonical_for_every_layout():
    generator = torch.Generator().manual_seed(0)
    for layout, grid in [
        ("BTC", (6,)),
        ("BCT->BCT", (6,)),
        ("BCHW->BCHW", (3, 4)),
        ("BHWC", (3, 4)),
    ]:

        class Identity(nn.Module):
            def forward(self, x):
                return x * 2

        s = make_subject(Identity(), grid=grid, layout=layout, features=2)
        x = s.draw_inputs(3, generator)
        assert x.shape == (3, s.n_positions, 2)
        assert torch.allclose(s(x).double(), 2 * x)


def test_tokens_and_structured_outputs():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)

        def forward(self, ids):
            return {"logits": self.embed(ids), "extra": (ids,)}

    s = make_subject(Tokens(), grid=(5,), vocab=10, output="logits")
    x = s.draw_inputs(2, torch.Generator().manual_seed(0))
    assert x.dtype == torch.long and x.shape == (2, 5)
    assert s(x).shape == (2, 5, 4)
    bare = make_subject(Tokens(), grid=(5,), vocab=10)
    with pytest.raises(AdapterError, match="--output") as info:
        bare(x)
    assert "logits" in str(info.value) and "extra" in str(info.value)
    with pytest.raises(AdapterError, match="no field"):
        select_output({"logits": x}, "nope")
    assert select_output((x, (x + 1,)), "1.0").equal(x + 1)


def test_orders_and_targets():
    ranks = ranks_from_order([2, 0, 1], 3)
    assert ranks.tolist() == [1, 2, 0]
    with pytest.raises(AdapterError, match="permutation"):
        ranks_from_order([0, 0, 1], 3)
    s = make_subject(Echo(), grid=(4,), layout="BT", vocab=9, order=[3, 2, 1, 0])
    x = torch.tensor([[1, 2, 3, 4]])
    assert s.targets(x, "current").tolist() == [[1, 2, 3, 4]]
    # next: the output at rank r predicts the position of rank r + 1; the last rank has none.
    assert s.targets(x, "next").tolist() == [[-1, 1, 2, 3]]


def test_model_errors_are_wrapped_with_what_to_check():
    class Picky(nn.Module):
        def forward(self, x):
            return nn.functional.conv1d(x, torch.ones(4, 3, 1))

    s = make_subject(Picky(), grid=(8,), layout="BCT")
    with pytest.raises(AdapterError, match="--features"):
        s(s.draw_inputs(1, torch.Generator()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid=()), "empty"),
        (dict(grid=(4,), predicts="future"), "convention"),
        (dict(grid=(4,), vocab=0), "vocab"),
        (dict(grid=(4,), vocab=5, layout="BTC"), "no channel axis"),
    ],
)
def test_make_subject_rejects_bad_options(kwargs, match):
    with pytest.raises(AdapterError, match=match):
        make_subject(Echo(), **kwargs)
