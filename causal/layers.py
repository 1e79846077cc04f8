"""Building blocks of causal convolutional models, written as close to the lecture's slides as
possible (Fleuret, Deep learning 10.2, "Causal convolutions").

Two ideas make a convolution causal:

- *left padding*: a 1D convolution of kernel size ``k`` and dilation ``d`` padded by
  ``(k - 1) * d`` on the left only lets information flow to the future, never to the past;
- *a shift that hides the present*: the first layer sees ``x_{t-1}`` where a plain layer would see
  ``x_t``: ``F.pad(x, (1, -1))`` pads one zero on the left and drops the last entry.

In 2D (raster order) the image is shifted *down* by one row for the vertical stack (which then sees
the rows above) and *right* by one column for the horizontal stack (which sees the pixels to the
left on the current row). ``F.pad`` takes the padding of the last dimension first:
``(left, right, top, bottom)``, and negative values crop.

Masked convolutions (van den Oord et al., 2016) reach the same goal by zeroing kernel weights:
mask ``A`` hides the centre (first layer), mask ``B`` keeps it (later layers).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Shifts and paddings


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """1D shift that hides the present: ``y[..., t] = x[..., t-1]``, ``y[..., 0] = 0``."""
    return F.pad(x, (1, -1))


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """2D shift by one row: ``y[..., i, j] = x[..., i-1, j]``, first row zero."""
    return F.pad(x, (0, 0, 1, -1))


def shift_right_2d(x: torch.Tensor) -> torch.Tensor:
    """2D shift by one column: ``y[..., i, j] = x[..., i, j-1]``, first column zero."""
    return F.pad(x, (1, -1, 0, 0))


def causal_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """The ``F.pad`` spec that makes a 1D convolution causal: ``(k - 1) * d`` on the left."""
    return ((kernel_size - 1) * dilation, 0)


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` padded on the left so that output ``t`` sees inputs ``t - (k-1)d .. t``.

    The output has the length of the input. Combined with :func:`shift_right` before the first
    layer, output ``t`` sees only ``x_{<t}``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, **kwargs)
        self.left_pad = causal_padding(kernel_size, dilation)

    def forward(self, x):  # (B, C, T) -> (B, C', T)
        return super().forward(F.pad(x, self.left_pad))


def receptive_field_1d(kernel_sizes, dilations, shift: int = 1) -> int:
    """Analytic span of a causal 1D stack: ``shift + sum (k_i - 1) d_i``.

    With the lecture's one-step shift this is ``1 + sum (k_i - 1) d_i``: the number of past
    positions between the furthest input an output can see and the output itself.
    """
    return shift + sum((k - 1) * d for k, d in zip(kernel_sizes, dilations, strict=True))


# ---------------------------------------------------------------------------------------------
# Masked convolutions (the original PixelCNN)


def pixelcnn_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The (k, k) binary mask of a PixelCNN convolution.

    Ones on every row above the centre and left of the centre on the centre row; the centre itself
    is one for type ``B`` and zero for type ``A``. Everything below or to the right is zero.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if kernel_size % 2 != 1:
        raise ValueError(f"masked convolutions need an odd kernel size, got {kernel_size}")
    mask = torch.zeros(kernel_size, kernel_size)
    c = kernel_size // 2
    mask[:c, :] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size 2D convolution whose kernel is multiplied by a PixelCNN mask (A or B)."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_type, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kwargs)
        self.mask_type = mask_type
        self.register_buffer("mask", pixelcnn_mask(kernel_size, mask_type))

    def forward(self, x):  # (B, C, H, W) -> (B, C', H, W)
        return self._conv_forward(x, self.weight * self.mask, self.bias)


# ---------------------------------------------------------------------------------------------
# The two stacks (the lecture's slide 20, with the paper's names)


class VerticalStackConv(nn.Conv2d):
    """Convolution over the rows above, applied to a down-shifted input.

    Kernel ``(k//2 + 1, k)`` padded ``(k//2, k//2, k//2, 0)``: output ``(i, j)`` sees rows
    ``i - k//2 .. i`` and columns ``j - k//2 .. j + k//2`` of its input. After
    :func:`shift_down` the current row is hidden, so the stack only sees rows strictly above.
    """

    def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
        super().__init__(in_channels, out_channels, (kernel_size // 2 + 1, kernel_size), **kwargs)
        h = kernel_size // 2
        self.pad = (h, h, h, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))


class HorizontalStackConv(nn.Conv2d):
    """Convolution over the pixels to the left on the same row, applied to a right-shifted input.

    Kernel ``(1, k//2 + 1)`` padded ``(k//2, 0, 0, 0)``: output ``(i, j)`` sees columns
    ``j - k//2 .. j`` of row ``i``. After :func:`shift_right_2d` the current pixel is hidden.
    """

    def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
        super().__init__(in_channels, out_channels, (1, kernel_size // 2 + 1), **kwargs)
        self.pad = (kernel_size // 2, 0, 0, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))


def gated(x: torch.Tensor) -> torch.Tensor:
    """WaveNet / Gated PixelCNN activation: halves of the channels, ``tanh(a) * sigmoid(b)``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


# ---------------------------------------------------------------------------------------------
# Boolean positional encoding (lecture slides 23-24)


def nb_position_bits(n: int) -> int:
    """Number of Boolean channels that give every one of ``n`` positions a distinct code."""
    return max(1, math.ceil(math.log2(n)))


def boolean_positional_encoding(shape: tuple[int, ...]) -> torch.Tensor:
    """Binary codes of each coordinate: ``(sum_d ceil(log2 n_d), *shape)`` channels of 0/1.

    For a 28x28 image this is 5 channels for the row and 5 for the column, as in the lecture.
    """
    planes = []
    for dim, n in enumerate(shape):
        coord = torch.arange(n)
        bits = (coord[:, None] >> torch.arange(nb_position_bits(n))) & 1  # (n, nb_bits)
        view = [1] * len(shape)
        view[dim] = n
        for b in range(bits.size(1)):
            planes.append(bits[:, b].reshape(view).expand(shape))
    return torch.stack(planes).float()


class BooleanPositionalEncoding(nn.Module):
    """Concatenates the Boolean positional encoding of the grid to the input channels.

    The code depends only on the position, never on the data, so it cannot leak the future; it
    lets a fully convolutional model make its predictions position-dependent.
    """

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("code", boolean_positional_encoding(self.shape), persistent=False)

    @property
    def nb_channels(self) -> int:
        return self.code.size(0)

    def forward(self, x):  # (B, C, *shape) -> (B, C + nb_channels, *shape)
        if tuple(x.shape[2:]) != self.shape:
            raise ValueError(
                f"positional encoding built for grid {self.shape}, got input grid "
                f"{tuple(x.shape[2:])}: build the model with the grid you feed it"
            )
        code = self.code.to(x.dtype).expand(x.size(0), *self.code.shape)
        return torch.cat((x, code), dim=1)


class Normalize(nn.Module):
    """``(x - mean) / std`` with the statistics stored in the model (and its checkpoint).

    The lecture normalizes inputs in the training loop; keeping it in the model lets every tool
    (sampling, the audit) feed raw values, and the lecture's "zeros for unknown values" stay raw
    zeros.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        return (x - self.mean) / self.std
