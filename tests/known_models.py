"""Small models whose dependencies are known exactly, for the tests that prove each kind of
evidence on its own (tests/evidence/test_isolated.py, tests/evidence/perturbation/, ...)."""

import torch
from torch import nn

from properties import make_subject

# What output t reads, as offsets s - t: the four classes of positive and negative controls.
CASES = {
    "neither": (-1, -3),  # strict: the past only
    "present": (-1, 0),  # inclusive
    "future": (-1, 2),  # none, through x_{t+2}
    "both": (-1, 0, 2),  # none, and the present too
}
MODES = {"neither": "strict", "present": "inclusive", "future": "none", "both": "none"}


def shifted(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x_{t+k}`` along dim 1, zero outside the grid."""
    if k == 0:
        return x
    zeros = torch.zeros_like(x[:, : abs(k)])
    return torch.cat([x[:, k:], zeros], 1) if k > 0 else torch.cat([zeros, x[:, :k]], 1)


class Taps(nn.Module):
    """``(B, T, 1) -> (B, T, 2)``: ``y_t = sum_k w_k x_{t+k}`` over ``offsets`` (linear, so the
    gradients see every tap), plus ``steps``: ``[x_{t+k} > 0]`` (a threshold, which no gradient
    sees)."""

    def __init__(self, offsets=(-1,), steps=()):
        super().__init__()
        self.offsets, self.steps = tuple(offsets), tuple(steps)
        n = len(self.offsets) + len(self.steps)
        self.register_buffer("w", torch.linspace(0.5, 1.5, 2 * n).reshape(n, 2))

    def forward(self, x):
        y = 0
        for i, k in enumerate(self.offsets):
            y = y + shifted(x, k) * self.w[i]
        for i, k in enumerate(self.steps, start=len(self.offsets)):
            y = y + (shifted(x, k) > 0).to(x.dtype) * self.w[i]
        return y


def taps_subject(case_or_offsets, length=12, *, steps=(), dtype=torch.float64, **options):
    offsets = CASES.get(case_or_offsets, case_or_offsets)
    model = Taps(offsets, steps).to(dtype)
    return make_subject(model, grid=(length,), layout="BTC", **options)


def expected_sweep(case: str, length: int, cuts=None) -> dict[int, tuple[int, str]]:
    """``{output: (cut, kind)}`` the sweep must record for a ``CASES`` model: the furthest cut
    that moves each output, a future one over a present one."""
    cuts = set(range(length)) if cuts is None else set(cuts)
    ahead = max(CASES[case])
    out: dict[int, tuple[int, str]] = {}
    for t in range(length):
        reaches = ahead > 0 and t + ahead < length  # x_{t+ahead} exists
        future = [c for c in cuts if reaches and t < c <= t + ahead]
        if future:
            out[t] = (max(future), "future")
        elif t in cuts and (0 in CASES[case] or reaches):
            out[t] = (t, "present")  # the cut at t replaces x_t, and x_{t+ahead} with it
    return out


def expected_pairs(case: str, length: int) -> set[tuple[int, int]]:
    """(output, input) pairs the gradient facts must list for a ``CASES`` model."""
    return {(t, t + k) for t in range(length) for k in CASES[case] if k >= 0 and t + k < length}
