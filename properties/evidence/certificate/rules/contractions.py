"""Contractions: matrix products and convolutions, with the structural zeros of constants."""

import torch
import torch.nn.functional as F

from ..deps import (
    Pattern,
    aligned,
    any_over,
    as_float,
    attend,
    cat,
    compress,
    constant_zero,
    everything,
    full_on,
    is_runs,
    move,
    nothing,
    pad,
    restrict,
    union,
)
from .base import _reshaped, aten, fallback, rule, through_dense


def _live(x: torch.Tensor, ctx) -> torch.Tensor | None:
    """Elements that are not structural zeros (None: all of them)."""
    zero = constant_zero(x, ctx.deps(x))
    return None if zero is None else ~zero


def _reach(la, lb) -> torch.Tensor | None:
    """``(..., I, J)``: whether some ``k`` has both ``a[i, k]`` and ``b[k, j]`` live (None: every
    pair); without a matrix product when one side has no structural zero."""
    if la is None and lb is None:
        return None
    if la is None:
        return lb.any(-2, keepdim=True)
    if lb is None:
        return la.any(-1, keepdim=True)
    return (as_float(la) @ as_float(lb)) > 0


def contract(ctx, a: torch.Tensor, b: torch.Tensor, out_shape) -> torch.Tensor | None:
    """Summary of ``a @ b`` for ``a: (..., I, K)``, ``b: (..., K, J)`` (batch axes broadcast).

    ``out[i, j]`` depends on ``a[i, k]`` and ``b[k, j]`` for every ``k`` where neither is a
    structural zero. Broadcast summaries keep it at ``I x N`` (or ``I x J x N`` when needed);
    a summary that varies along ``k`` is united over the live ``k`` of each output (:func:`attend`:
    a boolean product in the dense form, unions over runs of ``k`` in the run form)."""
    nd = len(out_shape)
    if a.shape[-1] == 0:  # an empty sum: a constant zero
        return None
    da, db = ctx.deps(a), ctx.deps(b)
    # (a structural zero has no dependency of its own: ``la``/``lb`` only say which *other*
    # operand's elements it cuts off)
    la, lb = _live(a, ctx), _live(b, ctx)
    la = None if la is None else la.reshape((1,) * (nd - la.dim()) + tuple(la.shape))
    lb = None if lb is None else lb.reshape((1,) * (nd - lb.dim()) + tuple(lb.shape))
    parts = []
    if da is not None:
        da = aligned(da, nd)  # (..., I, K, N)
        if da.shape[-2] == 1:  # the same dependencies along k
            reach = _reach(la, lb)
            parts.append(da if reach is None else restrict(da, reach))
        elif lb is None:  # b has no structural zero: every k counts
            parts.append(any_over(da, [nd - 1]))
        else:  # out[i, j] gets a[i, k] for the live b[k, j]
            parts.append(attend(Pattern(lb.transpose(-1, -2).unsqueeze(-3)), da, nd - 1))
    if db is not None:
        db = aligned(db, nd)  # (..., K, J, N)
        if db.shape[-3] == 1:  # the same dependencies along k
            reach = _reach(la, lb)
            parts.append(db if reach is None else restrict(db, reach))
        elif la is None:  # a has no structural zero: every k counts
            parts.append(any_over(db, [nd - 2]))
        else:  # out[i, j] gets b[k, j] for the live a[i, k]
            parts.append(attend(Pattern(la), db, nd - 2))
    return compress(union(parts, nd))


@rule(aten.mm.default, aten.bmm.default, aten.matmul.default, aten.mv.default,
      aten.dot.default, runs=True)
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
      aten._addmm_activation.default, runs=True)
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


@rule(aten.convolution.default, aten._convolution.default, runs=True)
def convolution(ctx, args, kwargs, outs):
    """The convolution of the summary (inputs as a batch) with the weight's non-zero pattern:
    exact zeros of a masked weight are structural, so masked convolutions are proved. In the
    run form, the union of shifted slices per distinct pattern of output channels."""
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    dw = ctx.deps(weight)
    if dw is not None:  # a weight computed from the input (a hypernetwork): no structure
        return fallback(ctx, args, kwargs, outs)
    d = ctx.deps(x)
    if is_runs(d) and transposed:
        return through_dense(_dense_convolution, ctx, args, kwargs, outs)
    if is_runs(d):
        return _run_convolution(ctx, args, outs)
    return _dense_convolution(ctx, args, kwargs, outs)


