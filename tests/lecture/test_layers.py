"""The building blocks of causal/layers.py, starting with the lecture's own examples."""

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from causal import layers

# ---------------------------------------------------------------------------------------------
# Slide 12, verbatim: negative padding removes entries, (0, 0, 2, 0) pads the second-last dim.

SLIDE_X = torch.tensor([[[1, 6, 3, 9, 1]], [[4, 8, 2, 2, 9]]])


def test_slide_12_negative_padding_shifts_left():
    expected = torch.tensor([[[6, 3, 9, 1, 0]], [[8, 2, 2, 9, 0]]])
    assert torch.equal(F.pad(SLIDE_X, (-1, 1)), expected)


def test_slide_12_padding_the_second_last_dimension():
    expected = torch.tensor(
        [
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 6, 3, 9, 1]],
            [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [4, 8, 2, 2, 9]],
        ]
    )
    assert torch.equal(F.pad(SLIDE_X, (0, 0, 2, 0)), expected)


# ---------------------------------------------------------------------------------------------
# Shifts


def _tensor(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@given(length=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_shift_right_hides_the_present(length, seed):
    x = _tensor((2, 3, length), seed)
    y = layers.shift_right(x)
    assert y.shape == x.shape
    assert torch.equal(y[..., 0], torch.zeros(2, 3))
    assert torch.equal(y[..., 1:], x[..., :-1])


@given(h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_2d_shifts_move_by_one_row_or_column(h, w, seed):
    x = _tensor((2, 1, h, w), seed)
    down, right = layers.shift_down(x), layers.shift_right_2d(x)
    assert down.shape == right.shape == x.shape
    assert torch.equal(down[..., 0, :], torch.zeros(2, 1, w))
    assert torch.equal(down[..., 1:, :], x[..., :-1, :])
    assert torch.equal(right[..., :, 0], torch.zeros(2, 1, h))
    assert torch.equal(right[..., :, 1:], x[..., :, :-1])


def test_slide_padding_spec_matches_the_shift():
    assert torch.equal(
        layers.shift_right(SLIDE_X), torch.tensor([[[0, 1, 6, 3, 9]], [[0, 4, 8, 2, 2]]])
    )


# ---------------------------------------------------------------------------------------------
# Causal 1D convolution


def _input_gradient(module, x, index):
    """Which inputs the output at ``index`` (a tuple into the output) depends on."""
    x = x.clone().requires_grad_(True)
    module(x)[index].backward()
    return x.grad[0, 0] != 0


@given(
    length=st.integers(1, 40),
    kernel_size=st.integers(1, 5),
    dilation=st.integers(1, 6),
)
def test_causal_padding_keeps_the_length(length, kernel_size, dilation):
    assert layers.causal_padding(kernel_size, dilation) == ((kernel_size - 1) * dilation, 0)
    conv = layers.CausalConv1d(2, 3, kernel_size, dilation=dilation)
    assert conv(torch.zeros(1, 2, length)).shape == (1, 3, length)


@given(kernel_size=st.integers(2, 4), dilation=st.integers(1, 4), t=st.integers(0, 29))
def test_causal_conv_sees_exactly_its_dilated_past(kernel_size, dilation, t):
    conv = layers.CausalConv1d(1, 1, kernel_size, dilation=dilation)
    torch.nn.init.ones_(conv.weight)
    seen = _input_gradient(conv, torch.randn(1, 1, 30), (0, 0, t))
    expected = torch.zeros(30, dtype=torch.bool)
    for i in range(kernel_size):
        if t - i * dilation >= 0:
            expected[t - i * dilation] = True
    assert torch.equal(seen, expected)


def test_receptive_field_formula():
    assert layers.receptive_field_1d([2] * 4, [1] * 4) == 5
    assert layers.receptive_field_1d([2] * 4, [2, 4, 8, 16]) == 31
    assert layers.receptive_field_1d([3, 3], [1, 2], shift=0) == 6


# ---------------------------------------------------------------------------------------------
# Masks


def test_mask_b_5x5_exact():
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ]
    ).float()
    assert torch.equal(layers.pixelcnn_mask(5, "B"), expected)


def test_mask_a_differs_from_b_only_at_the_centre():
    a, b = layers.pixelcnn_mask(5, "A"), layers.pixelcnn_mask(5, "B")
    assert a[2, 2] == 0 and b[2, 2] == 1
    b[2, 2] = 0
    assert torch.equal(a, b)
    assert torch.equal(
        layers.pixelcnn_mask(3, "A"), torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]]).float()
    )
    assert torch.equal(layers.pixelcnn_mask(1, "A"), torch.zeros(1, 1))


def test_mask_rejects_even_kernels_and_unknown_types():
    for args in [(4, "A"), (3, "C")]:
        try:
            layers.pixelcnn_mask(*args)
        except ValueError:
            continue
        raise AssertionError(f"pixelcnn_mask{args} should raise")


def _seen_2d(function, h, w, i, j):
    """Which inputs output ``(i, j)`` of ``function`` depends on (by its gradient)."""
    x = torch.randn(1, 1, h, w, requires_grad=True)
    function(x)[0, 0, i, j].backward()
    return x.grad[0, 0] != 0


