"""The first module whose output diverges between the full pass and a stepped path.

Forward hooks on every submodule record its outputs on both paths: once over the whole
sequence in the full pass, once per chunk in the stepped one. A module's chunk outputs, put
end to end along its time axis (the one axis whose size is the sequence length in the full pass
and each chunk's length in the steps), are compared position by position with its full-pass
output, against the check's tolerance relative to that module's scale. The first module, in
the order the full pass calls them, whose output diverges is where the cached path went wrong
(or first showed it): an attention layer whose cache forgot the window, a rotary embedding
given the wrong positions, a convolution that lost its buffer.

Forward hooks fire when a module returns, so a module's submodules come before it: in an
attention layer written with functional code, the first diverging output is its output
projection. The module's *input* (its first tensor argument) is compared too: when it already
diverges, the difference arose before the module, in code outside any submodule of its parent,
which the report names. A module whose outputs have no such axis (a padding layer that
prepends its buffer) is passed over; a stepper that computes outside the model's modules (the
lecture's steppers use the weights directly) has nothing to compare, and the report says so.
"""

from typing import Any

import torch
from torch import nn

__all__ = ["first_diverging_module"]

MAX_BYTES = 512 << 20  # full-pass outputs kept for the comparison (the earliest modules first)


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor of a module's output (a tensor, a tuple or list, a dict or
    ``ModelOutput``), one level deep."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = out.values()
    values = out if isinstance(out, (tuple, list, type({}.values()))) else ()
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def time_axis(full: torch.Size, parts: list[torch.Size], n: int, lengths: list[int]) -> int | None:
    """The axis along which ``parts`` (one per chunk, of ``lengths``) put end to end make a
    tensor of shape ``full``, whose size there is ``n``; None when there is none, or several."""
    axes = [
        a
        for a in range(len(full))
        if full[a] == n
        and all(
            len(p) == len(full) and p[a] == length and _others(p, a) == _others(full, a)
            for p, length in zip(parts, lengths, strict=True)
        )
    ]
    return axes[0] if len(axes) == 1 else None


def _others(shape: torch.Size, axis: int) -> tuple:
    return tuple(shape[:axis]) + tuple(shape[axis + 1 :])


def _recorder(store: dict, order: list | None, budget: list | None):
    """A forward hook that appends ``(input, output)`` (first tensors, copied) to
    ``store[module]``; ``order`` gets the modules in the order they first return; ``budget``
    (bytes, in a list) bounds what is kept (a call over it is recorded as None)."""

    def hook(module, args, out):
        t, given = first_tensor(out), first_tensor(args)
        if t is None:
            return
        if order is not None and module not in store:
            order.append(module)
        calls = store.setdefault(module, [])
        size = sum(v.numel() * v.element_size() for v in (t, given) if v is not None)
        if budget is not None and budget[0] < size:
            calls.append(None)  # over the budget: not compared
            return
        if budget is not None:
            budget[0] -= size
        calls.append(tuple(None if v is None else v.detach().clone() for v in (given, t)))

    return hook


def first_diverging_module(checker, outcome) -> dict | None:
    """``{name, type, position, diff, tolerance}`` of the first submodule whose output
    diverges on ``outcome``'s schedule (in the continuation that diverged), or
    ``{name: None, reason}`` when none does, or None when the model is not a module."""
    module: nn.Module | None = checker.subject.module
    if module is None:
        return None
    names = {m: name for name, m in module.named_modules() if m is not module}
    schedule, k = outcome.schedule, outcome.continuation
    keyed = checker.inputs(schedule)
    full_calls: dict = {}
    order: list = []
    hooks = [m.register_forward_hook(_recorder(full_calls, order, [MAX_BYTES])) for m in names]
    try:
        checker.subject(keyed[k][1])
    finally:
        for h in hooks:
            h.remove()
    segments: list[tuple[tuple[int, int], dict]] = []
    current: list[dict | None] = [None]

    def on_step(continuation, a, b):
        current[0] = {} if continuation in (None, k) else None
        if current[0] is not None:
            segments.append(((a, b), current[0]))

    def record(mod, args, out):
        if current[0] is not None:
            _recorder(current[0], None, None)(mod, args, out)

    hooks = [m.register_forward_hook(record) for m in names]
    checker.on_step = on_step
    try:
        checker.stepped(schedule, [x for _, x in keyed])
    finally:
        checker.on_step = None
        for h in hooks:
            h.remove()
    return _first(checker, order, full_calls, segments, names) or {
        "name": None,
        "reason": "no submodule's output diverges (the stepper computes outside the model's "
        "modules, or the divergence arises between them)"
        if any(calls for _, calls in segments)
        else "the stepped path calls none of the model's modules",
    }


def _diverging(full, parts, n, lengths, rel) -> tuple[int, float, float] | None:
    """``(first position, its difference, tolerance)`` where the chunks' ``parts`` put end to
    end differ from ``full``; None when they do not, or have no time axis."""
    if full is None or any(p is None for p in parts):
        return None
    axis = time_axis(full.shape, [p.shape for p in parts], n, lengths)
    if axis is None:
        return None
    stepped = torch.cat(parts, axis)
    diff = (stepped.double() - full.double()).abs().movedim(axis, 0).reshape(n, -1)
    diff = torch.nan_to_num(diff, nan=float("inf")).amax(1)
    finite = full[torch.isfinite(full)].abs()
    tolerance = rel * (float(finite.max()) if finite.numel() else 0.0)
    bad = (diff > tolerance).nonzero().flatten()
    return None if len(bad) == 0 else (int(bad[0]), float(diff[bad[0]]), tolerance)


def _first(checker, order, full_calls, segments, names) -> dict | None:
    n, rel = checker.subject.n_positions, checker.rel
    lengths = [b - a for (a, b), _ in segments]
    for mod in order:
        for c, full in enumerate(full_calls[mod]):
            parts = [calls.get(mod, []) for _, calls in segments]
            if full is None or any(len(p) <= c for p in parts):
                continue
            found = _diverging(full[1], [p[c][1] for p in parts], n, lengths, rel)
            if found is None:
                continue
            given = _diverging(full[0], [p[c][0] for p in parts], n, lengths, rel)
            parent = _parent(checker.subject.module, names[mod])
            return {
                "name": names[mod],
                "type": type(mod).__name__,
                "position": found[0],
                "diff": found[1],
                "tolerance": found[2],
                # the input diverges too: the difference arose before, in the parent's own code
                "input_diverges": given is not None,
                "parent": parent or None,
                "parent_type": type(_module(checker.subject.module, parent)).__name__,
            }
    return None


CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)  # no code of their own


def _parent(root: nn.Module, name: str) -> str:
    """The closest enclosing module that runs code of its own ("" for the root)."""
    while name:
        name = name.rpartition(".")[0]
        if not isinstance(_module(root, name), CONTAINERS):
            return name
    return name


def _module(root: nn.Module, name: str) -> nn.Module:
    return root.get_submodule(name) if name else root
