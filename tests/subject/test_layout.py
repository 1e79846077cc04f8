"""Layouts: parsing, defaults, the native <-> canonical maps, inference of the output layout, and
the exact one-line messages for every way a layout can be wrong (the message is the product:
it names the problem and the fix)."""

import pytest
import torch

from properties import AdapterError
from properties.subject.layout import (
    KNOWN_EXAMPLES,
    Layout,
    default_layout,
    infer_output_layout,
    parse_layout,
    parse_layout_pair,
)

FIX = f"use letters B, C and one per grid axis, e.g. {KNOWN_EXAMPLES}"


def message(call, *args) -> str:
    with pytest.raises(AdapterError) as info:
        call(*args)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "text, grid_dims, letters",
    [
        ("BCT", 1, "BCT"),
        (" bct\n", 1, "BCT"),  # what a shell or a config file hands over
        ("btc", 1, "BTC"),
        ("BT", 1, "BT"),
        ("B(TC)", 1, "B(TC)"),
        ("b(ct)", 1, "B(CT)"),
        ("BCHW", 2, "BCHW"),
        ("B(HWC)", 2, "B(HWC)"),
        ("B(SC)HW", 3, "B(SC)HW"),
        ("BXYZC", 3, "BXYZC"),
    ],
)
def test_valid_layouts_parse_to_their_letters(text, grid_dims, letters):
    assert parse_layout(text, grid_dims) == Layout(letters)


@pytest.mark.parametrize(
    "text, grid_dims, problem",
    [
        ("B-T", 1, "layout 'B-T' has characters other than axis letters"),
        ("BTé", 1, "layout 'BTé' has characters other than axis letters"),
        ("", 1, "layout '' has characters other than axis letters"),
        (
            "B(T",
            1,
            "layout 'B(T' has unbalanced, nested or one-letter groups (a group is two or more "
            "letters in parentheses, e.g. B(TC))",
        ),
        (
            "B((TC))",
            1,
            "layout 'B((TC))' has unbalanced, nested or one-letter groups (a group is two or "
            "more letters in parentheses, e.g. B(TC))",
        ),
        (
            "B(T)C",
            1,
            "layout 'B(T)C' has unbalanced, nested or one-letter groups (a group is two or more "
            "letters in parentheses, e.g. B(TC))",
        ),
        ("BTT", 1, "layout 'BTT' repeats an axis letter"),
        ("TB", 1, "layout 'TB' must start with the batch axis B, on its own"),
        ("(BT)C", 1, "layout '(BT)C' must start with the batch axis B, on its own"),
        ("BCHW", 1, "layout 'BCHW' has 2 grid axes but the grid has 1"),
        ("BCT", 2, "layout 'BCT' has 1 grid axes but the grid has 2"),
    ],
)
def test_bad_layouts_name_the_problem_and_the_letters_to_use(text, grid_dims, problem):
    assert message(parse_layout, text, grid_dims) == f"{problem}: {FIX}"


def test_the_output_layout_is_named_as_such():
    assert message(parse_layout, "BT?", 1, "output layout") == (
        f"output layout 'BT?' has characters other than axis letters: {FIX}"
    )
    # only the first arrow splits: the rest belongs to the output layout
    assert message(parse_layout_pair, "BCT->BTC->BT", 1) == (
        f"output layout 'BTC->BT' has characters other than axis letters: {FIX}"
    )
    assert message(parse_layout_pair, "BTT->BTC", 1).startswith("layout 'BTT' repeats")
    assert message(parse_layout_pair, "BCT->BCHW", 1).startswith(
        "output layout 'BCHW' has 2 grid axes"
    )


def test_a_pair_gives_both_layouts_and_a_single_layout_leaves_the_output_open():
    assert parse_layout_pair("BCT->BTC", 1) == (Layout("BCT"), Layout("BTC"))
    assert parse_layout_pair(" bct -> b(tc) ", 1) == (Layout("BCT"), Layout("B(TC)"))
    assert parse_layout_pair("BCHW", 2) == (Layout("BCHW"), None)


@pytest.mark.parametrize(
    "grid_dims, tokens, letters",
    [
        (1, True, "BT"),
        (2, True, "BHW"),
        (3, True, "BHWD"),
        (1, False, "BTC"),  # a transformer's
        (2, False, "BCHW"),  # nn.Conv2d's
        (3, False, "BCHWD"),
        (4, False, "BCHWDE"),
    ],
)
def test_default_layouts(grid_dims, tokens, letters):
    assert default_layout(grid_dims, tokens) == letters
    parse_layout(letters, grid_dims)  # and every default is a valid layout of its grid


# ---------------------------------------------------------------------------------------------
# The maps between native and canonical tensors


def test_the_letters_of_a_grouped_layout():
    layout = Layout("B(SC)HW")
    assert layout.flat == "BSCHW"
    assert layout.groups == ("B", "SC", "H", "W")
    assert layout.grouped and not Layout("BSCHW").grouped
    assert layout.grid_letters == "SHW"
    assert layout.canonical == "BSHWC"
    assert Layout("BT").canonical == "BT" and not Layout("BT").has_channels
    assert str(layout) == "B(SC)HW"


