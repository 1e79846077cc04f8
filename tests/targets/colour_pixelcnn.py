"""A colour PixelCNN (van den Oord et al., 2016, section 3.4): autoregressive over (pixel, colour).

Every feature map is split into three contiguous channel groups, one per colour (R, G, B). The
masks of the convolutions hide, as the grey PixelCNN does, every pixel below or to the right of
the centre; at the centre itself, type ``A`` lets group ``g`` see the input groups ``< g`` only
(R sees nothing of its own pixel, G sees R, B sees R and G), type ``B`` the groups ``<= g``. The
output has ``3 * levels`` channels, in three groups of ``levels`` logits: output layout
``B(SC)HW`` at sub-pixel level.

``leak="r_sees_g"`` opens the first layer's centre from the G input to the R group: R's
prediction then sees the G value of its own pixel, which comes after it. ``FiveAxes`` returns the
same logits as ``(B, levels, 3, H, W)``, as many PixelCNN implementations do.
"""

import torch
from torch import nn

COLOURS = 3
LEVELS = 4


def colour_mask(in_channels: int, out_channels: int, k: int, mask_type: str, leak=None):
    """``(out, in, k, k)`` mask over channel groups (contiguous, one per colour)."""
    mask = torch.zeros(out_channels, in_channels, k, k)
    c = k // 2
    mask[:, :, :c, :] = 1  # rows above
    mask[:, :, c, :c] = 1  # left on the centre row
    group_out = torch.arange(out_channels) * COLOURS // out_channels
    group_in = torch.arange(in_channels) * COLOURS // in_channels
    centre = group_in[None, :] < group_out[:, None]
    if mask_type == "B":
        centre = group_in[None, :] <= group_out[:, None]
    if leak == "r_sees_g":
        centre = centre | ((group_out[:, None] == 0) & (group_in[None, :] == 1))
    mask[:, :, c, c] = centre.float()
    return mask


class ColourMaskedConv2d(nn.Conv2d):
    def __init__(self, in_channels, out_channels, k, mask_type, leak=None):
        super().__init__(in_channels, out_channels, k, padding=k // 2)
        self.register_buffer("mask", colour_mask(in_channels, out_channels, k, mask_type, leak))

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class ColourPixelCNN(nn.Module):
    """``(B, 3, H, W)`` colour values -> ``(B, 3 * LEVELS, H, W)`` logits in channel groups."""

    def __init__(self, hidden=12, layers=2, k=3, leak=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.first = ColourMaskedConv2d(COLOURS, hidden, 7 if k == 3 else k, "A", leak)
        self.layers = nn.ModuleList(
            ColourMaskedConv2d(hidden, hidden, k, "B") for _ in range(layers)
        )
        self.out = ColourMaskedConv2d(hidden, COLOURS * LEVELS, 1, "B")

    def forward(self, x):
        h = torch.relu(self.first(x))
        for layer in self.layers:
            h = torch.relu(layer(h)) + h
        return self.out(h)


class FiveAxes(ColourPixelCNN):
    """The same model, logits as ``(B, LEVELS, 3, H, W)``."""

    def forward(self, x):
        y = super().forward(x)
        b, _, h, w = y.shape
        return y.reshape(b, COLOURS, LEVELS, h, w).transpose(1, 2)


def colour():
    return ColourPixelCNN()


def r_sees_g():
    return ColourPixelCNN(leak="r_sees_g")


def five_axes():
    return FiveAxes()