def _bias(ctx, bias, out):
    db = ctx.deps(bias) if isinstance(bias, torch.Tensor) else None
    if db is not None:  # bias[c] is added to output channel c only
        db = db.reshape(1, db.shape[0], *([1] * (out.dim() - 2)), db.shape[-1])
    return db


def _run_convolution(ctx, args, outs):
    """Output channel ``o`` at position ``p`` reads, for each non-zero tap of its kernel, one
    input element: the union of strided slices of the (padded) summary. Output channels with
    the same taps share their union (every channel alike: one union, broadcast)."""
    x, weight, bias, stride, padding, dilation, _, _, groups = args[:9]
    out = outs[0]
    d = ctx.deps(x)
    if d is None:
        return [_bias(ctx, bias, out)]
    d = full_on(d, x.shape, list(range(2, x.dim())))
    support = weight != 0  # (C_out, C_in / groups, *k)
    c_out, per_group = support.shape[:2]
    if d.shape[1] == 1:  # every input channel alike: an output channel reads its taps
        taps = support.any(1, keepdim=True)  # (C_out, 1, *k)
        channel = torch.zeros(c_out, 1, dtype=torch.long)
    else:  # output channel o reads the input channels of its group
        taps = support
        first = (torch.arange(c_out) // (c_out // groups)) * per_group
        channel = first[:, None] + torch.arange(per_group)  # (C_out, C_in / groups)
    flat = taps.reshape(c_out, -1)
    patterns, which = flat.unique(dim=0, return_inverse=True)
    padded = pad(d, [p for p in reversed(list(padding)) for _ in (0, 1)])
    shape = [d.shape[0], 1, *out.shape[2:]]
    pieces = []
    for k, pattern in enumerate(patterns):
        o = int((which == k).nonzero()[0])  # an output channel with this pattern
        found = [_slice(padded, int(channel[o, index[0]]), index[1:], stride, dilation,
                        out.shape[2:])
                 for index in pattern.reshape(taps.shape[1:]).nonzero().tolist()]
        pieces.append(union(found, out.dim()) if found else nothing(shape, d))
    if len(pieces) == 1:
        y = pieces[0]
    else:
        y = cat([p.expand(*shape, p.shape[-1]) for p in pieces], 1)
        y = move(y, lambda t: t.index_select(1, which))
    return [union([compress(y), _bias(ctx, bias, out)], out.dim())]


def _slice(padded, channel, tap, stride, dilation, out_spatial):
    """The summary an output element reads at one tap of one input channel: a strided slice."""
    index = [slice(None), slice(channel, channel + 1)]
    for axis, k in enumerate(tap):
        start = k * dilation[axis]
        stop = start + (out_spatial[axis] - 1) * stride[axis] + 1
        index.append(slice(start, stop, stride[axis]))
    return move(padded, lambda t: t[tuple(index)])


def _dense_convolution(ctx, args, kwargs, outs):
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
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


@rule(aten._grouped_mm.default, runs=True)
def grouped_mm(ctx, args, kwargs, outs):
    """``_grouped_mm(x, W, offs)``, x ``(N, K)`` and W ``(G, K, M)``: row ``j`` is
    ``x[j] @ W[g(j)]``, its group read from the offsets: its own row, every weight, every offset
    (other layouts: everything). Rows past the last offset are left uninitialized by the kernel:
    unknown origin, unless the offsets are a constant that ends at ``N``."""
    x, weight = args[0], args[1]
    offs = args[2] if len(args) > 2 else kwargs.get("offs")
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    out = outs[0]
    others = [everything(ctx.deps(t)) for t in (weight, offs, bias) if isinstance(t, torch.Tensor)]
    d = ctx.deps(x)
    if x.dim() == 2 and weight.dim() == 3 and offs is not None and out.dim() == 2:
        rows = None if d is None else any_over(d, [1])
    else:
        rows = None if d is None else everything(d).reshape((1,) * out.dim() + (-1,))
    parts = [rows] + [None if r is None else r.reshape((1,) * out.dim() + (-1,)) for r in others]
    if offs is not None and (ctx.deps(offs) is not None or offs.numel() == 0 or
                             int(offs.reshape(-1)[-1]) != out.shape[-2]):
        label = f"rows of {ctx.op_name} past its last offset (uninitialized memory)"
        parts.append(ctx._row_on(out, ctx.unknown_row(label)))
    return [union(parts, out.dim())]
