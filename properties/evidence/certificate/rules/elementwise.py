"""Pointwise ops, where, masks and writes: constants and structural zeros drop dependencies."""

import torch
from torch.utils._pytree import tree_flatten

from ..deps import aligned, compress, constant_zero, expanded, live, restrict, union
from .base import _dead_logits, _dim, _spread, aten, rule


def pointwise(ctx, args, kwargs, outs):
    """The union of the inputs' summaries (broadcast). A pointwise op's only keyword tensor is
    ``out=``, whose old values it overwrites: it is no input."""
    ds = [ctx.deps(x) for x in tree_flatten(args)[0]]
    d = union(ds, outs[0].dim())
    return [d] * len(outs)


pointwise.runs = True
# elementwise ops that ATen does not tag pointwise (``perm // k``: a router's token of each slot)
for _op in (aten.floor_divide.default, aten.floor_divide.Scalar, aten.floor_divide_.Tensor,
            aten.floor_divide_.Scalar):
    rule(_op, runs=True)(pointwise)


@rule(aten.mul.Tensor, aten.mul_.Tensor, runs=True)
def mul(ctx, args, kwargs, outs):
    """A constant zero factor makes the product a constant (assumes finite activations)."""
    a, b = args[0], args[1]
    if not isinstance(b, torch.Tensor) or not isinstance(a, torch.Tensor):
        return pointwise(ctx, args, kwargs, outs)
    da, db = ctx.deps(a), ctx.deps(b)
    nd = outs[0].dim()
    parts = []
    for d, other in ((da, b), (db, a)):
        if d is None:
            continue
        zero = constant_zero(other, ctx.deps(other))
        if zero is not None:
            d = restrict(aligned(d, nd), ~zero)
        parts.append(d)
    return [union(parts, nd)]


@rule(aten.add.Tensor, aten.add_.Tensor, runs=True)
def add(ctx, args, kwargs, outs):
    """Adding a constant -inf (or a value near the dtype's minimum, an additive attention mask)
    gives that constant whatever the other term: a masked logit, not a dependency (assumes
    input-dependent activations are finite and far from the dtype's range, |x| < 1e30)."""
    a, b = args[0], args[1]
    alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
    if not isinstance(b, torch.Tensor) or not isinstance(a, torch.Tensor) or alpha <= 0 \
            or not outs[0].is_floating_point():
        return pointwise(ctx, args, kwargs, outs)
    nd = outs[0].dim()
    result = outs[0].dtype  # the sum is taken in the result's dtype, not the constant's
    parts = []
    for x, other in ((a, b), (b, a)):
        d = ctx.deps(x)
        if d is None:
            continue
        if other is a and alpha > 1:  # a + alpha * x: x's term may be larger than assumed
            parts.append(d)
            continue
        value = (other * alpha if other is b else other).to(result)  # the term that is added
        dead = _dead_logits(value, ctx.deps(other))
        if dead is not None and torch.finfo(result).max < 1e30:
            # float16: finfo.min + x moves with x once |x| > 16 (its spacing there is 32),
            # so only -inf swallows every finite term
            dead = dead & (value == float("-inf"))
            dead = dead if bool(dead.any()) else None
        if dead is not None:
            d = restrict(aligned(d, nd), ~dead)
        parts.append(d)
    return [union(parts, nd)]


@rule(aten.where.self, runs=True)
def where(ctx, args, kwargs, outs):
    """A constant condition picks one branch per element; an input-derived one unites all."""
    cond, a, b = args
    nd = outs[0].dim()
    dc = ctx.deps(cond)
    da = ctx.deps(a) if isinstance(a, torch.Tensor) else None
    db = ctx.deps(b) if isinstance(b, torch.Tensor) else None
    c = cond.bool()
    picked = []
    if da is not None:
        picked.append(restrict(aligned(da, nd), c))
    if db is not None:
        picked.append(restrict(aligned(db, nd), ~c))
    if dc is not None:  # where the condition depends on the input, both branches may be taken
        moved = live(aligned(dc, nd))
        picked.append(aligned(dc, nd))
        picked.extend(restrict(aligned(x, nd), moved) for x in (da, db) if x is not None)
    return [compress(union(picked, nd))]


