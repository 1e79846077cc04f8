"""Dependency summaries: which input positions each element of a tensor may depend on.

A summary of a tensor of shape ``S`` is a bool tensor ``D`` with ``len(S) + 1`` axes: axis ``i``
has size ``S[i]`` or 1 (*broadcast*: every index along it has the same dependencies), and the
last axis has size ``N``, the number of input positions. ``D[e, n]`` true means element ``e``
*may* depend on input position ``n``; false is a proof that it does not, for any input value.
``None`` is the summary of a constant (no dependency at all: parameters, buffers, masks).

Broadcast axes keep the cost at position granularity: after a dense linear layer every feature
of a position depends on the same inputs, so a ``(B, T, D)`` activation costs ``T x N`` bits,
not ``T x D x N``; element-level summaries are kept where they matter (MADE's features).
"""

import torch
from torch.utils.weak import WeakTensorKeyDictionary

Deps = torch.Tensor | None


def compress(d: Deps) -> Deps:
    """Axes of stride 0 (expanded views) become size 1. (An all-false summary is kept: a scan
    per op would cost more than it saves; it means the same as None.)"""
    if d is None:
        return None
    for axis in range(d.dim() - 1):
        if d.shape[axis] > 1 and d.stride(axis) == 0:
            d = d.narrow(axis, 0, 1)
    return d


_ALL_LIVE = WeakTensorKeyDictionary()  # summary -> every element depends on something


def all_live(d: torch.Tensor) -> bool:
    """Whether every element of the summary depends on some input (cached per summary: the
    same summary object flows through many ops of a transformer)."""
    found = _ALL_LIVE.get(d)
    if found is None:
        found = bool(d.any(-1).all())
        _ALL_LIVE[d] = found
    return found


def aligned(d: Deps, ndim: int) -> Deps:
    """``d`` with leading size-1 axes so that it broadcasts against a tensor of ``ndim`` axes
    (a summary's last axis is the inputs, so torch's right-alignment would be wrong)."""
    if d is None or d.dim() - 1 == ndim:
        return d
    return d.reshape((1,) * (ndim - d.dim() + 1) + tuple(d.shape))


def union(parts: list[Deps], ndim: int) -> Deps:
    """Elementwise union of summaries (broadcast like the tensors they describe)."""
    present = [aligned(p, ndim) for p in parts if p is not None]
    if not present:
        return None
    first = present[0]
    if all(p is first for p in present):
        return first
    out = first
    for p in present[1:]:
        out = out | p
    return compress(out)


def expanded(d: torch.Tensor, shape) -> torch.Tensor:
    """A stride-0 view of ``d`` at the tensor's full shape (no memory)."""
    return d.expand(*shape, d.shape[-1])


def full_on(d: torch.Tensor, shape, axes) -> torch.Tensor:
    """``d`` expanded on ``axes`` only (the others keep their broadcast size)."""
    sizes = list(d.shape)
    for a in axes:
        sizes[a] = shape[a]
    return d.expand(*sizes)


def any_over(d: Deps, axes, keepdim: bool = True) -> Deps:
    """Union over ``axes`` (an element of the reduction depends on every reduced element)."""
    if d is None:
        return None
    axes = sorted({a % (d.dim() - 1) for a in axes})
    reduced = [a for a in axes if d.shape[a] > 1]
    if reduced:
        d = d.any(dim=tuple(reduced), keepdim=True)
    if not keepdim:
        for a in reversed(axes):
            d = d.squeeze(a)
    return d


def everything(d: Deps) -> Deps:
    """The union over all elements, as an ``(N,)`` row (``None`` for a constant)."""
    if d is None:
        return None
    return d.reshape(-1, d.shape[-1]).any(0)


def constant_where(value: torch.Tensor, d: Deps, test) -> torch.Tensor | None:
    """Elements where ``test(value)`` holds *and* that are constant (``None`` when there are
    none). A value computed from the input at this run proves nothing: another input would
    change it."""
    if d is not None and all_live(d):
        return None  # no constant element
    hit = test(value)
    if d is not None:
        hit = hit & ~aligned(d, value.dim()).any(-1)
    return hit if bool(hit.any()) else None


def constant_zero(value: torch.Tensor, d: Deps) -> torch.Tensor | None:
    """Elements that are exactly zero *and* constant: structural zeros."""
    return constant_where(value, d, lambda v: v == 0)


def as_float(d: torch.Tensor) -> torch.Tensor:
    return d.to(torch.float32)