@pytest.mark.parametrize(
    "letters, native",
    [
        ("BCHW", lambda x: x.permute(0, 3, 1, 2)),
        ("BHWC", lambda x: x),
        ("BWHC", lambda x: x),  # the grid's axes are named in the layout's order
        ("BHCW", lambda x: x.permute(0, 1, 3, 2)),
        ("B(HWC)", lambda x: x.reshape(2, 60)),
        ("B(CHW)", lambda x: x.permute(0, 3, 1, 2).reshape(2, 60)),
        ("B(HW)C", lambda x: x.reshape(2, 12, 5)),
        ("BH(WC)", lambda x: x.reshape(2, 3, 20)),
        ("BH(CW)", lambda x: x.permute(0, 1, 3, 2).reshape(2, 3, 20)),
        ("B(CH)W", lambda x: x.permute(0, 3, 1, 2).reshape(2, 15, 4)),
    ],
)
def test_native_and_canonical_round_trip_exactly(letters, native):
    x = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # canonical (B, H, W, C)
    layout = Layout(letters)
    y = layout.to_native(x)
    assert torch.equal(y, native(x))
    assert layout.native_shape(2, (3, 4), 5) == tuple(y.shape)
    assert torch.equal(layout.to_canonical(y, (3, 4)), x)


def test_layouts_without_channels_and_tokens():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)  # canonical (B, H, W)
    assert torch.equal(Layout("BHW").to_native(x), x)
    assert torch.equal(Layout("B(HW)").to_native(x), x.reshape(2, 12))
    assert torch.equal(Layout("B(HW)").to_canonical(x.reshape(2, 12), (3, 4)), x)
    assert Layout("B(HW)").native_shape(2, (3, 4), 1) == (2, 12)
    assert Layout("BT").native_shape(7, (5,), 9) == (7, 5)
    assert Layout("BCT").native_shape(7, (5,), 9) == (7, 9, 5)


def test_split_shape_infers_the_channels_of_a_group():
    assert Layout("B(TC)").split_shape((2, 12), (3,)) == (2, 3, 4)
    assert Layout("B(CT)").split_shape((2, 12), (3,)) == (2, 4, 3)
    assert Layout("B(HCW)").split_shape((2, 60), (3, 4)) == (2, 3, 5, 4)
    assert Layout("B(HW)C").split_shape((2, 12, 7), (3, 4)) == (2, 3, 4, 7)
    assert Layout("BC(HW)").split_shape((2, 7, 12), (3, 4)) == (2, 7, 3, 4)
    with pytest.raises(ValueError) as info:
        Layout("B(TC)").split_shape((2, 12), None)
    assert str(info.value) == "a grouped layout needs the grid to split its axes"


def test_a_grid_or_shape_of_the_wrong_rank_is_a_programming_error_not_a_truncation():
    """The subject always passes a grid of the layout's rank; a caller of the layout API that
    does not gets a ValueError rather than sizes silently cut to the shorter of the two."""
    calls = [
        lambda: Layout("B(TC)").split_shape((2, 12), (3, 4)),  # a grid axis too many
        lambda: Layout("B(HW)").split_shape((2, 12), (3,)),  # one too few
        lambda: Layout("B(TC)").split_shape((2, 12, 1), (3,)),  # a native axis too many
        lambda: Layout("BCT").native_shape(2, (3, 4), 5),
        lambda: Layout("BCHW").native_shape(2, (3,), 5),
        lambda: infer_output_layout((2, 7, 5), 2, (7, 3), Layout("BCT")),
        lambda: infer_output_layout((2, 7, 5), 2, (7,), Layout("BCHW")),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="zip()"):
            call()


def test_a_group_that_does_not_divide_says_which_axis_and_what_to_check():
    check = "check the layout's grouping and --length/--shape"
    assert message(Layout("B(CT)").to_canonical, torch.zeros(2, 13), (3,)) == (
        f"axis (CT) of layout B(CT) has size 13, which is not a multiple of 3 (grid (3,)): {check}"
    )
    assert message(Layout("B(HW)C").split_shape, (2, 13, 5), (3, 4)) == (
        f"axis (HW) of layout B(HW)C has size 13, which is not 12 (grid (3, 4)): {check}"
    )
    # a group without channels must hold exactly its positions, not a multiple of them
    assert "which is not 12" in message(Layout("B(HW)C").split_shape, (2, 24, 5), (3, 4))


def test_an_output_with_the_wrong_number_of_axes():
    assert message(Layout("B(TC)").to_canonical, torch.zeros(2, 3, 4), (3,)) == (
        "the model's output has shape (2, 3, 4), 3 axes, but output layout B(TC) has 2: "
        "pass the layout the model really uses (--layout IN->OUT)"
    )
    assert "0 axes" in message(Layout("BT").to_canonical, torch.tensor(1.0))


