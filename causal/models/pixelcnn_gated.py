"""Gated PixelCNN (van den Oord et al., 2016b, "Conditional image generation with PixelCNN
decoders"): a vertical and a horizontal stack at every layer, the vertical stack feeding the
horizontal one, gated activations, residual connections on the horizontal stack. No blind spot.

Built from the lecture's shifts: the first layer reads the down-shifted image (vertical) and the
right-shifted image (horizontal), so both stacks hide the current pixel from the start. After that,
a vertical feature at ``(i, j)`` depends on rows ``< i`` only, so it can be fed to the horizontal
stack at the same ``(i, j)`` without any further shift.

Input ``(B, C, H, W)`` raw values, output ``(B, H, W, nb_classes)`` logits.
"""

import torch.nn.functional as F
from torch import nn

from ..layers import (
    HorizontalStackConv,
    Normalize,
    VerticalStackConv,
    gated,
    shift_down,
    shift_right_2d,
)


class GatedLayer(nn.Module):
    """One gated layer: both stacks convolve, the vertical one is added into the horizontal one."""

    def __init__(self, channels, ks):
        super().__init__()
        self.vertical = VerticalStackConv(channels, 2 * channels, ks)
        self.horizontal = HorizontalStackConv(channels, 2 * channels, ks)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)
        self.residual = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, v, h):  # (B, C, H, W) x 2 -> (B, C, H, W) x 2
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(v_pre)
        return gated(v_pre), h + self.residual(gated(h_pre))


class GatedPixelCNN(nn.Module):
    def __init__(self, nb_classes, in_channels=1, channels=32, ks=5, nb_layers=4):
        super().__init__()
        self.normalize = Normalize()
        self.first_vertical = VerticalStackConv(in_channels, channels, ks)
        self.first_horizontal = HorizontalStackConv(in_channels, channels, ks)
        self.layers = nn.ModuleList(GatedLayer(channels, ks) for _ in range(nb_layers))
        self.final1 = nn.Conv2d(channels, 4 * channels, kernel_size=1)
        self.final2 = nn.Conv2d(4 * channels, nb_classes, kernel_size=1)

    def forward(self, x):  # (B, C, H, W) -> (B, H, W, nb_classes)
        x = self.normalize(x)
        v = self.first_vertical(shift_down(x))
        h = self.first_horizontal(shift_right_2d(x))
        for layer in self.layers:
            v, h = layer(v, h)
        x = self.final2(F.relu(self.final1(F.relu(h))))
        return x.permute(0, 2, 3, 1).contiguous()
