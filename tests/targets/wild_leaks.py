"""Leaks as they are written in the wild (docs/ANCHORS.md, "Where real leaks were found"), each in
a small model of the usual shape, with the line that brings the leak marked ``# LEAK``: the tests
of blame read that line back from the report (tests/evidence/test_blame_lines.py).

- ``sdpa_bool_mask``: a boolean mask built as "True = hidden" for SDPA, where True means *may
  attend* (the polarity bug): every query sees the future keys.
- ``reflect_padding``: a causal convolution padded on the left with ``mode="reflect"``: the
  padding copies ``x[1..k-1]`` in front of ``x[0]``.
- ``group_norm_over_time``: ``nn.GroupNorm`` over ``(C, T)``: statistics over the whole
  sequence, in inference too.
- ``mask_b_open_below``: a hand-written PixelCNN mask B that forgets to close the row below.
- ``mean_over_time``: a hand-written normalization by the mean over time.
"""

import torch
import torch.nn.functional as F
from torch import nn

T = 8


class Attention(nn.Module):
    def __init__(self, dim: int = 4, length: int = T):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        hidden = torch.ones(length, length, dtype=torch.bool).triu(1)  # True: a future key
        self.register_buffer("hidden", hidden)

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.hidden)  # LEAK
        return y.squeeze(1)


class SdpaBoolMask(nn.Module):
    def __init__(self, length: int = T):
        super().__init__()
        self.embed = nn.Linear(1, 4)
        self.attn = Attention(4, length)
        self.head = nn.Linear(4, 1)

    def forward(self, x):  # (B, T, 1) -> (B, T, 1)
        h = self.embed(F.pad(x, (0, 0, 1, -1)))  # shifted: output t sees x_<t
        return self.head(self.attn(h))


class ReflectPadding(nn.Module):
    def __init__(self, k: int = 3):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(1, 4, k)
        self.head = nn.Conv1d(4, 1, 1)

    def forward(self, x):  # (B, 1, T) -> (B, 1, T)
        x = F.pad(x, (1, -1))
        x = F.pad(x, (self.k - 1, 0), mode="reflect")  # LEAK
        return self.head(torch.tanh(self.conv(x)))


class GroupNormOverTime(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 2)
        self.norm = nn.GroupNorm(1, 4)
        self.head = nn.Conv1d(4, 1, 1)

    def forward(self, x):  # (B, 1, T) -> (B, 1, T)
        h = self.conv(F.pad(x, (2, -1)))
        h = self.norm(h)  # LEAK
        return self.head(torch.tanh(h))


class MaskedConv(nn.Conv2d):
    def __init__(self, c_in, c_out, k, mask_type):
        super().__init__(c_in, c_out, k, padding=k // 2)
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B") :] = 0  # the centre row, right of centre
        # (forgot: mask[k // 2 + 1 :] = 0, the rows below)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)  # LEAK


class MaskBOpenBelow(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = MaskedConv(4, 4, 3, "B")
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):  # (B, 1, H, W) -> (B, 1, H, W)
        h = self.a(F.pad(x, (0, 0, 2, -2)))  # rows two above: strict by itself
        return self.head(torch.tanh(self.b(torch.tanh(h))))


class MeanOverTime(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 2)

    def forward(self, x):  # (B, 1, T) -> (B, 4, T)
        h = self.conv(F.pad(x, (2, -1)))
        mean = h.mean(dim=-1, keepdim=True)  # LEAK
        return h - mean


def sdpa_bool_mask(length: int = T):
    torch.manual_seed(0)
    return SdpaBoolMask(length)


def reflect_padding():
    torch.manual_seed(0)
    return ReflectPadding()


def group_norm_over_time():
    torch.manual_seed(0)
    return GroupNormOverTime()


def mask_b_open_below():
    torch.manual_seed(0)
    return MaskBOpenBelow()


def mean_over_time():
    torch.manual_seed(0)
    return MeanOverTime()


# name: (factory, make_subject keywords)
LEAKS = {
    "sdpa_bool_mask": (sdpa_bool_mask, {"grid": (T,), "layout": "BTC"}),
    "reflect_padding": (reflect_padding, {"grid": (T,), "layout": "BCT"}),
    "group_norm_over_time": (group_norm_over_time, {"grid": (T,), "layout": "BCT"}),
    "mask_b_open_below": (mask_b_open_below, {"grid": (5, 5), "layout": "BCHW"}),
    "mean_over_time": (mean_over_time, {"grid": (T,), "layout": "BCT"}),
}
