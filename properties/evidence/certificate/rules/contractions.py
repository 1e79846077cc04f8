"""Contractions: matrix products and convolutions, with the structural zeros of constants."""

import torch
import torch.nn.functional as F

from ..deps import (
    aligned,
    any_over,
    as_float,
    compress,
    constant_zero,
    full_on,
    union,
)
from .base import _reshaped, aten, fallback, rule


def _masked(d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``d`` restricted to the elements ``keep`` marks (kept broadcast when all are kept)."""
    if bool(keep.all()):
        return d
    return d & keep.unsqueeze(-1)


def _live(x: torch.Tensor, ctx) -> torch.Tensor:
    """Elements that are not structural zeros, bool or 0/1 (a broadcast 1 when all are live):
    only multiplied, as floats."""
    zero = constant_zero(x, ctx.deps(x))
    if zero is None:
        return torch.ones((1,) * x.dim()).expand(x.shape)
    return ~zero


def contract(ctx, a: torch.Tensor, b: torch.Tensor, out_shape) -> torch.Tensor | None:
    """Summary of ``a @ b`` for ``a: (..., I, K)``, ``b: (..., K, J)`` (batch axes broadcast).

    ``out[i, j]`` depends on ``a[i, k]`` and ``b[k, j]`` for every ``k`` where neither is a
    structural zero. Broadcast summaries keep it at ``I x N`` (or ``I x J x N`` when needed)."""
    da, db = ctx.deps(a), ctx.deps(b)
    # (a structural zero has no dependency of its own: ``la``/``lb`` only say which *other*
    # operand's elements it cuts off)
    la, lb = _live(a, ctx), _live(b, ctx)
    nd = len(out_shape)
    parts = []
    if da is not None:
        da = aligned(da, a.dim())
        if da.shape[-2] == 1:  # the same dependencies along k
            reach = (as_float(la) @ as_float(lb)) > 0  # (..., I, J)
            parts.append(_masked(aligned(da, nd), reach))
        elif lb.stride() == (0,) * lb.dim():  # b has no structural zero
            parts.append(aligned(da.any(-2, keepdim=True), nd))
        else:  # (..., I, N, K) @ (..., K, J) -> (..., I, N, J)
            prod = as_float(da.transpose(-1, -2)) @ as_float(lb).unsqueeze(-3)
            parts.append(aligned((prod > 0).transpose(-1, -2), nd))
    if db is not None:
        db = aligned(db, b.dim())
        if db.shape[-3] == 1:  # the same dependencies along k
            reach = (as_float(la) @ as_float(lb)) > 0
            parts.append(_masked(aligned(db, nd), reach))
        else:
            j, n = db.shape[-2], db.shape[-1]
            flat = as_float(db).reshape(*db.shape[:-2], j * n)
            prod = (as_float(la) @ flat) > 0  # (..., I, J' * N)
            parts.append(aligned(prod.reshape(*prod.shape[:-1], j, n), nd))
    return compress(union(parts, nd))


@rule(aten.mm.default, aten.bmm.default, aten.matmul.default, aten.mv.default,
      aten.dot.default)
def mm(ctx, args, kwargs, outs):
    a, b = args[0], args[1]
    if b.dim() == 1 or a.dim() == 1:
        a2 = a.unsqueeze(0) if a.dim() == 1 else a
        b2 = b.unsqueeze(-1) if b.dim() == 1 else b
        for x, x2 in ((a, a2), (b, b2)):
            d = ctx.deps(x)
            ctx.assume(x2, None if d is None else _reshaped(d, x.shape, x2.shape))
        shape = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
        d = contract(ctx, a2, b2, shape)
        return [None if d is None else _reshaped(d, shape, outs[0].shape)]
    return [contract(ctx, a, b, outs[0].shape)]


@rule(aten.addmm.default, aten.baddbmm.default, aten.addbmm.default, aten.addmv.default,
      aten._addmm_activation.default)
def addmm(ctx, args, kwargs, outs):
    bias, a, b = args[0], args[1], args[2]
    beta = kwargs.get("beta", 1)
    if ctx.op_name.startswith("aten.addbmm"):  # a sum of batch products (not baddbmm)
        prod = any_over(mm(ctx, (a, b), {}, [torch.empty(a.shape[0], a.shape[1], b.shape[2])])[0],
                        [0], keepdim=False)
    else:
        prod = mm(ctx, (a, b), {}, outs)[0]
    db = ctx.deps(bias) if beta != 0 else None
    return [union([prod, db], outs[0].dim())]


@rule(aten.convolution.default, aten._convolution.default)
def convolution(ctx, args, kwargs, outs):
    """The convolution of the summary (inputs as a batch) with the weight's non-zero pattern:
    exact zeros of a masked weight are structural, so masked convolutions are proved."""
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    dw = ctx.deps(weight)
    if dw is not None:  # a weight computed from the input (a hypernetwork): no structure
        return fallback(ctx, args, kwargs, outs)
    d = ctx.deps(x)
    out = outs[0]
    db = ctx.deps(bias) if isinstance(bias, torch.Tensor) else None
    if db is not None:  # bias[c] is added to output channel c only
        db = db.reshape(1, db.shape[0], *([1] * (out.dim() - 2)), db.shape[-1])
    if d is None:
        return [db]
    n = d.shape[-1]
    spatial = list(range(2, x.dim()))
    d = full_on(d, x.shape, spatial)
    support = as_float(weight != 0)
    if d.shape[1] == 1 and groups == 1:
        support = support.amax(1, keepdim=True)
    elif d.shape[1] == 1:
        d = full_on(d, x.shape, [1])
    if groups == 1 and not transposed and bool((support == support[:1]).all()):
        support = support[:1]  # every output channel sees the same taps: stay broadcast
    elif groups == 1 and transposed and bool((support == support[:, :1]).all()):
        support = support[:, :1]
    if support.shape[0] == 1 and support.shape[1] == 1 and groups == 1 and not transposed:
        y = _shift_or(d, support[0, 0] > 0, stride, padding, dilation, out.shape[2:])
        return [union([compress(y), db], out.dim())]
    b0 = d.shape[0]
    flat = as_float(d.movedim(-1, 1).reshape(b0 * n, d.shape[1], *d.shape[2:-1]))
    results = []
    chunk = max(1, (1 << 26) // max(1, flat[0].numel() * max(support.shape[0], 1)))
    for start in range(0, flat.shape[0], chunk):
        piece = flat[start : start + chunk]
        if transposed:
            conv = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}[x.dim()]
            y = conv(piece, support, None, stride, padding, output_padding, groups, dilation)
        else:
            conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
            y = conv(piece, support, None, stride, padding, dilation, groups)
        results.append(y > 0.5)
    y = torch.cat(results)
    y = y.reshape(b0, n, *y.shape[1:]).movedim(1, -1)
    return [union([compress(y), db], out.dim())]


def _shift_or(d, taps, stride, padding, dilation, out_spatial):
    """A one-channel convolution of a summary, as the union of its shifted copies: one slice
    per non-zero tap (a float convolution of N summaries costs far more on a CPU)."""
    spec = []
    for p in reversed(list(padding)):
        spec += [p, p]
    padded = F.pad(d, [0, 0] + spec)  # with False
    out = torch.zeros(*d.shape[:2], *out_spatial, d.shape[-1], dtype=torch.bool)
    for tap in taps.nonzero().tolist():
        index = [slice(None), slice(None)]
        for axis, k in enumerate(tap):
            start = k * dilation[axis]
            stop = start + (out_spatial[axis] - 1) * stride[axis] + 1
            index.append(slice(start, stop, stride[axis]))
        out |= padded[tuple(index)]
    return out
