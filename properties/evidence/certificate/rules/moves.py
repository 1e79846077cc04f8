"""Element moves: the same op applied to the summary (its last axis rides along)."""

import torch

from ..deps import aligned, any_over, compress, expanded, full_on, move, nothing, union
from ..deps import cat as cat_deps
from ..deps import pad as pad_deps
from .base import _dim, _reshaped, _spread, aten, rule


@rule(
    aten.alias.default,
    aten.detach.default,
    aten.clone.default,
    aten._to_copy.default,
    aten.lift_fresh.default,
    aten.lift_fresh_copy.default,
    aten.contiguous.default,
    aten.positive.default,
    aten.native_dropout.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.squeeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.unsqueeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.view_copy.default,
    runs=True,
)
def same(ctx, args, kwargs, outs):
    """The elements, in row-major order, at each output's shape."""
    d = ctx.deps(args[0])
    return [aligned(d, o.dim()) if o.shape == args[0].shape else
            _reshaped(d, args[0].shape, o.shape) for o in outs]


@rule(aten.expand.default, aten.expand_copy.default, runs=True)
def expand(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    return [compress(expanded(aligned(d, outs[0].dim()), outs[0].shape))]


@rule(aten.permute.default, aten.permute_copy.default, runs=True)
def permute(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    return [None if d is None else d.permute(*[_dim(a, nd) for a in args[1]], nd)]


@rule(aten.transpose.int, aten.transpose_copy.int, runs=True)
def transpose(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    return [None if d is None else d.transpose(_dim(args[1], nd), _dim(args[2], nd))]


@rule(aten.t.default, runs=True)
def t(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    return [d if d is None or args[0].dim() < 2 else d.transpose(0, 1)]


@rule(aten.select.int, aten.select_copy.int, runs=True)
def select(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    axis = _dim(args[1], nd)
    return [d.select(axis, 0 if d.shape[axis] == 1 else args[2])]


@rule(aten.slice.Tensor, aten.slice_copy.Tensor, runs=True)
def slice_(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    nd = args[0].dim()
    axis = _dim(args[1] if len(args) > 1 else 0, nd)
    if d.shape[axis] == 1:
        return [d]
    start, end, step = (list(args[2:]) + [None, None, 1])[:3]
    return [move(d, lambda t: aten.slice.Tensor(t, axis, start, end, step or 1))]


@rule(aten.narrow.default, runs=True)
def narrow(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    axis = _dim(args[1], args[0].dim())
    return [d if d.shape[axis] == 1 else d.narrow(axis, args[2], args[3])]


@rule(
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.unsafe_split.Tensor,
    aten.split_with_sizes_copy.default,
    aten.chunk.default,
    runs=True,
)
def split(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    axis = _dim(args[2] if len(args) > 2 else kwargs.get("dim", 0), args[0].dim())
    if d.shape[axis] == 1:
        return [d] * len(outs)
    parts, start = [], 0
    for o in outs:
        parts.append(d.narrow(axis, start, o.shape[axis]))
        start += o.shape[axis]
    return parts


@rule(aten.unbind.int, runs=True)
def unbind(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    axis = _dim(args[1] if len(args) > 1 else 0, args[0].dim())
    return [d.select(axis, 0 if d.shape[axis] == 1 else i) for i in range(len(outs))]


@rule(aten.cat.default, runs=True)
def cat(ctx, args, kwargs, outs):
    tensors = [x for x in args[0] if x.numel() or x.dim() > 1]
    ds = [ctx.deps(x) for x in tensors]
    if all(d is None for d in ds):
        return [None]
    out = outs[0]
    nd = out.dim()
    axis = _dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), nd)
    present = [d for d in ds if d is not None]
    if len(present) == len(ds) and all(d is present[0] for d in ds) and ds[0].shape[axis] == 1:
        return [ds[0]]  # every part carries the same broadcast summary (rotate_half)
    # Axes other than ``axis`` stay broadcast where every part is broadcast.
    sizes = [1] * nd
    for a in range(nd):
        if a != axis and any(d is not None and d.shape[a] > 1 for d in ds):
            sizes[a] = out.shape[a]
    pieces = []
    for x, d in zip(tensors, ds, strict=True):
        shape = list(sizes)
        shape[axis] = x.shape[axis]
        if d is None:
            pieces.append(nothing(shape, present[0]))
        else:
            pieces.append(expanded(d, shape))
    return [compress(cat_deps(pieces, axis))]


@rule(aten.stack.default, runs=True)
def stack(ctx, args, kwargs, outs):
    axis = _dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), outs[0].dim())
    unsq = [x.unsqueeze(axis) for x in args[0]]
    for x, u in zip(args[0], unsq, strict=True):
        d = ctx.deps(x)
        ctx.assume(u, None if d is None else d.unsqueeze(axis))
    return cat(ctx, (unsq, axis), {}, outs)


@rule(aten.constant_pad_nd.default, runs=True)
def pad(ctx, args, kwargs, outs):
    """Padding values are constants; negative padding crops (the lecture's shifts)."""
    d = ctx.deps(args[0])
    spec = list(args[1])
    nd = args[0].dim()
    padded = [nd - 1 - i // 2 for i in range(len(spec))]
    d = full_on(d, args[0].shape, set(padded))
    return [compress(pad_deps(d, spec))]


@rule(aten.flip.default, runs=True)
def flip(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    axes = [a for a in (_dim(x, nd) for x in args[1]) if d.shape[a] > 1]
    return [d.flip(axes) if axes else d]


@rule(aten.roll.default, runs=True)
def roll(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    shifts, dims = list(args[1]), list(args[2]) if len(args) > 2 else []
    if not dims:
        full = expanded(d, args[0].shape).reshape(-1, d.shape[-1])
        rolled = move(full, lambda t: t.roll(shifts[0], 0))
        return [compress(rolled.reshape(*args[0].shape, d.shape[-1]))]
    dims = [_dim(x, nd) for x in dims]
    return [compress(move(full_on(d, args[0].shape, dims), lambda t: t.roll(shifts, dims)))]


@rule(aten.repeat.default, runs=True)
def repeat(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    reps = list(args[1])
    d = d.reshape((1,) * (len(reps) - args[0].dim()) + tuple(d.shape))
    reps = [1 if d.shape[i] == 1 else r for i, r in enumerate(reps)] + [1]
    return [move(d, lambda t: t.repeat(*reps))]


@rule(aten.unfold.default, runs=True)
def unfold(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    axis = _dim(args[1], args[0].dim())
    d = full_on(d, args[0].shape, [axis])
    return [compress(move(d, lambda t: t.unfold(axis, args[2], args[3]).movedim(-1, -2)))]


def _anywhere(ctx, source, index_deps, out):
    """An index computed from the input may pick any element of ``source`` for another input:
    every output element gets all of ``source``'s dependencies (and the index's)."""
    ctx.lost[ctx._where(f"{ctx.op_name} (input-dependent index)")] += 1
    return [union([_spread(ctx.deps(source), out)] + [_spread(d, out) for d in index_deps],
                  out.dim())]


@rule(aten.index.Tensor, runs=True)
def index(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    idx_deps = [ctx.deps(i) for i in args[1] if i is not None]
    if any(i is not None and i.dtype in (torch.bool, torch.uint8) and ctx.deps(i) is not None
           for i in args[1]):
        ctx.path_dependent = True  # the output's shape counts the mask's true entries
    if any(x is not None for x in idx_deps):  # the k-th element picked varies with the input
        one = _one_index(ctx, args, outs[0])
        return one if one is not None else _anywhere(ctx, args[0], idx_deps, outs[0])
    if d is not None:  # aten's own indexing of the summary (its None: the whole axis)
        indices = (list(args[1]) + [None] * (d.dim() - len(args[1])))[: args[0].dim()]
        d = compress(move(expanded(d, args[0].shape), lambda t: aten.index.Tensor(t, indices)))
    return [d]


def _one_index(ctx, args, out):
    """``x[..., idx, ...]`` with one integer index computed from the input (the others whole
    axes): an element depends on its index and on the line of ``x`` along that axis only."""
    x, indices = args[0], list(args[1])
    tensors = [a for a, i in enumerate(indices) if i is not None]
    if len(tensors) != 1 or indices[tensors[0]].dtype in (torch.bool, torch.uint8):
        return None
    axis, idx = tensors[0], indices[tensors[0]]
    ctx.lost[ctx._where(f"{ctx.op_name} (input-dependent index)")] += 1
    d, di = ctx.deps(x), ctx.deps(idx)
    n = di.shape[-1]
    # out: x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    picked = expanded(aligned(di, idx.dim()), idx.shape).reshape(
        (1,) * axis + tuple(idx.shape) + (1,) * (x.dim() - axis - 1) + (n,))
    if d is None:
        return [compress(picked)]
    line = any_over(d, [axis], keepdim=False)  # x.shape without axis (broadcast), N
    line = line.reshape(*line.shape[:axis], *([1] * idx.dim()), *line.shape[axis:])
    return [union([line, picked], out.dim())]


@rule(aten.embedding.default, runs=True)
def embedding(ctx, args, kwargs, outs):
    """A row of a constant table, chosen by a token: the token's dependencies, every feature."""
    weight, indices = args[0], args[1]
    d = ctx.deps(indices)
    d = None if d is None else d.unsqueeze(-2)
    return [union([d, _spread(ctx.deps(weight), outs[0])], outs[0].dim())]


@rule(aten.view_as_complex.default, runs=True)
def view_as_complex(ctx, args, kwargs, outs):
    """``(..., 2)`` reals as ``(...)`` complex numbers (RoPE in complex form): each number is
    its real and imaginary parts."""
    d = ctx.deps(args[0])
    axis = args[0].dim() - 1
    d = any_over(d, [axis], keepdim=False) if d.shape[axis] > 1 else d.squeeze(axis)
    return [aligned(d, outs[0].dim())]


@rule(aten.view_as_real.default, runs=True)
def view_as_real(ctx, args, kwargs, outs):
    """Complex numbers as ``(..., 2)`` reals: both parts of a number depend on it."""
    d = aligned(ctx.deps(args[0]), args[0].dim())
    return [d.unsqueeze(d.dim() - 1)]
