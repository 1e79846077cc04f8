"""Attention: a boolean product of the allowed pairs with the keys' and values' summaries."""

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from ..deps import Pattern, aligned, any_over, attend, everything, full_on, union
from .base import DEAD_FRACTION, _spread, aten, rule

_PATTERNS = WeakTensorKeyDictionary()  # mask -> (its version, its pattern): masks are shared


def _allowed(mask, ctx, length_q, length_k, is_causal) -> Pattern | None:
    """Which keys a query may attend to, from a constant mask (``(..., L, S)``; None: all)."""
    if is_causal:
        return Pattern.causal(length_q, length_k)
    if mask is None:
        return None
    if ctx.deps(mask) is not None:
        return None  # an input-dependent mask: assume every key (and add its dependencies)
    cached = _PATTERNS.get(mask)
    if cached is not None and cached[0] == mask._version:  # (a write in place changes it)
        return cached[1]
    if mask.dtype == torch.bool:
        pattern = Pattern(mask)
    else:
        pattern = Pattern(mask > DEAD_FRACTION * torch.finfo(mask.dtype).min)
    _PATTERNS[mask] = (mask._version, pattern)
    return pattern


def attention(ctx, q, k, v, mask, is_causal, outs):
    """``out[i]`` depends on ``q[i]`` and on ``k[j], v[j]`` for every allowed key ``j``: the
    union of the keys' and values' summaries over the allowed keys (a boolean product in the
    dense form, unions over runs of keys in the run form)."""
    out = outs[0]
    nd = out.dim()
    dq, dk, dv = ctx.deps(q), ctx.deps(k), ctx.deps(v)
    dq = any_over(aligned(dq, q.dim()), [-1])  # (None stays None)
    dk = any_over(aligned(dk, k.dim()), [-1])
    kv = union([dk, dv], v.dim())
    parts = [dq]
    if kv is not None:
        kv = aligned(kv, v.dim())
        if kv.shape[-4] > 1 and q.shape[-3] != k.shape[-3]:  # grouped queries (heads: -3)
            kv = kv.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-4)
        keys = v.dim() - 2
        kv = full_on(kv, v.shape, [keys])  # (..., S, E', N)
        allowed = _allowed(mask, ctx, q.shape[-2], k.shape[-2], is_causal)
        if allowed is None:
            parts.append(any_over(kv, [keys]))  # (..., 1, E', N)
        else:
            parts.append(attend(allowed, kv, keys))  # (..., L, E', N)
    if mask is not None:
        parts.append(_spread(ctx.deps(mask), out))
    d = union(parts, nd)  # never None: some input of the op is tracked
    # the logsumexp, (..., L): per query, over the features; any other output, everything
    return [d] + [any_over(d, [-1]).squeeze(-2) if o.shape == out.shape[:-1] else
                  everything(d).reshape((1,) * o.dim() + (-1,)) for o in outs[1:]]


@rule(aten._scaled_dot_product_flash_attention_for_cpu.default,
      aten._scaled_dot_product_flash_attention.default, runs=True)
def sdpa_flash(ctx, args, kwargs, outs):
    q, k, v = args[:3]
    is_causal = args[4] if len(args) > 4 else kwargs.get("is_causal", False)
    mask = kwargs.get("attn_mask")
    return attention(ctx, q, k, v, mask, is_causal, outs)


@rule(aten._scaled_dot_product_efficient_attention.default, runs=True)
def sdpa_efficient(ctx, args, kwargs, outs):
    q, k, v, bias = args[:4]
    is_causal = args[6] if len(args) > 6 else kwargs.get("is_causal", False)
    return attention(ctx, q, k, v, bias, is_causal, outs)


@rule(aten._transformer_encoder_layer_fwd.default, runs=True)
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
