"""Reductions and normalisations: an element depends on every element it reduces."""

import torch

from ..deps import aligned, any_over, compress, restrict, union
from ..deps import cumulative as running
from .base import _dead_logits, _dim, _reshaped, aten, rule


def _reduced_axes(dims, nd):
    """The axes a reduction's ``dim`` argument names (none, or an empty list: every axis; the
    dispatcher passes ``dim`` positionally, and leaves it out when it is the default)."""
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(nd))
    if isinstance(dims, int):
        dims = [dims]
    return [_dim(a, nd) for a in dims]


@rule(aten.sum.dim_IntList, aten.mean.dim, aten.amax.default, aten.amin.default,
      aten.any.dim, aten.all.dim, aten.any.dims, aten.prod.dim_int, aten.logsumexp.default,
      aten.max.dim, aten.min.dim, aten.argmax.default, aten.argmin.default,
      aten.linalg_vector_norm.default, aten.nansum.default, aten.std.correction,
      aten.var.correction, aten.var_mean.correction, aten.std_mean.correction,
      aten.sum.default, aten.mean.default, aten.max.default, aten.min.default,
      aten.any.default, aten.all.default, aten.count_nonzero.dim_IntList,
      aten.count_nonzero.default, runs=True)
def reduction(ctx, args, kwargs, outs):
    """Every output (values, indices, statistics) depends on every element it reduces; the
    summary is laid out at each output's shape, whether it keeps the reduced axes or not."""
    x = args[0]
    nd = x.dim()
    position = 2 if ctx.op_name.startswith("aten.linalg_vector_norm") else 1  # after ``ord``
    axes = _reduced_axes(args[position] if len(args) > position else None, nd)
    r = any_over(ctx.deps(x), axes, keepdim=True)
    reduced = [1 if a in axes else s for a, s in enumerate(x.shape)]
    return [_reshaped(r, reduced, o.shape) for o in outs]


@rule(aten.cumsum.default, aten.cumprod.default, aten.cummax.default, aten.cummin.default,
      aten.logcumsumexp.default, runs=True)
def cumulative(ctx, args, kwargs, outs):
    """Element i of a running sum depends on elements 0..i along the axis."""
    d = ctx.deps(args[0])
    axis = _dim(args[1], args[0].dim())
    if d.shape[axis] == 1:
        return [d] * len(outs)
    return [running(d, axis)] * len(outs)


def _per_channel(ctx, tensors, nd):
    """Summaries of per-channel tensors (weights, biases, running statistics: ``(C,)``),
    laid along axis 1 of an ``nd``-axis output."""
    return [None if d is None else d.reshape(d.shape[0], *([1] * (nd - 2)), -1)
            for d in (ctx.deps(t) for t in tensors)]  # leading axes: added by the union


@rule(aten.native_layer_norm.default, runs=True)
def layer_norm(ctx, args, kwargs, outs):
    """Each element depends on the elements it is normalised with, and on the weight and bias
    of its feature; the mean and rstd on the normalised elements only."""
    x, shape = args[0], args[1]
    nd = x.dim()
    stats = any_over(ctx.deps(x), list(range(nd - len(shape), nd)))
    d = union([stats] + [ctx.deps(w) for w in args[2:4]], nd)
    return [d] + [stats] * (len(outs) - 1)


@rule(aten._fused_rms_norm.default, aten.rms_norm.default, runs=True)
def rms_norm(ctx, args, kwargs, outs):
    x = args[0]
    nd = x.dim()
    k = args[1] if isinstance(args[1], int) else len(args[1])
    stats = any_over(ctx.deps(x), list(range(nd - k, nd)))
    return [union([stats, ctx.deps(args[2])], nd)] + [stats] * (len(outs) - 1)


@rule(aten._native_batch_norm_legit_no_training.default, runs=True)
def batch_norm_eval(ctx, args, kwargs, outs):
    """Per element, like a pointwise op, and per channel on the weight, bias and running
    statistics (constants, unless computed from the input)."""
    nd = args[0].dim()
    d = union([ctx.deps(args[0])] + _per_channel(ctx, args[1:5], nd), nd)
    return [d] + [None] * (len(outs) - 1)


@rule(aten._native_batch_norm_legit.default, aten.native_batch_norm.default,
      aten._native_batch_norm_legit_functional.default, runs=True)
def batch_norm_train(ctx, args, kwargs, outs):
    """Batch statistics mix every sample and position of a channel (training mode); the
    statistics it returns, and the running statistics it updates, are per channel."""
    x = args[0]
    nd = x.dim()
    training = args[5] if len(args) > 5 and isinstance(args[5], bool) else True
    if not training:  # the running statistics are read, not updated
        for running in args[3:5]:
            if isinstance(running, torch.Tensor):
                ctx.assume(running, ctx.deps(running))
        return batch_norm_eval(ctx, args, kwargs, outs)
    d = any_over(ctx.deps(x), [a for a in range(nd) if a != 1])
    channels = any_over(d, [a for a in range(nd) if a != 1], keepdim=False)  # (C, N)
    for running in args[3:5]:
        # native_batch_norm updates them in place without saying so in its schema: the
        # tracer sees no write, the rule says what they now hold
        if isinstance(running, torch.Tensor) and not any(running is o for o in outs):
            ctx.assume(running, union([ctx.deps(running), channels], 1))
    return [union([d] + _per_channel(ctx, args[1:3], nd), nd)] + [channels] * (len(outs) - 1)


@rule(aten.native_group_norm.default, runs=True)
def group_norm(ctx, args, kwargs, outs):
    """Every element of a sample (conservatively: not only its group) and the weight and bias
    of its channel; the mean and rstd, ``(N, G)``, per sample."""
    x = args[0]
    nd = x.dim()
    d = any_over(ctx.deps(x), list(range(1, nd)))
    stats = any_over(d, list(range(2, nd)), keepdim=False)
    return [union([d] + _per_channel(ctx, args[1:3], nd), nd)] + [stats] * (len(outs) - 1)


@rule(aten._softmax.default, aten._log_softmax.default, aten.softmax.int,
      aten.log_softmax.int, aten._safe_softmax.default, runs=True)
def softmax(ctx, args, kwargs, outs):
    """A weight whose logit is a constant -inf (or near the dtype's minimum) is exactly zero
    and constant; every other weight of the row depends on the row's live logits."""
    x = args[0]
    d = ctx.deps(x)
    nd = x.dim()
    axis = _dim(args[1], nd)
    dead = _dead_logits(x, d)
    live = restrict(aligned(d, nd), ~dead) if dead is not None else aligned(d, nd)
    row = any_over(live, [axis])
    if dead is None:
        return [row]
    if "log_softmax" in ctx.op_name:
        # log_softmax(x)_i = x_i - logsumexp(x): a masked slot is a constant only at -inf;
        # at a finite mask value it moves with the row's logsumexp (float16: by rounding)
        dead = dead & (x == float("-inf"))
    return [compress(restrict(row, ~dead))]
