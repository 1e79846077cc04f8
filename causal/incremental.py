"""Cached (incremental) generation: one new position per step instead of the whole grid.

The lecture's synthesis loop (slide 17) runs the whole model on the whole grid for every new
value: ``T`` forward passes of ``O(T)`` work each. But a causal convolution only ever reads a
window of its input that ends at the present, and every value in that window has already been
computed at an earlier step. Caching those values (Ramachandran et al. 2017, "Fast generation for
convolutional autoregressive models"; Paine et al.'s Fast Wavenet) makes a step ``O(layers)``:

- a **1D causal convolution** of kernel ``k`` and dilation ``d`` keeps a queue of its last
  ``(k - 1) * d`` inputs (:class:`ConvQueue`); the lecture's zero padding is the queue's initial
  zeros, and the one-step shift ``F.pad(x, (1, -1))`` is "read ``x_{t-1}``, or a zero at ``t = 0``"
  (a zero *after* normalization: the models pad the normalized input);
- the **vertical stack** of a two-stack PixelCNN sees only the rows above, so its features for row
  ``i`` are computed once, for the whole row, when row ``i - 1`` is complete (:class:`RowCache`);
  the **horizontal stack** is a 1D causal stack along the row: a :class:`ConvQueue` per layer,
  emptied at the start of every row;
- the **masked PixelCNN**'s features at a pixel depend only on the pixels before it in raster
  order, in every layer; so each layer's feature map is filled in one pixel per step, from the
  (masked) window of the layer below, which is complete up to that pixel.

A stepper is called as ``step(x, t) -> (N, K) logits`` with ``t = 0, 1, 2, ...`` in order (``t = 0``
starts afresh) and reads from ``x`` only the values at positions ``< t``: the same contract as
:func:`causal.sample.full_recompute_step`. :func:`cached_stepper` picks the stepper of a model by
its exact type, one small class per model family.

In float64 the cached logits equal the full pass up to rounding (a few ulps: a convolution over
the whole grid and a matrix product at one position sum in different orders, and which order the
BLAS picks for the full pass even depends on the grid's length);
``tests/lecture/test_incremental.py`` checks that under teacher forcing, and that float64 samples
are identical with and without cache.
"""

import torch
import torch.nn.functional as F
from torch import nn

from . import models
from .layers import gated


class NoCachedStepper(TypeError):
    """The model has no cached stepper; one-line message."""


