"""FFTs: along the transformed axes every frequency depends on every sample (and back), and the
one pattern where the round trip is exact: a truncated, zero-padded FFT convolution.

``irfft(rfft(x, n=M) * rfft(k, n=M), n=M)`` is the *circular* convolution of the two signals
padded to ``M``. When ``x`` is nonzero only on ``[0, Lx)`` and ``k`` on ``[0, Lk)`` with
``Lx + Lk - 1 <= M``, nothing wraps around: it is the linear convolution
``y[t] = sum_{u < Lk} k[u] x[t - u]``, causal with a receptive field of ``Lk`` (S4, S4D, H3,
Hyena and FlashFFTConv-style long convolutions pad to ``2L`` for exactly this). The tracer notes
the spectrum of every real signal it sees transformed (its FFT length, the support its zero
padding leaves, its time-domain summary), follows products of spectra and scalings, and at the
inverse transform replaces the coarse bound by the convolution of the summaries. Where the
supports do not fit (no padding, a kernel as long as the FFT), nothing is replaced. The proof is
of the convolution in exact arithmetic: float rounding of the transforms moves outputs by
about ``1e-16`` of the values (the dynamic evidence calls that rounding).
"""

from dataclasses import dataclass

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from ..deps import Pattern, any_over, attend, compress, full_on, is_runs
from ..deps import live as live_elements
from .base import _dim, aten, rule


@rule(aten._fft_r2c.default, aten._fft_c2r.default, aten._fft_c2c.default, runs=True)
def transform(ctx, args, kwargs, outs):
    """Every coefficient along the transformed axes depends on every sample along them."""
    x, dims = args[0], [_dim(d, args[0].dim()) for d in args[1]]
    d = any_over(ctx.deps(x), dims)
    return [None if d is None else compress(d.reshape(*[1 if i in dims else s for i, s in
                                                        enumerate(d.shape[:-1])],
                                                      d.shape[-1]))]


@dataclass
class Spectrum:
    axis: int  # from the end: -1 is the last axis
    m: int  # the FFT length
    support: int  # the signal may be nonzero on [0, support) only
    time: torch.Tensor | None  # the summary of the (padded) signal, None for a constant


def spectra_of(ctx) -> WeakTensorKeyDictionary:
    found = getattr(ctx, "_spectra", None)
    if found is None:
        found = ctx._spectra = WeakTensorKeyDictionary()
    return found


def follow(ctx, func, args, outs) -> None:
    """After an op: note the spectra it makes, and finish the pattern at an inverse
    transform."""
    name = func._schema.name.split("::")[-1] if func.namespace == "aten" else ""
    if name == "_fft_r2c":
        _forward(ctx, args, outs)
        return
    spectra = spectra_of(ctx)
    if not len(spectra):
        return
    if name in ("mul", "div") and len(outs) == 1:
        _product(ctx, spectra, name, args, outs[0])
    elif name == "_fft_c2r":
        _inverse(ctx, spectra, args, outs[0])


def _forward(ctx, args, outs):
    x, dims, onesided = args[0], list(args[1]), args[3] if len(args) > 3 else True
    if len(dims) != 1 or not onesided or x.is_complex():
        return
    axis = _dim(dims[0], x.dim()) - x.dim()
    d = ctx.deps(x)
    along = x.movedim(axis, -1).reshape(-1, x.shape[axis])
    live = (along != 0).any(0)
    if d is not None:  # (either form: which elements depend on something, along the axis)
        held = live_elements(full_on(d, x.shape, [x.dim() + axis]))
        live = live | held.movedim(x.dim() + axis, -1).reshape(-1, x.shape[axis]).any(0)
    where = live.nonzero()
    support = int(where.max()) + 1 if len(where) else 0
    spectra_of(ctx)[outs[0]] = Spectrum(axis, x.shape[axis], support, d)


def _product(ctx, spectra, name, args, out):
    a, b = args[0], args[1]
    sa = spectra.get(a) if isinstance(a, torch.Tensor) else None
    sb = spectra.get(b) if isinstance(b, torch.Tensor) else None
    if name == "div" and sa is not None and _scalar(ctx, b):  # k_f / n: the same signal, scaled
        spectra[out] = sa
    elif name == "mul" and (sa is None) != (sb is None):
        other = b if sa is not None else a
        if _scalar(ctx, other):
            spectra[out] = sa or sb
    elif name == "mul" and sa is not None and sb is not None and sa.axis == sb.axis \
            and sa.m == sb.m and (sa.time is None or sb.time is None):
        signal, kernel = (sa, sb) if sb.time is None else (sb, sa)
        spectra[out] = Spectrum(sa.axis, sa.m, sa.support + sb.support - 1,
                                _convolved(signal, kernel.support, out))


def _scalar(ctx, value) -> bool:
    """A constant that scales every frequency alike."""
    if not isinstance(value, torch.Tensor):
        return isinstance(value, (int, float))
    return ctx.deps(value) is None and value.numel() == 1


def _convolved(signal: Spectrum, length: int, out):
    """The summary of ``signal`` convolved with a kernel on ``[0, length)``: element t unites
    elements t - length + 1 .. t (a running window, by differences of counts)."""
    d = signal.time
    if d is None:
        return None
    nd = d.dim() - 1
    axis = nd + signal.axis
    d = full_on(d, tuple(d.shape[:axis]) + (signal.m,) + tuple(d.shape[axis + 1:-1]), [axis])
    if is_runs(d):  # the window's union, by range unions (no positions x inputs bits)
        t = torch.arange(signal.m)
        window = Pattern(ranges=((t - length + 1).clamp(min=0).reshape(-1, 1),
                                 (t + 1).reshape(-1, 1)), keys=signal.m)
        return attend(window, d, axis)
    counts = d.to(torch.int32).cumsum(axis)
    shifted = torch.nn.functional.pad(counts.movedim(axis, -1), (length, 0))[..., :signal.m]
    window = counts - shifted.movedim(-1, axis)
    return window > 0


def _inverse(ctx, spectra, args, out):
    z, dims, size = args[0], list(args[1]), args[3]
    s = spectra.get(z)
    if s is None or len(dims) != 1 or _dim(dims[0], z.dim()) - z.dim() != s.axis:
        return
    if size != s.m or s.support > s.m or s.time is None:
        return  # a wrapped-around (circular) convolution, or a constant: keep the bound
    d = s.time
    if d.dim() - 1 < out.dim():
        d = d.reshape((1,) * (out.dim() - d.dim() + 1) + tuple(d.shape))
    if any(a not in (1, b) for a, b in zip(d.shape[:-1], out.shape, strict=True)):
        return
    ctx._set(out, compress(d))
