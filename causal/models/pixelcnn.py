"""The lecture's two-stack PixelCNN (slide 21), and its positional-encoding variant (slides 23-24).

The *vertical* stack works on the image shifted down by one row, with ``(k//2 + 1, k)`` kernels
padded on top only: it sees a window of the rows strictly above. The *horizontal* stack works on
the image shifted right by one column, with ``(1, k//2 + 1)`` kernels padded on the left only: it
sees the pixels strictly to the left on the current row. Two 1x1 convolutions merge them. Neither
stack has a blind spot, and neither sees the current pixel.

(The slide's code calls the down-shifted stack ``h`` and the right-shifted one ``v``; we use the
paper's names.) Input ``(B, C, H, W)`` raw values, output ``(B, H, W, nb_classes)`` logits.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    BooleanPositionalEncoding,
    HorizontalStackConv,
    Normalize,
    VerticalStackConv,
    shift_down,
    shift_right_2d,
)


class PixelCNN(nn.Module):
    def __init__(self, nb_classes, in_channels=1, ks=5):
        super().__init__()
        self.normalize = Normalize()
        self.conv1v = VerticalStackConv(in_channels, 32, ks)
        self.conv2v = VerticalStackConv(32, 64, ks)
        self.conv1h = HorizontalStackConv(in_channels, 32, ks)
        self.conv2h = HorizontalStackConv(32, 64, ks)
        self.final1 = nn.Conv2d(128, 128, kernel_size=1)
        self.final2 = nn.Conv2d(128, nb_classes, kernel_size=1)

    def features(self, x):  # (B, C, H, W) normalized -> (B, 128, H, W)
        xv = shift_down(x)
        xh = shift_right_2d(x)
        xv = F.relu(self.conv1v(xv))
        xh = F.relu(self.conv1h(xh))
        xv = F.relu(self.conv2v(xv))
        xh = F.relu(self.conv2h(xh))
        return torch.cat((xv, xh), 1)

    def forward(self, x):  # (B, C, H, W) -> (B, H, W, nb_classes)
        x = F.relu(self.final1(self.features(self.normalize(x))))
        x = self.final2(x)
        return x.permute(0, 2, 3, 1).contiguous()


class PixelCNNWithPositionalEncoding(PixelCNN):
    """The same model with ``ceil(log2 H) + ceil(log2 W)`` Boolean position channels appended
    to the (normalized) input: predictions become position-dependent, causality is unchanged."""

    def __init__(self, nb_classes, shape=(28, 28), in_channels=1, ks=5):
        encoding = BooleanPositionalEncoding(shape)
        super().__init__(nb_classes, in_channels=in_channels + encoding.nb_channels, ks=ks)
        self.encoding = encoding

    def forward(self, x):  # (B, C, H, W) -> (B, H, W, nb_classes)
        x = self.encoding(self.normalize(x))
        x = F.relu(self.final1(self.features(x)))
        x = self.final2(x)
        return x.permute(0, 2, 3, 1).contiguous()
