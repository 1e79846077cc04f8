"""MADE-style models (Germain et al. 2015): one masked MLP, outputs in an arbitrary order.

``(B, D)`` floats -> ``(B, D * K)``: output ``i`` (its ``K`` values) may only see the inputs
generated before position ``i``. ``ORDER`` lists the positions in generation order (what
``make_subject(order=...)`` and ``--order`` take); ``RANKS[i]`` is the rank of position ``i``
(zuko's ``order`` convention: the inverse permutation).

- ``made``: our own masked MLP; its outputs are laid out position-major, ``B(TC)``;
- ``zuko_made``: ``zuko.nn.MaskedMLP`` with the adjacency of the same order, its outputs laid out
  class-major, ``B(CT)`` (as zuko's autoregressive transforms do).

``python -m properties audit tests/targets/made.py:made --length 12 --layout "BT->B(TC)"
--order @generation_order --predicts current``
"""

import torch
from torch import nn

D = 12
K = 2
RANKS = torch.randperm(D, generator=torch.Generator().manual_seed(7))
ORDER = torch.argsort(RANKS)


class MaskedLinear(nn.Linear):
    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    def __init__(self, ranks: torch.Tensor = RANKS, hidden: int = 32, k: int = K):
        super().__init__()
        d = len(ranks)
        self.generation_order = torch.argsort(ranks)
        degree_in = ranks + 1  # 1..D
        degree_hidden = torch.arange(hidden) % max(1, d - 1) + 1  # 1..D-1
        first = degree_hidden[:, None] >= degree_in[None, :]
        second = degree_hidden[:, None] >= degree_hidden[None, :]
        last = (degree_in[:, None] > degree_hidden[None, :]).repeat_interleave(k, dim=0)
        self.net = nn.Sequential(
            MaskedLinear(first), nn.ReLU(), MaskedLinear(second), nn.ReLU(), MaskedLinear(last)
        )

    def forward(self, x):  # (B, D) -> (B, D * K), position-major
        return self.net(x)


def made() -> MADE:
    torch.manual_seed(0)
    return MADE()


def zuko_made() -> nn.Module:
    from zuko.nn import MaskedMLP

    torch.manual_seed(0)
    adjacency = RANKS[:, None] > RANKS[None, :]  # output i sees input j iff rank j < rank i
    net = MaskedMLP(adjacency.repeat(K, 1), hidden_features=[32, 32])  # class-major rows
    net.generation_order = ORDER
    return net
