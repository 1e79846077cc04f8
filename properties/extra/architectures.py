"""Random causal convolutional nets that know their own receptive field, and planted bugs.

These are the harness's positive and negative controls. An :class:`Architecture` builds a small
net (1D: shift + dilated causal convs; 2D: the lecture's two stacks, or a masked PixelCNN) with
``tanh`` activations (whose derivative is never zero, so a hole in the measured receptive field is
a real hole), and computes, *without running it*, the set of offsets each output can see: the
Minkowski sum of the kernels' offset sets. From that set come the analytic size, span, holes and
blind spot the audit must measure.

A ``bug`` plants one of the classic leaks:

- ``no_shift``: the first layer sees the present (mode ``inclusive``; in 2D the horizontal
  stack loses its shift);
- ``same_padding``: one convolution padded symmetrically, ``padding='same'`` (mode ``none``);
- ``batchnorm_over_time``: a BatchNorm after the first convolution: causal in inference, leaks
  the future through its statistics in training mode;
- ``mask_open_below`` (masked 2D): a mask-B convolution whose row below the centre is open.
"""

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from causal.layers import (
    CausalConv1d,
    HorizontalStackConv,
    MaskedConv2d,
    VerticalStackConv,
    shift_down,
    shift_right,
    shift_right_2d,
)

__all__ = ["Architecture", "BUGS_1D", "BUGS_2D", "PlantedLeak", "STYLES_2D"]

BUGS_1D = ("no_shift", "same_padding", "batchnorm_over_time")
BUGS_2D = ("no_shift", "same_padding", "batchnorm_over_time", "mask_open_below")
STYLES_2D = ("two_stack", "masked")


@dataclass(frozen=True)
class Architecture:
    dims: int
    kernel_sizes: tuple[int, ...]
    dilations: tuple[int, ...]  # 1D only; 1s in 2D
    channels: int = 4
    style: str = "stack"  # 1D: "stack"; 2D: "two_stack" or "masked"
    bug: str | None = None
    seed: int = 0

    # -- analytic facts (no model is run) -----------------------------------------------------
    def offsets(self) -> set[tuple[int, ...]]:
        """Offsets ``s - t`` (per grid axis) of the inputs an output sees (in inference)."""
        if self.dims == 1:
            reach = {(-1,)} if self.bug != "no_shift" else {(0,)}
            last = len(self.kernel_sizes) - 1
            for i, (k, d) in enumerate(zip(self.kernel_sizes, self.dilations, strict=True)):
                if self.bug == "same_padding" and i == last:
                    k = max(k, 2)
                    left = d * (k - 1) // 2  # torch's 'same': the extra pad goes right
                    reach = _minkowski(reach, {(-left + i * d,) for i in range(k)})
                else:
                    reach = _minkowski(reach, {(-i * d,) for i in range(k)})
            return reach
        box = {(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)}  # the 3x3 'same' leak
        if self.style == "masked":
            reach = _mask_offsets(self.kernel_sizes[0], "B" if self.bug == "no_shift" else "A")
            for i, k in enumerate(self.kernel_sizes[1:], start=1):
                layer = _mask_offsets(k, "B")
                if self.bug == "mask_open_below" and i == len(self.kernel_sizes) - 1:
                    layer.add((1, 0))
                reach = _minkowski(reach, layer)
            return _minkowski(reach, box) if self.bug == "same_padding" else reach
        # no_shift drops the horizontal stack's shift (the vertical one's would open the row).
        vertical = {(-1, 0)}
        horizontal = {(0, -1)} if self.bug != "no_shift" else {(0, 0)}
        for k in self.kernel_sizes:
            h = k // 2
            vertical = _minkowski(
                vertical, {(-a, b) for a in range(h + 1) for b in range(-h, h + 1)}
            )
            horizontal = _minkowski(horizontal, {(0, -b) for b in range(h + 1)})
        if self.bug == "same_padding":
            vertical = _minkowski(vertical, box)
        return vertical | horizontal

    @property
    def expected_mode(self) -> str:
        """The mode in inference, from the offsets: raster rank of an offset is positive when it
        lies in the future."""
        width = self.grid[1] if self.dims == 2 else 1
        ranks = {o[0] * width + o[1] if self.dims == 2 else o[0] for o in self.offsets()}
        if max(ranks) > 0:
            return "none"
        return "inclusive" if 0 in ranks else "strict"

    @property
    def expected_train_mode(self) -> str:
        return "none" if self.bug == "batchnorm_over_time" else self.expected_mode

    @property
    def grid(self) -> tuple[int, ...]:
        """A grid in which some output sees its whole receptive field (plus a margin)."""
        offs = torch.tensor(sorted(self.offsets()))
        lo, hi = offs.min(0).values, offs.max(0).values
        return tuple(int(h - low) + 3 for low, h in zip(lo.tolist(), hi.tolist(), strict=True))

    def size(self) -> int:
        return len(self.offsets())

    def span(self, width: int | None = None) -> int:
        """How far back, in raster ranks, the furthest offset reaches."""
        width = width or (self.grid[1] if self.dims == 2 else 1)
        ranks = [-(o[0] * width + o[1]) if self.dims == 2 else -o[0] for o in self.offsets()]
        return max(ranks)

    def holes(self) -> int | None:
        if self.dims != 1:
            return None
        ranks = [o[0] for o in self.offsets()]
        return max(ranks) - min(ranks) + 1 - len(ranks)

    def blind_spot(self) -> int | None:
        """Number of blind pixels of an interior output (2D)."""
        if self.dims != 2:
            return None
        offs = self.offsets()
        rows = [o[0] for o in offs]
        cols = [o[1] for o in offs]
        blind = 0
        for a, b in itertools.product(range(min(rows), 1), range(min(cols), max(cols) + 1)):
            past = a < 0 or b < 0
            above = any((r, b) in offs for r in range(min(rows), a))
            if past and above and (a, b) not in offs:
                blind += 1
        return blind

    # -- the model ----------------------------------------------------------------------------
    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        if self.dims == 1:
            return _Net1d(self)
        return _MaskedNet(self) if self.style == "masked" else _TwoStackNet(self)

    @property
    def layout(self) -> str:
        return "BCT->BCT" if self.dims == 1 else "BCHW->BCHW"


