"""The lecture's 1D toy models (slides 15 and 21), kept line for line.

Both take ``(B, 1, T)`` raw values and return ``(B, T, nb_classes)`` logits: output ``t`` is the
predicted distribution of ``x_t`` given ``x_{<t}``. The only addition to the slides is the
:class:`~causal.layers.Normalize` in front, which holds the training set's mean and std so that
callers feed raw values (the slides normalize in the training loop).

``NetToy1dWithDilation`` has dilations 2, 4, 8, 16 and *no dilation-1 layer*: every path from
``x_s`` to output ``t`` has odd length ``t - s``, so it sees only every other past value (16 of the
31 positions of its span). That is faithful to the slide; the audit shows it as 15 holes.
"""

import torch.nn.functional as F
from torch import nn

from ..layers import Normalize, receptive_field_1d


class NetToy1d(nn.Module):
    def __init__(self, nb_classes, ks=2, nc=32):
        super().__init__()
        self.normalize = Normalize()
        self.pad = (ks - 1, 0)
        self.conv0 = nn.Conv1d(1, nc, kernel_size=1)
        self.conv1 = nn.Conv1d(nc, nc, kernel_size=ks)
        self.conv2 = nn.Conv1d(nc, nc, kernel_size=ks)
        self.conv3 = nn.Conv1d(nc, nc, kernel_size=ks)
        self.conv4 = nn.Conv1d(nc, nc, kernel_size=ks)
        self.conv5 = nn.Conv1d(nc, nb_classes, kernel_size=1)
        self.span = receptive_field_1d([ks] * 4, [1] * 4)

    def forward(self, x):  # (B, 1, T) -> (B, T, nb_classes)
        x = self.normalize(x)
        x = F.relu(self.conv0(F.pad(x, (1, -1))))
        x = F.relu(self.conv1(F.pad(x, self.pad)))
        x = F.relu(self.conv2(F.pad(x, self.pad)))
        x = F.relu(self.conv3(F.pad(x, self.pad)))
        x = F.relu(self.conv4(F.pad(x, self.pad)))
        x = self.conv5(x)
        return x.permute(0, 2, 1).contiguous()


class NetToy1dWithDilation(nn.Module):
    def __init__(self, nb_classes, ks=2, nc=32):
        super().__init__()
        self.normalize = Normalize()
        self.conv0 = nn.Conv1d(1, nc, kernel_size=1)
        self.pad1 = ((ks - 1) * 2, 0)
        self.conv1 = nn.Conv1d(nc, nc, kernel_size=ks, dilation=2)
        self.pad2 = ((ks - 1) * 4, 0)
        self.conv2 = nn.Conv1d(nc, nc, kernel_size=ks, dilation=4)
        self.pad3 = ((ks - 1) * 8, 0)
        self.conv3 = nn.Conv1d(nc, nc, kernel_size=ks, dilation=8)
        self.pad4 = ((ks - 1) * 16, 0)
        self.conv4 = nn.Conv1d(nc, nc, kernel_size=ks, dilation=16)
        self.conv5 = nn.Conv1d(nc, nb_classes, kernel_size=1)
        self.span = receptive_field_1d([ks] * 4, [2, 4, 8, 16])

    def forward(self, x):  # (B, 1, T) -> (B, T, nb_classes)
        x = self.normalize(x)
        x = F.relu(self.conv0(F.pad(x, (1, -1))))
        x = F.relu(self.conv1(F.pad(x, self.pad1)))
        x = F.relu(self.conv2(F.pad(x, self.pad2)))
        x = F.relu(self.conv3(F.pad(x, self.pad3)))
        x = F.relu(self.conv4(F.pad(x, self.pad4)))
        x = self.conv5(x)
        return x.permute(0, 2, 1).contiguous()
