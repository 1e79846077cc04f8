"""The original PixelCNN (van den Oord et al., 2016, "Pixel recurrent neural networks"): one
mask-``A`` convolution that hides the current pixel, then mask-``B`` convolutions.

Its receptive field grows up and to the left but never reaches the pixels above and to the
*right* that are more than one layer's reach away: the **blind spot** (lecture slide 19). We keep
it here on purpose, as the model the audit must flag.

Input ``(B, C, H, W)`` raw values, output ``(B, H, W, nb_classes)`` logits.
"""

import torch.nn.functional as F
from torch import nn

from ..layers import MaskedConv2d, Normalize


class MaskedPixelCNN(nn.Module):
    def __init__(self, nb_classes, in_channels=1, channels=64, first_ks=7, ks=3, nb_layers=5):
        super().__init__()
        self.normalize = Normalize()
        self.first = MaskedConv2d(in_channels, channels, first_ks, "A")
        self.layers = nn.ModuleList(
            MaskedConv2d(channels, channels, ks, "B") for _ in range(nb_layers)
        )
        self.final1 = nn.Conv2d(channels, channels, kernel_size=1)
        self.final2 = nn.Conv2d(channels, nb_classes, kernel_size=1)

    def forward(self, x):  # (B, C, H, W) -> (B, H, W, nb_classes)
        x = F.relu(self.first(self.normalize(x)))
        for layer in self.layers:
            x = F.relu(layer(x))
        x = self.final2(F.relu(self.final1(x)))
        return x.permute(0, 2, 3, 1).contiguous()