def _minkowski(a, b):
    return {tuple(x + y for x, y in zip(p, q, strict=True)) for p in a for q in b}


def _mask_offsets(k: int, mask_type: str) -> set[tuple[int, int]]:
    c = k // 2
    offs = {(-a, b) for a in range(1, c + 1) for b in range(-c, c + 1)}
    offs |= {(0, -b) for b in range(1, c + 1)}
    if mask_type == "B":
        offs.add((0, 0))
    return offs


class _Net1d(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.input = nn.Conv1d(1, c, 1)
        self.norm = nn.BatchNorm1d(c) if arch.bug == "batchnorm_over_time" else None
        layers = []
        for i, (k, d) in enumerate(zip(arch.kernel_sizes, arch.dilations, strict=True)):
            if arch.bug == "same_padding" and i == len(arch.kernel_sizes) - 1:
                layers.append(nn.Conv1d(c, c, max(k, 2), dilation=d, padding="same"))
            else:
                layers.append(CausalConv1d(c, c, k, dilation=d))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Conv1d(c, 3, 1)

    def forward(self, x):  # (B, 1, T) -> (B, 3, T)
        if self.arch.bug != "no_shift":
            x = shift_right(x)
        x = self.input(x)
        if self.norm is not None:
            x = self.norm(x)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x)