@rule(aten.masked_fill.Scalar, aten.masked_fill.Tensor, aten.masked_fill_.Scalar,
      aten.masked_fill_.Tensor, runs=True)
def masked_fill(ctx, args, kwargs, outs):
    x, mask, value = args[0], args[1], args[2]
    return where(ctx, (mask, value, x), {}, outs)


@rule(aten.tril.default, aten.triu.default, aten.tril_.default, aten.triu_.default, runs=True)
def triangle(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    rows, cols = args[0].shape[-2:]
    diagonal = args[1] if len(args) > 1 else 0
    ones = torch.ones(rows, cols, dtype=torch.bool)
    name = ctx.op_name
    keep = ones.tril(diagonal) if "tril" in name else ones.triu(diagonal)
    return [compress(restrict(aligned(d, args[0].dim()), keep))]


@rule(aten.copy_.default, aten.copy.default, runs=True)
def copy(ctx, args, kwargs, outs):
    """The destination's old values are overwritten: only the source's dependencies remain."""
    d = ctx.deps(args[1])
    return [None if d is None else compress(expanded(aligned(d, args[0].dim()), args[0].shape))]


@rule(aten.fill_.Scalar, aten.zero_.default, aten.zeros_like.default, aten.ones_like.default,
      aten.empty_like.default, aten.full_like.default, aten.rand_like.default,
      aten.randn_like.default, aten.new_zeros.default, aten.new_ones.default,
      aten.new_empty.default, aten.new_full.default, aten.new_empty_strided.default,
      aten.bernoulli_.float, aten.uniform_.default, aten.normal_.default,
      aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int, runs=True)
def constant(ctx, args, kwargs, outs):
    """Values that depend only on shapes (or the RNG), never on the input's values."""
    return [None] * len(outs)


@rule(aten.fill_.Tensor, runs=True)
def fill_tensor(ctx, args, kwargs, outs):
    return [_spread(ctx.deps(args[1]), outs[0])]


@rule(aten.index_put.default, aten.index_put_.default)
def index_put(ctx, args, kwargs, outs):
    """Written elements get the values' dependencies (and the indices'), the rest keep theirs."""
    x, indices, values = args[0], args[1], args[2]
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    d, dv = ctx.deps(x), ctx.deps(values)
    n = ctx.n
    idx_deps = [ctx.deps(i) for i in indices if i is not None]
    if any(i is not None for i in idx_deps):
        # indices from the input may write any element, with any value, at another input:
        # every element keeps its own dependencies and gets the values' and the indices'
        ctx.lost[ctx._where(f"{ctx.op_name} (input-dependent index)")] += 1
        return [union([d] + [_spread(p, outs[0]) for p in [dv] + idx_deps], outs[0].dim())]
    full = torch.zeros(*x.shape, n, dtype=torch.bool) if d is None else expanded(d, x.shape).clone()
    new = torch.zeros(1, dtype=torch.bool).expand(*values.shape, n) if dv is None else \
        expanded(aligned(dv, values.dim()), values.shape)
    # aten's own index_put on the summary: its None is a whole axis (Python's would be a new
    # axis), and its broadcasting of the values is the op's
    if accumulate:
        # counts in int32: uint8 ones wrapped to 0 at 256 values put on one element
        full = aten.index_put.default(full.to(torch.int32), list(indices), new.to(torch.int32),
                                      True) > 0
    else:
        aten.index_put_.default(full, list(indices), new, False)
    return [compress(full)]


@rule(aten.index_add.default, aten.index_add_.default)
def index_add(ctx, args, kwargs, outs):
    """``x.index_add(dim, index, source)``: ``index_put`` with accumulation at ``[:, ..., index]``
    (the same elements, the same sums; a constant index adds exactly there)."""
    x, dim, index, source = args[0], args[1], args[2], args[3]
    indices = [None] * _dim(dim, max(x.dim(), 1)) + [index]
    return index_put(ctx, (x, indices, source, True), {}, outs)
