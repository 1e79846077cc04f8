"""Rules: the summary of an ATen op's outputs from the summaries (and values) of its inputs.

Every rule is an upper bound: an output element gets at least every input position that can
change it for some input values, along the control-flow path taken. Values are read only from
constants (no dependency at all): a weight that is exactly zero, a mask filled with -inf, a
condition that does not depend on the input. A value computed from the input is never used to
drop a dependency (zero at this run is not zero at every run).

Each rule takes ``(ctx, args, kwargs, outs)`` (``outs``: the op's tensor outputs, whose values a
rule must not read: in-place ops are ruled before they run) and returns one summary per output.
Ops without a rule get :func:`fallback` (every output element may depend on everything any
input depends on), and the tracer names them in the certificate's ``lost_precision``.
"""

import torch
import torch.nn.functional as F

from .deps import (
    aligned,
    all_live,
    any_over,
    as_float,
    compress,
    constant_zero,
    everything,
    expanded,
    full_on,
    union,
)

aten = torch.ops.aten
RULES: dict = {}
# A softmax weight whose logit is a constant at or below this fraction of the dtype's most
# negative value is exactly zero for every finite input-dependent logit of the row (exp
# underflows): the masks of GPT-2 and friends fill with finfo.min, others with -inf.
DEAD_FRACTION = 0.5


def rule(*ops):
    def register(fn):
        for op in ops:
            RULES[op] = fn
        return fn

    return register


def _dim(d: int, ndim: int) -> int:
    return d % max(ndim, 1)


def fallback(ctx, args, kwargs, outs):
    """Sound for any op: each output element may depend on everything any input depends on."""
    rows = [everything(ctx.deps(t)) for t in ctx.tensors_in(args, kwargs)]
    rows = [r for r in rows if r is not None]
    if not rows:
        return [None] * len(outs)
    row = torch.stack(rows).any(0)
    return [row.reshape((1,) * o.dim() + (-1,)) for o in outs]


