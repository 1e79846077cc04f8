"""Reductions and normalisations: an element depends on every element it reduces."""

import torch

from ..deps import (
    aligned,
    any_over,
    compress,
    union,
)
from .base import _dead_logits, _dim, _reshaped, _spread, aten, rule


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
      aten.any.default, aten.all.default, aten.count_nonzero.dim_IntList,
      aten.count_nonzero.default)
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
    """Batch statistics mix every sample and position of a channel (training mode); the
    statistics it returns, and the running statistics it updates, are per channel."""
    x = args[0]
    training = args[5] if ctx.op_name.startswith("aten._native_batch_norm_legit.") or \
        ctx.op_name.startswith("aten.native_batch_norm") else True
    if len(args) > 5 and isinstance(args[5], bool):
        training = args[5]
    d = ctx.deps(x)
    if d is None:
        return [None] * len(outs)
    if not training:
        return [d] + [None] * (len(outs) - 1)
    d = any_over(d, [a for a in range(x.dim()) if a != 1])
    channels = any_over(d, [a for a in range(x.dim()) if a != 1], keepdim=False)  # (C, N)
    for running in args[3:5]:
        # native_batch_norm updates them in place without saying so in its schema: the
        # tracer sees no write, the rule says what they now hold
        if isinstance(running, torch.Tensor) and not any(running is o for o in outs):
            ctx.assume(running, union([ctx.deps(running), channels], 1))
    return [d] + [channels] * (len(outs) - 1)


@rule(aten.native_group_norm.default)
def group_norm(ctx, args, kwargs, outs):
    """Every element of a sample (conservatively: not only its group); the mean and rstd,
    ``(N, G)``, per sample."""
    x = args[0]
    d = any_over(ctx.deps(x), list(range(1, x.dim())))
    stats = None if d is None else any_over(d, list(range(2, x.dim())), keepdim=False)
    return [d] + [stats] * (len(outs) - 1)


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