def pointwise(conv: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution at one position: ``(N, C_in) -> (N, C_out)``."""
    return F.linear(u, conv.weight.flatten(1), conv.bias)


class ConvQueue:
    """One causal 1D convolution, one position at a time, with a queue of its last inputs.

    ``conv`` has a ``(C_out, C_in, k)`` or ``(C_out, C_in, 1, k)`` kernel with dilation ``d`` and
    is used by its model with ``(k - 1) * d`` zeros of left padding: the queue starts with those
    zeros. The queue is circular: the input at position ``s`` lives in slot ``s mod (k - 1) d``.
    """

    def __init__(self, conv: nn.Module, nb: int):
        w = conv.weight.flatten(2)  # (C_out, C_in, k)
        c_out, c_in, k = w.shape
        d = conv.dilation[-1]
        self.weight = w.permute(0, 2, 1).reshape(c_out, k * c_in)  # column j * C_in + c: tap j
        self.bias = conv.bias
        self.length = (k - 1) * d
        self.offsets = [j * d for j in range(k - 1)]  # taps t - (k-1)d, ..., t - d
        self.queue = w.new_zeros(max(self.length, 1), nb, c_in)  # (L, N, C_in)
        self.t = 0

    def reset(self) -> None:
        self.queue.zero_()
        self.t = 0

    def __call__(self, u: torch.Tensor) -> torch.Tensor:  # (N, C_in) input at t -> (N, C_out)
        past = [self.queue[(self.t + o) % self.length] for o in self.offsets]  # k-1 x (N, C_in)
        taps = torch.stack(past + [u], dim=1).flatten(1)  # (N, k * C_in)
        if self.length:
            self.queue[self.t % self.length] = u  # overwrites t - (k-1)d, read just above
        self.t += 1
        return F.linear(taps, self.weight, self.bias)


class RowCache:
    """The input rows of one vertical-stack convolution, zero-padded as the model pads them, and
    the convolution's output for a whole row at once.

    ``conv`` is a :class:`~causal.layers.VerticalStackConv`: kernel ``(kh, kw)``, padding
    ``(left, right, top, 0)``; its output row ``i`` reads its input rows ``i - top .. i``.
    """

    def __init__(self, conv: nn.Module, nb: int, height: int, width: int):
        left, right, top, bottom = conv.pad
        assert bottom == 0, "a vertical stack is padded on top only"
        self.conv, self.top, self.left, self.width = conv, top, left, width
        self.rows = conv.weight.new_zeros(nb, conv.in_channels, top + height, left + width + right)

    def write(self, i: int, row: torch.Tensor) -> None:  # (N, C_in, W): the input at row i
        self.rows[:, :, self.top + i, self.left : self.left + self.width] = row

    def output(self, i: int) -> torch.Tensor:  # (N, C_out, 1, W): the output at row i
        window = self.rows[:, :, i : i + self.conv.kernel_size[0]]  # input rows i-top .. i
        return nn.Conv2d.forward(self.conv, window)  # the convolution, without the model's F.pad


class Stepper:
    """Base class: checks that steps come in order and starts afresh at ``t = 0``.

    Subclasses implement ``start(x)`` (allocate the caches for this batch and grid) and
    ``step(x, t)`` (the logits at ``t`` from the caches and ``x_{t-1}``).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.t = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:  # (N, C, *grid), t -> (N, K)
        if t == 0:
            self.start(x)
        elif self.t is None or t != self.t + 1:
            after = "a fresh stepper" if self.t is None else f"t={self.t}"
            raise ValueError(
                f"a cached stepper must be called with t = 0, 1, 2, ... in order; got t={t} "
                f"after {after}"
            )
        self.t = t
        return self.step(x, t)

    def start(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self, x: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError


def previous_1d(model: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
    """The one-step shift of the lecture at position ``t``: normalized ``x_{t-1}``, or the zero
    ``F.pad`` puts in front of the *normalized* input at ``t = 0``. ``(N, C)``."""
    if t == 0:
        return x.new_zeros(x.shape[:2])
    return model.normalize(x[:, :, t - 1])


class ToyStepper(Stepper):
    """``NetToy1d`` and ``NetToy1dWithDilation`` (slides 15, 21): the shift, ``conv0`` (1x1), four
    causal convolutions with ReLUs, ``conv5`` (1x1)."""

    def start(self, x):
        m = self.model
        self.queues = [ConvQueue(c, x.size(0)) for c in (m.conv1, m.conv2, m.conv3, m.conv4)]

    def step(self, x, t):
        u = F.relu(pointwise(self.model.conv0, previous_1d(self.model, x, t)))  # (N, nc)
        for queue in self.queues:
            u = F.relu(queue(u))
        return pointwise(self.model.conv5, u)  # (N, K)


class WaveNetStepper(Stepper):
    """``WaveNet``: the shift, a 1x1 input convolution, gated residual layers (a queue per dilated
    convolution), the sum of the skips, two 1x1 heads."""

    def start(self, x):
        self.queues = [ConvQueue(layer.dilated, x.size(0)) for layer in self.model.layers]

    def step(self, x, t):
        m = self.model
        u = pointwise(m.input, previous_1d(m, x, t))  # (N, C)
        skips = 0
        for layer, queue in zip(m.layers, self.queues, strict=True):
            h = gated(queue(u))  # (N, C)
            u, skips = u + pointwise(layer.residual, h), skips + pointwise(layer.skip, h)
        return pointwise(m.head2, F.relu(pointwise(m.head1, F.relu(skips))))  # (N, K)


class Stepper2d(Stepper):
    """Raster order on an ``(H, W)`` grid, and the model's input (normalized ``x``, followed by
    the positional code for the model that has one) at a row or a pixel."""

    def start(self, x):
        self.nb, self.height, self.width = x.size(0), x.size(2), x.size(3)
        encoding = getattr(self.model, "encoding", None)
        self.code = None if encoding is None else encoding.code.to(x.dtype)  # (C_pe, H, W)
        self.zero_input = torch.zeros_like(self.model_input(x, 0, 0))  # (N, C)

    def model_input(self, x, i, j=slice(None)):  # (N, C, W) for a row, (N, C) for a pixel
        u = self.model.normalize(x[:, :, i, j])
        if self.code is None:
            return u
        code = self.code[:, i, j]
        return torch.cat((u, code.expand(u.size(0), *code.shape)), 1)

    def step(self, x, t):
        i, j = divmod(t, self.width)
        if j == 0:
            self.start_row(x, i)
        # the right shift: the pixel to the left, or a zero at the start of the row
        u = self.model_input(x, i, j - 1) if j > 0 else self.zero_input
        return self.pixel(u, j)


class TwoStackStepper(Stepper2d):
    """The lecture's two-stack ``PixelCNN`` and ``PixelCNNWithPositionalEncoding`` (slides 21,
    23-24): row caches for the vertical stack, queues along the row for the horizontal one."""

    def start(self, x):
        super().start(x)
        m, args = self.model, (self.nb, self.height, self.width)
        self.vertical = [RowCache(m.conv1v, *args), RowCache(m.conv2v, *args)]
        self.horizontal = [ConvQueue(m.conv1h, self.nb), ConvQueue(m.conv2h, self.nb)]

    def start_row(self, x, i):
        """Vertical features of row ``i``, from the rows above (the down shift)."""
        if i > 0:
            self.vertical[0].write(i, self.model_input(x, i - 1))
        v = F.relu(self.vertical[0].output(i))
        self.vertical[1].write(i, v[:, :, 0])
        self.v_row = F.relu(self.vertical[1].output(i))[:, :, 0]  # (N, 64, W)
        for queue in self.horizontal:
            queue.reset()

    def pixel(self, u, j):
        for queue in self.horizontal:
            u = F.relu(queue(u))
        features = torch.cat((self.v_row[:, :, j], u), 1)  # (N, 128)
        return pointwise(self.model.final2, F.relu(pointwise(self.model.final1, features)))


class GatedStepper(Stepper2d):
    """``GatedPixelCNN``: per row, the whole vertical stack and its contributions to the
    horizontal stack; per pixel, the horizontal stack's queues, gates and residuals."""

    def start(self, x):
        super().start(x)
        m, args = self.model, (self.nb, self.height, self.width)
        convs = [m.first_vertical] + [layer.vertical for layer in m.layers]
        self.vertical = [RowCache(conv, *args) for conv in convs]
        convs = [m.first_horizontal] + [layer.horizontal for layer in m.layers]
        self.horizontal = [ConvQueue(conv, self.nb) for conv in convs]

    def start_row(self, x, i):
        if i > 0:
            self.vertical[0].write(i, self.model_input(x, i - 1))
        v = self.vertical[0].output(i)  # (N, C, 1, W)
        self.v_to_h = []  # per layer, (N, 2C, W): what the vertical stack adds to the horizontal
        for layer, cache in zip(self.model.layers, self.vertical[1:], strict=True):
            cache.write(i, v[:, :, 0])
            v_pre = cache.output(i)  # (N, 2C, 1, W)
            self.v_to_h.append(layer.vertical_to_horizontal(v_pre)[:, :, 0])
            v = gated(v_pre)
        for queue in self.horizontal:
            queue.reset()

    def pixel(self, u, j):
        h = self.horizontal[0](u)  # (N, C)
        for layer, queue, v_to_h in zip(
            self.model.layers, self.horizontal[1:], self.v_to_h, strict=True
        ):
            h_pre = queue(h) + v_to_h[:, :, j]  # (N, 2C)
            h = h + pointwise(layer.residual, gated(h_pre))
        m = self.model
        return pointwise(m.final2, F.relu(pointwise(m.final1, F.relu(h))))


class MaskedStepper(Stepper2d):
    """``MaskedPixelCNN``, one pixel per step in every layer. A layer's features at a pixel depend
    only on the pixels before it, so at step ``(i, j)`` each layer computes its features at
    ``(i, j)`` alone, from rows ``i - c .. i`` of the layer below, complete up to ``(i, j)`` (the
    mask zeroes what is not computed yet)."""

    def start(self, x):
        super().start(x)
        m = self.model
        self.convs = [m.first, *m.layers]
        self.maps = []  # per conv, its input zero-padded by k // 2: (N, C_in, H + 2c, W + 2c)
        self.kernels = []  # per conv, its masked kernel's rows 0 .. c, flattened
        for conv in self.convs:
            c = conv.kernel_size[0] // 2
            size = (self.nb, conv.in_channels, self.height + 2 * c, self.width + 2 * c)
            self.maps.append(x.new_zeros(size))
            self.kernels.append((conv.weight * conv.mask)[:, :, : c + 1].flatten(1))

    def step(self, x, t):
        i, j = divmod(t, self.width)
        if t > 0:  # the pixel written since the last step
            pi, pj = divmod(t - 1, self.width)
            c = self.convs[0].kernel_size[0] // 2
            self.maps[0][:, :, pi + c, pj + c] = self.model.normalize(x[:, :, pi, pj])
        for n, conv in enumerate(self.convs):
            k = conv.kernel_size[0]
            window = self.maps[n][:, :, i : i + k // 2 + 1, j : j + k]  # rows i-c .. i
            u = F.relu(F.linear(window.flatten(1), self.kernels[n], conv.bias))  # (N, C_out)
            if n + 1 < len(self.convs):
                c = self.convs[n + 1].kernel_size[0] // 2
                self.maps[n + 1][:, :, i + c, j + c] = u
        m = self.model
        return pointwise(m.final2, F.relu(pointwise(m.final1, u)))


STEPPERS: dict[type, type[Stepper]] = {
    models.NetToy1d: ToyStepper,
    models.NetToy1dWithDilation: ToyStepper,
    models.WaveNet: WaveNetStepper,
    models.PixelCNN: TwoStackStepper,
    models.PixelCNNWithPositionalEncoding: TwoStackStepper,
    models.GatedPixelCNN: GatedStepper,
    models.MaskedPixelCNN: MaskedStepper,
}


def cached_stepper(model: nn.Module) -> Stepper:
    """The cached step of ``model``, a stepper for :func:`causal.sample.sample`.

    Looked up by the model's *exact* type: a subclass may change ``forward``, and a cache that
    silently computes the parent's model would be wrong. Raises :class:`NoCachedStepper` for a
    model without one.
    """
    try:
        stepper = STEPPERS[type(model)]
    except KeyError:
        known = ", ".join(cls.__name__ for cls in STEPPERS)
        raise NoCachedStepper(
            f"no cached stepper for {type(model).__name__} (known: {known}); sample it with the "
            f"full recompute (cache=False, or cache='auto' to fall back)"
        ) from None
    return stepper(model)