# ---------------------------------------------------------------------------------------------
# Element moves: the same op applied to the summary (its last axis rides along)


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
)
def same(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    return [aligned(d, o.dim()) if d is not None and o.shape == args[0].shape else
            (None if d is None else _reshaped(d, args[0].shape, o.shape)) for o in outs]


def _reshaped(d, shape, new_shape):
    full = expanded(d, shape)
    try:
        out = full.view(*new_shape, d.shape[-1])
    except RuntimeError:
        out = full.reshape(*new_shape, d.shape[-1])
    return compress(out)


@rule(
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
    aten._reshape_alias.default,
)
def reshape(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    return [None if d is None else _reshaped(d, args[0].shape, outs[0].shape)]


@rule(aten.expand.default, aten.expand_copy.default)
def expand(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    return [compress(expanded(aligned(d, outs[0].dim()), outs[0].shape))]


@rule(aten.permute.default, aten.permute_copy.default)
def permute(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    return [None if d is None else d.permute(*[_dim(a, nd) for a in args[1]], nd)]


@rule(aten.transpose.int, aten.transpose_copy.int)
def transpose(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    return [None if d is None else d.transpose(_dim(args[1], nd), _dim(args[2], nd))]


@rule(aten.t.default)
def t(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    return [d if d is None or args[0].dim() < 2 else d.transpose(0, 1)]


@rule(aten.select.int, aten.select_copy.int)
def select(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    if d is None:
        return [None]
    axis = _dim(args[1], nd)
    return [d.select(axis, 0 if d.shape[axis] == 1 else args[2])]


@rule(aten.slice.Tensor, aten.slice_copy.Tensor)
def slice_(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    nd = args[0].dim()
    axis = _dim(args[1] if len(args) > 1 else 0, nd)
    if d.shape[axis] == 1:
        return [d]
    start, end, step = (list(args[2:]) + [None, None, 1])[:3]
    return [aten.slice.Tensor(d, axis, start, end, step or 1)]


@rule(aten.narrow.default)
def narrow(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    axis = _dim(args[1], args[0].dim())
    return [d if d.shape[axis] == 1 else d.narrow(axis, args[2], args[3])]


@rule(
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.unsafe_split.Tensor,
    aten.split_with_sizes_copy.default,
    aten.chunk.default,
)
def split(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None] * len(outs)
    axis = _dim(args[2] if len(args) > 2 else kwargs.get("dim", 0), args[0].dim())
    if d.shape[axis] == 1:
        return [d] * len(outs)
    parts, start = [], 0
    for o in outs:
        parts.append(d.narrow(axis, start, o.shape[axis]))
        start += o.shape[axis]
    return parts


@rule(aten.unbind.int)
def unbind(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None] * len(outs)
    axis = _dim(args[1] if len(args) > 1 else 0, args[0].dim())
    return [d.select(axis, 0 if d.shape[axis] == 1 else i) for i in range(len(outs))]


@rule(aten.cat.default)
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
    n = present[0].shape[-1]
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
            pieces.append(torch.zeros(1, dtype=torch.bool).expand(*shape, n))
        else:
            pieces.append(d.expand(*shape, n))
    return [compress(torch.cat(pieces, axis))]


@rule(aten.stack.default)
def stack(ctx, args, kwargs, outs):
    axis = _dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), outs[0].dim())
    unsq = [x.unsqueeze(axis) for x in args[0]]
    for x, u in zip(args[0], unsq, strict=True):
        d = ctx.deps(x)
        ctx.assume(u, None if d is None else d.unsqueeze(axis))
    return cat(ctx, (unsq, axis), {}, outs)


@rule(aten.constant_pad_nd.default)
def pad(ctx, args, kwargs, outs):
    """Padding values are constants; negative padding crops (the lecture's shifts)."""
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    spec = list(args[1])
    nd = args[0].dim()
    padded = [nd - 1 - i // 2 for i in range(len(spec))]
    d = full_on(d, args[0].shape, set(padded))
    return [compress(F.pad(d, [0, 0] + spec, value=False))]


@rule(aten.flip.default)
def flip(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    if d is None:
        return [None]
    axes = [a for a in (_dim(x, nd) for x in args[1]) if d.shape[a] > 1]
    return [d.flip(axes) if axes else d]


@rule(aten.roll.default)
def roll(ctx, args, kwargs, outs):
    d, nd = ctx.deps(args[0]), args[0].dim()
    if d is None:
        return [None]
    shifts, dims = list(args[1]), list(args[2]) if len(args) > 2 else []
    if not dims:
        full = expanded(d, args[0].shape).reshape(-1, d.shape[-1])
        return [compress(full.roll(shifts[0], 0).reshape(*args[0].shape, d.shape[-1]))]
    dims = [_dim(x, nd) for x in dims]
    return [compress(full_on(d, args[0].shape, dims).roll(shifts, dims))]


@rule(aten.repeat.default)
def repeat(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    reps = list(args[1])
    d = d.reshape((1,) * (len(reps) - args[0].dim()) + tuple(d.shape))
    reps = [1 if d.shape[i] == 1 else r for i, r in enumerate(reps)] + [1]
    return [d.repeat(*reps)]


@rule(aten.unfold.default)
def unfold(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    axis = _dim(args[1], args[0].dim())
    d = full_on(d, args[0].shape, [axis])
    return [compress(d.unfold(axis, args[2], args[3]).movedim(-1, -2))]


@rule(aten.index_select.default)
def index_select(ctx, args, kwargs, outs):
    d, idx = ctx.deps(args[0]), ctx.deps(args[2])
    axis = _dim(args[1], args[0].dim())
    if d is not None:
        d = d if d.shape[axis] == 1 else d.index_select(axis, args[2])
    return [union([d, _spread(idx, outs[0])], outs[0].dim())]


def _spread(d, out):
    """An index's dependencies, given to every element it selects (conservative)."""
    row = everything(d)
    return None if row is None else row.reshape((1,) * out.dim() + (-1,))


@rule(aten.index.Tensor)
def index(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    idx_deps = [_spread(ctx.deps(i), outs[0]) for i in args[1] if i is not None]
    indices = []
    for i in args[1]:
        if i is not None and i.dtype in (torch.bool, torch.uint8):
            if ctx.deps(i) is not None:
                ctx.path_dependent = True  # the output's shape counts the mask's true entries
            indices.extend(i.bool().nonzero(as_tuple=True))
        else:
            indices.append(slice(None) if i is None else i)  # aten's None: the whole axis
    if d is not None:
        d = compress(expanded(d, args[0].shape)[tuple(indices)])
    return [union([d] + idx_deps, outs[0].dim())]


@rule(aten.gather.default)
def gather(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    axis = _dim(args[1], args[0].dim())
    index_ = args[2]
    if d is not None:
        full = expanded(d, args[0].shape)
        d = compress(full.gather(axis, index_.unsqueeze(-1).expand(*index_.shape, d.shape[-1])))
    return [union([d, _spread(ctx.deps(index_), outs[0])], outs[0].dim())]


@rule(aten.embedding.default)
def embedding(ctx, args, kwargs, outs):
    """A row of a constant table, chosen by a token: the token's dependencies, every feature."""
    weight, indices = args[0], args[1]
    d = ctx.deps(indices)
    d = None if d is None else d.unsqueeze(-2)
    return [union([d, _spread(ctx.deps(weight), outs[0])], outs[0].dim())]


# ---------------------------------------------------------------------------------------------
# Pointwise


def pointwise(ctx, args, kwargs, outs):
    ds = [ctx.deps(x) for x in ctx.tensors_in(args, kwargs)]
    d = union(ds, outs[0].dim())
    return [d] * len(outs)


@rule(aten.mul.Tensor, aten.mul_.Tensor)
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
            d = aligned(d, nd) & ~aligned(zero.unsqueeze(-1), nd)
        parts.append(d)
    return [union(parts, nd)]


@rule(aten.add.Tensor, aten.add_.Tensor)
def add(ctx, args, kwargs, outs):
    """Adding a constant -inf (or a value near the dtype's minimum, an additive attention mask)
    gives that constant whatever the other term: a masked logit, not a dependency (assumes
    input-dependent activations are finite and far from the dtype's range, |x| < 1e30)."""
    a, b = args[0], args[1]
    alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
    if not isinstance(b, torch.Tensor) or not isinstance(a, torch.Tensor) or alpha <= 0:
        return pointwise(ctx, args, kwargs, outs)
    nd = outs[0].dim()
    parts = []
    for x, other in ((a, b), (b, a)):
        d = ctx.deps(x)
        if d is None:
            continue
        dead = _dead_logits(other, ctx.deps(other))
        if dead is not None:
            d = aligned(d, nd) & ~aligned(dead.unsqueeze(-1), nd)
        parts.append(d)
    return [union(parts, nd)]


@rule(aten.where.self)
def where(ctx, args, kwargs, outs):
    """A constant condition picks one branch per element; an input-derived one unites all."""
    cond, a, b = args
    nd = outs[0].dim()
    dc = ctx.deps(cond)
    da = ctx.deps(a) if isinstance(a, torch.Tensor) else None
    db = ctx.deps(b) if isinstance(b, torch.Tensor) else None
    c = aligned(cond.unsqueeze(-1), nd)
    picked = []
    if da is not None:
        picked.append(aligned(da, nd) & c)
    if db is not None:
        picked.append(aligned(db, nd) & ~c)
    if dc is not None:  # where the condition depends on the input, both branches may be taken
        live = aligned(dc.any(-1, keepdim=True), nd)
        picked.append(aligned(dc, nd))
        picked.extend(aligned(x, nd) & live for x in (da, db) if x is not None)
    return [compress(union(picked, nd))]


@rule(aten.masked_fill.Scalar, aten.masked_fill.Tensor, aten.masked_fill_.Scalar,
      aten.masked_fill_.Tensor)
def masked_fill(ctx, args, kwargs, outs):
    x, mask, value = args[0], args[1], args[2]
    return where(ctx, (mask, value, x), {}, outs)


@rule(aten.tril.default, aten.triu.default, aten.tril_.default, aten.triu_.default)
def triangle(ctx, args, kwargs, outs):
    d = ctx.deps(args[0])
    if d is None:
        return [None]
    rows, cols = args[0].shape[-2:]
    diagonal = args[1] if len(args) > 1 else 0
    ones = torch.ones(rows, cols, dtype=torch.bool)
    name = ctx.op_name
    keep = ones.tril(diagonal) if "tril" in name else ones.triu(diagonal)
    return [compress(aligned(d, args[0].dim()) & keep[..., None])]


@rule(aten.copy_.default, aten.copy.default)
def copy(ctx, args, kwargs, outs):
    """The destination's old values are overwritten: only the source's dependencies remain."""
    d = ctx.deps(args[1])
    return [None if d is None else compress(expanded(aligned(d, args[0].dim()), args[0].shape))]


@rule(aten.fill_.Scalar, aten.zero_.default, aten.zeros_like.default, aten.ones_like.default,
      aten.empty_like.default, aten.full_like.default, aten.rand_like.default,
      aten.randn_like.default, aten.new_zeros.default, aten.new_ones.default,
      aten.new_empty.default, aten.new_full.default, aten.new_empty_strided.default,
      aten.bernoulli_.float, aten.uniform_.default, aten.normal_.default,
      aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int)
def constant(ctx, args, kwargs, outs):
    """Values that depend only on shapes (or the RNG), never on the input's values."""
    return [None] * len(outs)


@rule(aten.fill_.Tensor)
def fill_tensor(ctx, args, kwargs, outs):
    return [_spread(ctx.deps(args[1]), outs[0])]


@rule(aten.index_put.default, aten.index_put_.default)
def index_put(ctx, args, kwargs, outs):
    """Written elements get the values' dependencies (and the indices'), the rest keep theirs."""
    x, indices, values = args[0], args[1], args[2]
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    d, dv = ctx.deps(x), ctx.deps(values)
    n = ctx.n
    full = torch.zeros(*x.shape, n, dtype=torch.bool) if d is None else expanded(d, x.shape).clone()
    new = torch.zeros(1, dtype=torch.bool).expand(*values.shape, n) if dv is None else \
        expanded(aligned(dv, values.dim()), values.shape)
    if accumulate:
        full.index_put_(tuple(indices), new, accumulate=True)
    else:
        full[tuple(indices)] = new
    idx = [_spread(ctx.deps(i), outs[0]) for i in indices if i is not None]
    return [union([compress(full)] + idx, outs[0].dim())]


# ---------------------------------------------------------------------------------------------
# Reductions and normalisations


def _reduced_axes(args, kwargs, nd):
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(nd))
    if isinstance(dims, int):
        dims = [dims]
    return [_dim(a, nd) for a in dims]


def _keepdim(args, kwargs, position=2):
    if len(args) > position and isinstance(args[position], bool):
        return args[position]
    return bool(kwargs.get("keepdim", False))


@rule(aten.sum.dim_IntList, aten.mean.dim, aten.amax.default, aten.amin.default,
      aten.any.dim, aten.all.dim, aten.any.dims, aten.prod.dim_int, aten.logsumexp.default,
      aten.max.dim, aten.min.dim, aten.argmax.default, aten.argmin.default,
      aten.linalg_vector_norm.default, aten.nansum.default, aten.std.correction,
      aten.var.correction, aten.var_mean.correction, aten.std_mean.correction,
      aten.sum.default, aten.mean.default, aten.max.default, aten.min.default,
      aten.any.default, aten.all.default, aten.count_nonzero.dim_IntList)
def reduction(ctx, args, kwargs, outs):
    x = args[0]
    d = ctx.deps(x)
    if d is None:
        return [None] * len(outs)
    nd = x.dim()
    if ctx.op_name.endswith(".default") and ctx.op_name.split(".")[1] in (
        "sum", "mean", "max", "min", "any", "all"
    ):
        axes, keep = list(range(nd)), False
    elif "linalg_vector_norm" in ctx.op_name:
        axes = _reduced_axes((x, args[2] if len(args) > 2 else kwargs.get("dim")), {}, nd)
        keep = args[3] if len(args) > 3 else kwargs.get("keepdim", False)
    elif ctx.op_name.startswith("aten.var") or ctx.op_name.startswith("aten.std"):
        axes = _reduced_axes(args, kwargs, nd)
        keep = bool(kwargs.get("keepdim", False))
    else:
        axes, keep = _reduced_axes(args, kwargs, nd), _keepdim(args, kwargs)
    r = any_over(d, axes, keepdim=True)
    results = []
    for o in outs:
        results.append(_reshaped(r, [1 if a in axes else s for a, s in enumerate(x.shape)],
                                 o.shape) if not keep or o.dim() != nd else r)
    return results


@rule(aten.cumsum.default, aten.cumprod.default, aten.cummax.default, aten.cummin.default,
      aten.logcumsumexp.default)
def cumulative(ctx, args, kwargs, outs):
    """Element i of a running sum depends on elements 0..i along the axis."""
    d = ctx.deps(args[0])
    if d is None:
        return [None] * len(outs)
    axis = _dim(args[1], args[0].dim())
    if d.shape[axis] == 1:
        return [d] * len(outs)
    return [d.to(torch.uint8).cummax(axis).values.bool()] * len(outs)


@rule(aten.native_layer_norm.default)
def layer_norm(ctx, args, kwargs, outs):
    x, shape = args[0], args[1]
    nd = x.dim()
    axes = list(range(nd - len(shape), nd))
    d = union([any_over(ctx.deps(x), axes)] + [_spread(ctx.deps(w), x) for w in args[2:4]
                                                if isinstance(w, torch.Tensor)], nd)
    results = [d]
    for o in outs[1:]:  # mean, rstd: (..., 1, 1)
        results.append(d if d is None or o.dim() == nd else _reshaped(d, d.shape[:-1], o.shape))
    return results


@rule(aten._fused_rms_norm.default)
def rms_norm(ctx, args, kwargs, outs):
    x = args[0]
    nd = x.dim()
    k = args[1] if isinstance(args[1], int) else len(args[1])
    d = any_over(ctx.deps(x), list(range(nd - k, nd)))
    return [d] + [d if d is None or o.dim() == nd else None for o in outs[1:]]


@rule(aten._native_batch_norm_legit_no_training.default)
def batch_norm_eval(ctx, args, kwargs, outs):
    """Running statistics are constants: per element, like a pointwise op."""
    d = ctx.deps(args[0])
    return [d] + [None] * (len(outs) - 1)


@rule(aten._native_batch_norm_legit.default, aten.native_batch_norm.default,
      aten._native_batch_norm_legit_functional.default)
def batch_norm_train(ctx, args, kwargs, outs):
    """Batch statistics mix every sample and position of a channel (training mode)."""
    x = args[0]
    training = args[5] if ctx.op_name.startswith("aten._native_batch_norm_legit.") or \
        ctx.op_name.startswith("aten.native_batch_norm") else True
    if len(args) > 5 and isinstance(args[5], bool):
        training = args[5]
    d = ctx.deps(x)
    if d is None:
        return [None] * len(outs)
    if training:
        d = any_over(d, [a for a in range(x.dim()) if a != 1])
    return [d] + [None if o.dim() != x.dim() else d for o in outs[1:]]


@rule(aten.native_group_norm.default)
def group_norm(ctx, args, kwargs, outs):
    x = args[0]
    d = any_over(ctx.deps(x), list(range(1, x.dim())))
    return [d] + [None] * (len(outs) - 1)


@rule(aten._softmax.default, aten._log_softmax.default, aten.softmax.int,
      aten.log_softmax.int, aten._safe_softmax.default)
def softmax(ctx, args, kwargs, outs):
    """A weight whose logit is a constant -inf (or near the dtype's minimum) is exactly zero
    and constant; every other weight of the row depends on the row's live logits."""
    x = args[0]
    d = ctx.deps(x)
    if d is None:
        return [None]
    nd = x.dim()
    axis = _dim(args[1], nd)
    dead = _dead_logits(x, d)
    live = aligned(d, nd) & ~dead.unsqueeze(-1) if dead is not None else aligned(d, nd)
    row = any_over(live, [axis])
    if dead is None:
        return [row]
    return [compress(row & ~dead.unsqueeze(-1))]


def _dead_logits(x: torch.Tensor, d) -> torch.Tensor | None:
    """Constant logits at or below ``DEAD_FRACTION * finfo.min`` (or -inf)."""
    if not x.is_floating_point():
        return None
    threshold = DEAD_FRACTION * torch.finfo(x.dtype).min
    if d is not None and all_live(d):
        return None  # no constant element
    live = None if d is None else aligned(d, x.dim()).any(-1)
    dead = x <= threshold
    if live is not None:
        dead = dead & ~live
    return dead if bool(dead.any()) else None


# ---------------------------------------------------------------------------------------------
# Contractions: matrix products and convolutions


def _masked(d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``d`` restricted to the elements ``keep`` marks (kept broadcast when all are kept)."""
    if bool(keep.all()):
        return d
    return d & keep.unsqueeze(-1)


def _live(x: torch.Tensor, ctx) -> torch.Tensor:
    """Elements that are not structural zeros (a broadcast ``True`` when all are live)."""
    zero = constant_zero(x, ctx.deps(x))
    if zero is None:
        return torch.ones((1,) * x.dim(), dtype=torch.bool).expand(x.shape)
    return ~zero


def contract(ctx, a: torch.Tensor, b: torch.Tensor, out_shape) -> torch.Tensor | None:
    """Summary of ``a @ b`` for ``a: (..., I, K)``, ``b: (..., K, J)`` (batch axes broadcast).

    ``out[i, j]`` depends on ``a[i, k]`` and ``b[k, j]`` for every ``k`` where neither is a
    structural zero. Broadcast summaries keep it at ``I x N`` (or ``I x J x N`` when needed)."""
    da, db = ctx.deps(a), ctx.deps(b)
    la, lb = _live(a, ctx), _live(b, ctx)
    la_all, lb_all = la.stride() == (0,) * la.dim(), lb.stride() == (0,) * lb.dim()
    nd = len(out_shape)
    parts = []
    if da is not None:
        da = aligned(da, a.dim())
        if da.shape[-2] == 1:  # the same dependencies along k
            if lb_all and la_all:
                parts.append(aligned(da, nd))
            else:
                reach = (as_float(la) @ as_float(lb)) > 0  # (..., I, J)
                parts.append(_masked(aligned(da, nd), aligned(reach, nd - 1)))
        else:
            masked = aligned(da, a.dim()) & la.unsqueeze(-1)  # (..., I, K, N)
            if lb_all:
                parts.append(aligned(masked.any(-2, keepdim=True), nd))
            else:  # (..., I, N, K) @ (..., K, J) -> (..., I, N, J)
                prod = as_float(masked.transpose(-1, -2)) @ as_float(lb).unsqueeze(-3)
                parts.append(aligned((prod > 0).transpose(-1, -2), nd))
    if db is not None:
        db = aligned(db, b.dim())
        n = db.shape[-1]
        if db.shape[-3] == 1:  # the same dependencies along k
            if la_all and lb_all:
                parts.append(aligned(db, nd))
            else:
                reach = (as_float(la) @ as_float(lb)) > 0
                parts.append(_masked(aligned(db, nd), aligned(reach, nd - 1)))
        else:
            masked = db & lb.unsqueeze(-1) if not lb_all else db  # (..., K, J', N)
            j = masked.shape[-2]
            flat = as_float(masked).reshape(*masked.shape[:-2], j * n)
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
    prod = mm(ctx, (a, b), {}, outs)[0]
    if "addbmm" in ctx.op_name:
        prod = any_over(mm(ctx, (a, b), {}, [torch.empty(a.shape[0], a.shape[1], b.shape[2])])[0],
                        [0], keepdim=False)
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
    db = _spread(ctx.deps(bias), out) if isinstance(bias, torch.Tensor) else None
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
    padded = F.pad(d, [0, 0] + spec, value=False) if any(spec) else d
    out = torch.zeros(*d.shape[:2], *out_spatial, d.shape[-1], dtype=torch.bool)
    for tap in taps.nonzero().tolist():
        index = [slice(None), slice(None)]
        for axis, k in enumerate(tap):
            start = k * dilation[axis]
            stop = start + (out_spatial[axis] - 1) * stride[axis] + 1
            index.append(slice(start, stop, stride[axis]))
        out |= padded[tuple(index)]
    return out


# ---------------------------------------------------------------------------------------------
# Attention


def _allowed(mask, ctx, length_q, length_k, is_causal):
    """(..., L, S) bool: which keys a query may attend to, from a constant mask."""
    if is_causal:
        return torch.ones(length_q, length_k, dtype=torch.bool).tril()
    if mask is None:
        return None
    if ctx.deps(mask) is not None:
        return None  # an input-dependent mask: assume every key (and add its dependencies)
    if mask.dtype == torch.bool:
        return mask
    return mask > DEAD_FRACTION * torch.finfo(mask.dtype).min


def attention(ctx, q, k, v, mask, is_causal, outs):
    """``out[i]`` depends on ``q[i]`` and on ``k[j], v[j]`` for every allowed key ``j``:
    a boolean product of the allowed pairs with the keys' and values' summaries."""
    out = outs[0]
    nd = out.dim()
    dq, dk, dv = ctx.deps(q), ctx.deps(k), ctx.deps(v)
    dq = any_over(aligned(dq, q.dim()), [-1]) if dq is not None else None
    dk = any_over(aligned(dk, k.dim()), [-1]) if dk is not None else None
    kv = union([dk, dv], v.dim())
    parts = [dq]
    if kv is not None:
        kv = aligned(kv, v.dim())
        if kv.dim() >= 4 and kv.shape[-4] > 1 and q.shape[-3] != k.shape[-3]:
            kv = kv.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-4)  # grouped queries
        kv = full_on(kv, v.shape, [v.dim() - 2])  # (..., S, E', N)
        allowed = _allowed(mask, ctx, q.shape[-2], k.shape[-2], is_causal)
        s, e, n = kv.shape[-3], kv.shape[-2], kv.shape[-1]
        flat = as_float(kv).reshape(*kv.shape[:-3], s, e * n)
        if allowed is None:
            reach = flat.amax(-2, keepdim=True) > 0  # (..., 1, E' * N)
        else:
            reach = (as_float(allowed) @ flat) > 0  # (..., L, E' * N)
        parts.append(reach.reshape(*reach.shape[:-1], e, n))
    if mask is not None:
        parts.append(_spread(ctx.deps(mask), out))
    d = union([aligned(p, nd) if p is not None else None for p in parts], nd)
    return [d] + [any_over(d, [-1], keepdim=False) if d is not None and o.dim() == nd - 1 and
                  o.shape == out.shape[:-1] else
                  (None if d is None else everything(d).reshape((1,) * o.dim() + (-1,)))
                  for o in outs[1:]]


@rule(aten._scaled_dot_product_flash_attention_for_cpu.default,
      aten._scaled_dot_product_flash_attention.default)
def sdpa_flash(ctx, args, kwargs, outs):
    q, k, v = args[:3]
    is_causal = args[4] if len(args) > 4 else kwargs.get("is_causal", False)
    mask = kwargs.get("attn_mask")
    return attention(ctx, q, k, v, mask, is_causal, outs)


@rule(aten._scaled_dot_product_efficient_attention.default)
def sdpa_efficient(ctx, args, kwargs, outs):
    q, k, v, bias = args[:4]
    is_causal = args[6] if len(args) > 6 else kwargs.get("is_causal", False)
    return attention(ctx, q, k, v, bias, is_causal, outs)


@rule(aten._transformer_encoder_layer_fwd.default)
def encoder_layer(ctx, args, kwargs, outs):
    """``nn.TransformerEncoderLayer``'s fused fast path: per position, except the attention,
    which follows the mask it is *given* (the ``is_causal`` hint alone gives none)."""
    src = args[0]
    mask = args[18] if len(args) > 18 else kwargs.get("mask")
    mask_type = args[19] if len(args) > 19 else kwargs.get("mask_type")
    d = ctx.deps(src)
    if d is None:
        return [None]
    pos = any_over(aligned(d, src.dim()), [-1])  # (B', L', 1, N)
    if mask is not None and mask_type == 1:  # key padding only: no causal structure
        mask = None
    if mask is not None and mask.dim() > 2:
        mask = mask.reshape(-1, *mask.shape[-2:]).all(0) if mask.dtype == torch.bool else \
            mask.reshape(-1, *mask.shape[-2:]).amax(0)
    if mask is not None and mask.dtype == torch.bool:
        mask = ~mask  # nn's boolean masks say where *not* to attend
    ctx.assume(src, pos)
    return attention(ctx, src, src, src, mask, False, outs)