def _window(h, w, rows, cols):
    expected = torch.zeros(h, w, dtype=torch.bool)
    for r in rows:
        for c in cols:
            if 0 <= r < h and 0 <= c < w:
                expected[r, c] = True
    return expected


@given(i=st.integers(0, 6), j=st.integers(0, 6), mask_type=st.sampled_from("AB"))
def test_masked_conv_sees_the_mask_window(i, j, mask_type):
    conv = layers.MaskedConv2d(1, 1, 5, mask_type)
    torch.nn.init.ones_(conv.weight)
    expected = _window(7, 7, range(i - 2, i), range(j - 2, j + 3))
    expected |= _window(7, 7, [i], range(j - 2, j + (1 if mask_type == "B" else 0)))
    assert torch.equal(_seen_2d(conv, 7, 7, i, j), expected)


# ---------------------------------------------------------------------------------------------
# The two stacks (slide 20): exact windows, checked with the gradient of one output


@given(i=st.integers(0, 7), j=st.integers(0, 7))
def test_vertical_stack_sees_the_rows_strictly_above(i, j):
    conv = layers.VerticalStackConv(1, 1, 5)
    torch.nn.init.ones_(conv.weight)
    assert conv(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    expected = _window(8, 8, range(i - 3, i), range(j - 2, j + 3))
    assert torch.equal(_seen_2d(lambda x: conv(layers.shift_down(x)), 8, 8, i, j), expected)
    # without the shift the window includes the current row
    unshifted = _window(8, 8, range(i - 2, i + 1), range(j - 2, j + 3))
    assert torch.equal(_seen_2d(conv, 8, 8, i, j), unshifted)


@given(i=st.integers(0, 7), j=st.integers(0, 7))
def test_horizontal_stack_sees_the_pixels_strictly_left(i, j):
    conv = layers.HorizontalStackConv(1, 1, 5)
    torch.nn.init.ones_(conv.weight)
    assert conv(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    shifted = _seen_2d(lambda x: conv(layers.shift_right_2d(x)), 8, 8, i, j)
    assert torch.equal(shifted, _window(8, 8, [i], range(j - 3, j)))
    assert torch.equal(_seen_2d(conv, 8, 8, i, j), _window(8, 8, [i], range(j - 2, j + 1)))


# ---------------------------------------------------------------------------------------------
# Boolean positional encoding (slides 23-24)


def test_positional_encoding_has_5_plus_5_channels_for_28x28():
    code = layers.boolean_positional_encoding((28, 28))
    assert code.shape == (10, 28, 28)
    assert set(code.unique().tolist()) == {0.0, 1.0}
    assert layers.BooleanPositionalEncoding((28, 28)).nb_channels == 10


@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=2).map(tuple))
def test_positional_encoding_gives_every_position_a_distinct_code(shape):
    code = layers.boolean_positional_encoding(shape)
    assert code.size(0) == sum(layers.nb_position_bits(n) for n in shape)
    codes = code.reshape(code.size(0), -1).T  # (positions, channels)
    assert codes.unique(dim=0).size(0) == codes.size(0)


def test_positional_encoding_module_appends_channels_and_checks_the_grid():
    module = layers.BooleanPositionalEncoding((4, 6))
    out = module(torch.zeros(3, 1, 4, 6))
    assert out.shape == (3, 1 + 2 + 3, 4, 6)
    assert torch.equal(out[:, 1:], layers.boolean_positional_encoding((4, 6)).expand(3, -1, -1, -1))
    try:
        module(torch.zeros(1, 1, 6, 4))
    except ValueError as error:
        assert "(4, 6)" in str(error)
    else:
        raise AssertionError("a grid mismatch must raise")


# ---------------------------------------------------------------------------------------------
# Gated activation and Normalize


@given(seed=st.integers(0, 2**16), channels=st.integers(1, 4))
def test_gated_activation_is_tanh_times_sigmoid_of_the_two_halves(seed, channels):
    a, b = _tensor((2, channels, 5), seed), _tensor((2, channels, 5), seed + 1)
    out = layers.gated(torch.cat((a, b), dim=1))
    assert out.shape == a.shape
    torch.testing.assert_close(out, torch.tanh(a) * torch.sigmoid(b))


def test_gated_activation_known_values():
    x = torch.tensor([[[0.0], [5.0], [0.0], [-40.0]]])  # a = (0, 5), b = (0, -40)
    torch.testing.assert_close(layers.gated(x), torch.tensor([[[0.0], [0.0]]]), atol=1e-12, rtol=0)
    x = torch.tensor([[[1.0], [40.0]]])  # gate fully open
    torch.testing.assert_close(layers.gated(x), torch.tanh(torch.tensor([[[1.0]]])))


def test_normalize_uses_its_buffers():
    norm = layers.Normalize(2.0, 4.0)
    assert torch.equal(norm(torch.tensor([2.0, 6.0])), torch.tensor([0.0, 1.0]))
    assert set(norm.state_dict()) == {"mean", "std"}