class _TwoStackNet(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.norm = nn.BatchNorm2d(1) if arch.bug == "batchnorm_over_time" else None
        ks = arch.kernel_sizes
        self.vertical = nn.ModuleList(
            VerticalStackConv(1 if i == 0 else c, c, k) for i, k in enumerate(ks)
        )
        self.horizontal = nn.ModuleList(
            HorizontalStackConv(1 if i == 0 else c, c, k) for i, k in enumerate(ks)
        )
        self.leak = nn.Conv2d(c, c, 3, padding="same") if arch.bug == "same_padding" else None
        self.head = nn.Conv2d(2 * c, 3, 1)

    def forward(self, x):  # (B, 1, H, W) -> (B, 3, H, W)
        if self.norm is not None:
            x = self.norm(x)
        v = shift_down(x)
        h = x if self.arch.bug == "no_shift" else shift_right_2d(x)
        for conv_v, conv_h in zip(self.vertical, self.horizontal, strict=True):
            v, h = torch.tanh(conv_v(v)), torch.tanh(conv_h(h))
        if self.leak is not None:
            v = torch.tanh(self.leak(v))
        return self.head(torch.cat((v, h), 1))


class _MaskedNet(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.norm = nn.BatchNorm2d(1) if arch.bug == "batchnorm_over_time" else None
        first_type = "B" if arch.bug == "no_shift" else "A"
        layers = [MaskedConv2d(1, c, arch.kernel_sizes[0], first_type)]
        layers += [MaskedConv2d(c, c, k, "B") for k in arch.kernel_sizes[1:]]
        if arch.bug == "mask_open_below":
            if arch.kernel_sizes[-1] < 3 or len(layers) < 2:
                raise ValueError("mask_open_below needs a last mask-B layer of kernel size >= 3")
            open_below = layers[-1].mask.clone()
            open_below[open_below.shape[0] // 2 + 1, open_below.shape[1] // 2] = 1
            layers[-1].mask.copy_(open_below)
        self.layers = nn.ModuleList(layers)
        self.leak = nn.Conv2d(c, c, 3, padding="same") if arch.bug == "same_padding" else None
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):  # (B, 1, H, W) -> (B, 3, H, W)
        if self.norm is not None:
            x = self.norm(x)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        if self.leak is not None:
            x = torch.tanh(self.leak(x))
        return self.head(x)


# ---------------------------------------------------------------------------------------------
# Leaks planted on top of any causal model's output (positive controls for the search)


class PlantedLeak(nn.Module):
    """Wraps a causal 1D model with output ``(B, K, T)`` and adds to the prediction at ``t`` a
    function of the *next* input ``x_{t+1}``:

    - ``linear``: ``scale * x_{t+1}`` (``scale=1e-4`` is the tiny leak);
    - ``threshold``: ``scale * [x_{t+1} > 0]`` (no gradient: only perturbations see it);
    - ``large``: ``scale * relu(|x_{t+1}| - 100)`` (only future values beyond 100 leak);
    - ``late``: ``scale * x_{t+1}`` at outputs ``t >= start`` only (a leak deep in the sequence);
    - ``nan``: the prediction at ``t`` becomes NaN where ``x_{t+1}`` is exactly zero (a padding
      mask read from the next input leaves an attention row with no key: softmax of ``-inf``s);
      the lecture's zeros show it, and only as a NaN.

    and leaks of the *present* ``x_t`` that gradients cannot see (mode ``inclusive``, found by
    perturbations alone):

    - ``present_threshold``: ``scale * [x_t > 0]``;
    - ``present_integer``: ``scale * floor(255 x_t)``, an integer op (8-bit quantization of the
      input, whose gradient is zero).
    """

    def __init__(self, model: nn.Module, kind: str, scale: float = 1.0, start: int = 0):
        super().__init__()
        self.model, self.kind, self.scale, self.start = model, kind, scale, start

    def forward(self, x):  # (B, 1, T) -> (B, K, T)
        y = self.model(x)
        if self.kind == "present_threshold":
            return y + self.scale * (x > 0).to(x.dtype)
        if self.kind == "present_integer":
            return y + self.scale * torch.floor(x.detach() * 255).long().to(x.dtype)
        if self.kind == "nan":  # past the end there is no padding: pad with ones
            padded = F.pad(x, (0, 1), value=1.0)[..., 1:]
            return torch.where(padded == 0, torch.full_like(y, float("nan")), y)
        nxt = F.pad(x, (0, 1))[..., 1:]  # x_{t+1}, zero after the end
        if self.kind in ("linear", "late"):
            leak = nxt
        elif self.kind == "threshold":
            leak = (nxt > 0).to(x.dtype)
        elif self.kind == "large":
            leak = torch.relu(nxt.abs() - 100.0)
        else:
            raise ValueError(f"unknown leak kind {self.kind!r}")
        if self.kind == "late":
            leak = leak * (torch.arange(x.shape[-1]) >= self.start).to(x.dtype)
        return y + self.scale * leak
