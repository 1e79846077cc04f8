"""Selections along one axis: sorts, top-k, running extremes, gated halves, scatters, and gathers
by indices computed from the input.

Along the axis they work on, every output element may depend on every element of its *line*
(the elements that share its other coordinates): a sorted row, the top-k of a row, a scatter's
target picked by the index of the same line. Across lines nothing mixes, so a router's top-k
over the experts of one token, or ``F.one_hot`` of one token's index, depends on that token only.
"""

import torch

from ..deps import aligned, any_over, compress, expanded, full_on, move, union
from .base import _dim, aten, rule


@rule(aten.topk.default, aten.sort.default, aten.sort.stable, aten.argsort.default,
      aten.argsort.stable, aten.kthvalue.default, aten.median.dim, aten.nanmedian.dim,
      aten.mode.default, aten.msort.default, runs=True)
def along_axis(ctx, args, kwargs, outs):
    """Values and indices of a sort or a selection along ``dim``: each depends on its whole
    line (which element lands where depends on all of them)."""
    x = args[0]
    nd = x.dim()
    name = ctx.op_name
    if name.startswith("aten.topk"):
        axis = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    elif name.startswith("aten.msort"):
        axis = 0
    elif ".stable" in name:
        axis = kwargs.get("dim", -1)
    else:
        axis = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("dim", -1)
    line = any_over(ctx.deps(x), [_dim(axis, max(nd, 1))]) if nd else ctx.deps(x)
    return [None if line is None else compress(aligned(line, o.dim()))
            if o.dim() == nd else _collapsed(line, o) for o in outs]


def _collapsed(line, out):
    """A selection that dropped its axis (``kthvalue`` without keepdim): squeeze it out."""
    for a in range(line.dim() - 1):
        if line.dim() - 1 == out.dim():
            break
        if line.shape[a] == 1:
            line = line.squeeze(a)
    return compress(aligned(line, out.dim()))


@rule(aten.aminmax.default, runs=True)
def aminmax(ctx, args, kwargs, outs):
    """The minimum and the maximum along ``dim`` (or of everything)."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    d = ctx.deps(x)
    if dim is None:
        row = any_over(d, list(range(x.dim()))) if x.dim() else d
        return [None if row is None else row.reshape((1,) * o.dim() + (-1,)) for o in outs]
    r = any_over(d, [_dim(dim, x.dim())], keepdim=bool(keep))
    return [r, r]


@rule(aten.glu.default, runs=True)
def glu(ctx, args, kwargs, outs):
    """``a * sigmoid(b)`` of the two halves along ``dim``: element i of each half."""
    x = args[0]
    axis = _dim(args[1] if len(args) > 1 else kwargs.get("dim", -1), x.dim())
    d = ctx.deps(x)
    if d.shape[axis] == 1:
        return [d]
    half = x.shape[axis] // 2
    return [union([d.narrow(axis, 0, half), d.narrow(axis, half, half)], x.dim())]


@rule(aten.scatter.src, aten.scatter.value, aten.scatter_.src, aten.scatter_.value,
      aten.scatter_add.default, aten.scatter_add_.default, aten.scatter.reduce,
      aten.scatter.value_reduce, aten.scatter_reduce.two, aten.scatter_reduce_.two)
def scatter(ctx, args, kwargs, outs):
    """``out[index[i][j]][j] = src[i][j]`` (along ``dim``). A constant index writes exactly
    those elements; one computed from the input may write any element of the line, with any
    value of the line's sources (and the index's dependencies)."""
    x, index = args[0], args[2]
    axis = _dim(args[1], x.dim())
    src = args[3] if len(args) > 3 else kwargs.get("src", kwargs.get("value"))
    name = ctx.op_name
    accumulate = "add" in name or "reduce" in name
    d, di = ctx.deps(x), ctx.deps(index)
    ds = ctx.deps(src) if isinstance(src, torch.Tensor) else None
    n = ctx.n
    if index.numel() == 0:
        return [d]
    box = [slice(0, s) for s in index.shape]  # scatter walks the index's extent
    if ds is not None:
        ds = expanded(aligned(ds, src.dim()), src.shape)[tuple(box)]
    if di is None:  # which element each source lands on is fixed: follow it
        full = torch.zeros(*x.shape, n, dtype=torch.bool) if d is None else \
            expanded(d, x.shape).clone()
        new = torch.zeros(*index.shape, n, dtype=torch.bool) if ds is None else ds.clone()
        idx = index.unsqueeze(-1).expand(*index.shape, n)
        if accumulate:
            # counts in int32: uint8 ones wrapped to 0 at 256 sources on one target
            full = full.to(torch.int32).scatter_add_(axis, idx, new.to(torch.int32)) > 0
        else:
            full.scatter_(axis, idx, new)
        return [compress(full)]
    # an index from the input: any element of the line may be written, by any of its sources
    written = union([expanded(di, index.shape), ds], index.dim())
    written = any_over(written, [axis])  # (..., 1 at axis, ..., N)
    pad = [s - b for s, b in zip(x.shape, index.shape, strict=True)]
    if any(p < 0 for p in pad):
        raise ValueError("an index larger than its target")
    if any(pad[a] for a in range(x.dim()) if a != axis):
        spec = []
        for a in reversed(range(x.dim())):
            spec += [0, 0 if a == axis else pad[a]]
        written = torch.nn.functional.pad(full_on(written, index.shape,
                                                  [a for a in range(x.dim()) if a != axis]),
                                          [0, 0] + spec)
    ctx.lost[ctx._where(f"{name} (input-dependent index)")] += 1
    return [union([d, written], x.dim())]


@rule(aten.gather.default, runs=True)
def gather(ctx, args, kwargs, outs):
    """``out[i][j] = x[index[i][j]][j]``: a constant index picks exactly; one computed from the
    input picks any element of the line along ``dim``."""
    x, index = args[0], args[2]
    axis = _dim(args[1], x.dim())
    d, di = ctx.deps(x), ctx.deps(index)
    if di is None:
        if d is None:
            return [None]
        full = expanded(d, x.shape)  # (either form: the bits, or both bounds of the runs)
        return [compress(move(full, lambda t: t.gather(
            axis, index.unsqueeze(-1).expand(*index.shape, t.shape[-1]))))]
    ctx.lost[ctx._where(f"{ctx.op_name} (input-dependent index)")] += 1
    if d is None:
        return [compress(aligned(di, index.dim()))]
    line = any_over(d, [axis])  # (..., 1 at axis, ...)
    box = tuple(slice(0, 1) if a == axis or line.shape[a] == 1 else slice(0, s)
                for a, s in enumerate(index.shape))
    return [union([line[box], di], index.dim())]


@rule(aten.index_select.default, runs=True)
def index_select(ctx, args, kwargs, outs):
    """Rows at ``index`` along ``dim``; an index computed from the input: any row."""
    x, index = args[0], args[2]
    axis = _dim(args[1], x.dim())
    d, di = ctx.deps(x), ctx.deps(index)
    if di is None:
        if d is not None and d.shape[axis] > 1:
            d = d.index_select(axis, index)
        return [d]
    ctx.lost[ctx._where(f"{ctx.op_name} (input-dependent index)")] += 1
    shape = [1] * (outs[0].dim() + 1)
    shape[axis] = index.numel()
    shape[-1] = di.shape[-1]
    picked = expanded(aligned(di, 1), index.shape).reshape(shape)
    return [union([any_over(d, [axis]) if d is not None else None, picked], outs[0].dim())]
