"""The registry of rules, the sound fallback, and helpers every family of rules uses."""

import torch

from ..deps import compress, constant_where, everything, expanded

aten = torch.ops.aten
RULES: dict = {}  # OpOverload (full name: a custom op never gets aten's rule) -> rule
HIGHER_ORDER: dict = {}  # a higher-order operator's name (flex_attention) -> rule
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


def higher_order(*names):
    def register(fn):
        for name in names:
            HIGHER_ORDER[name] = fn
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


def _reshaped(d, shape, new_shape):
    """The summary of a tensor of ``shape`` (row-major order) at ``new_shape`` (a view where
    the expanded summary allows one, a copy otherwise)."""
    return compress(expanded(d, shape).reshape(*new_shape, d.shape[-1]))


def _spread(d, out):
    """An index's dependencies, given to every element it selects (conservative)."""
    row = everything(d)
    return None if row is None else row.reshape((1,) * out.dim() + (-1,))


def _dead_logits(x: torch.Tensor, d) -> torch.Tensor | None:
    """Constant logits at or below ``DEAD_FRACTION * finfo.min`` (or -inf)."""
    if not x.is_floating_point():
        return None
    threshold = DEAD_FRACTION * torch.finfo(x.dtype).min
    return constant_where(x, d, lambda v: v <= threshold)