# ---------------------------------------------------------------------------------------------
# Inferring the output layout


@pytest.mark.parametrize(
    "input_layout, grid, shape, letters",
    [
        ("BCT", (7,), (2, 7, 5), "BTC"),
        ("BCT", (7,), (2, 5, 7), "BCT"),
        ("BCT", (7,), (2, 7, 7), None),
        ("BTC", (7,), (2, 7, 5), "BTC"),
        ("BTC", (7,), (2, 5, 7), "BCT"),
        ("BT", (7,), (2, 7), "BT"),
        ("BT", (7,), (2, 7, 3), "BTC"),
        ("BT", (7,), (2, 3, 7), "BCT"),
        ("BCHW", (3, 4), (2, 5, 3, 4), "BCHW"),
        ("BCHW", (3, 4), (2, 3, 4, 5), "BHWC"),
        ("BCHW", (3, 4), (2, 3, 4), "BHW"),
        ("BHWC", (3, 4), (2, 3, 4, 1), "BHWC"),
        ("BHW", (3, 4), (2, 1, 3, 4), "BCHW"),
        ("BWHC", (3, 4), (2, 3, 4, 6), "BWHC"),  # the input's names of the grid axes are kept
        ("BCWH", (3, 4), (2, 3, 4, 6), "BWHC"),
    ],
)
def test_the_output_layout_is_the_one_that_fits(input_layout, grid, shape, letters):
    if letters is None:
        with pytest.raises(AdapterError, match="fits several layouts"):
            infer_output_layout(shape, 2, grid, Layout(input_layout))
    else:
        assert infer_output_layout(shape, 2, grid, Layout(input_layout)) == Layout(letters)


def test_an_output_of_the_wrong_batch_or_rank_fits_nothing():
    for shape in [(3, 7, 5), (2, 7, 5, 1), (2, 6, 5), (2, 5, 6), (2, 8)]:
        with pytest.raises(AdapterError, match="does not fit grid"):
            infer_output_layout(shape, 2, (7,), Layout("BCT"))
    with pytest.raises(AdapterError, match="does not fit grid"):
        infer_output_layout((2, 4, 3, 5), 2, (3, 4), Layout("BCHW"))  # H and W swapped


def test_an_output_that_fits_nothing_shows_the_expected_shapes():
    generic = (
        "pass the output layout explicitly (--layout IN->OUT, e.g. BCT->BTC), or check "
        "--length/--shape and --output"
    )
    expected = "(expected e.g. (2, 12, K) or (2, K, 12))"
    assert message(infer_output_layout, (2, 25), 2, (12,), Layout("BT")) == (
        f"the model's output has shape (2, 25), which does not fit grid (12,) {expected}: "
        f"{generic}"
    )
    # a flat output with a multiple of the positions: the grouped layouts are the fix
    assert message(infer_output_layout, (2, 24), 2, (12,), Layout("BT")) == (
        f"the model's output has shape (2, 24), which does not fit grid (12,) {expected}: "
        "if the model flattens positions and outputs into one axis, say in which order "
        "(--layout BT->B(TC) or BT->B(CT)), or check --length/--shape and --output"
    )
    assert message(infer_output_layout, (2, 60), 2, (3, 4), Layout("BCHW")) == (
        "the model's output has shape (2, 60), which does not fit grid (3, 4) (expected e.g. "
        "(2, 3, 4, K) or (2, K, 3, 4)): if the model flattens positions and outputs into one "
        "axis, say in which order (--layout BCHW->B(HWC) or BCHW->B(CHW)), or check "
        "--length/--shape and --output"
    )
    # more axes than any layout has: nothing fits (the adapter's stories explain these)
    for shape in [(2, 1, 1, 1, 1, 12, 3), (2, 12, 1, 1, 1, 1, 1)]:
        assert message(infer_output_layout, shape, 2, (12,), Layout("BT")).endswith(generic)
    # neither a flat output of another batch, nor a 3-axis one, is a flattened grid
    for shape in [(3, 24), (2, 24, 1), (2, 18)]:
        assert message(infer_output_layout, shape, 2, (12,), Layout("BT")).endswith(generic)
    assert message(infer_output_layout, (2, 18), 2, (3, 4), Layout("BHW")).endswith(generic)


def test_an_ambiguous_output_lists_the_layouts_to_choose_from():
    assert message(infer_output_layout, (2, 7, 7), 2, (7,), Layout("BCT")) == (
        "the model's output shape (2, 7, 7) fits several layouts for grid (7,): say which one "
        "with --layout (BCT->BCT or BCT->BTC), or use a grid size that differs from the number "
        "of output channels"
    )
    assert message(infer_output_layout, (2, 3, 3, 3), 2, (3, 3), Layout("BHW")).startswith(
        "the model's output shape (2, 3, 3, 3) fits several layouts for grid (3, 3): say which "
        "one with --layout (BHW->BHWC or BHW->BCHW)"
    )
