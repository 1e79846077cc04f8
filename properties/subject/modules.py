"""One module of a model, seen as a subject of its own: for per-module window declarations.

A model whose layers mix local and global attention (Mistral's sliding layers, Gemma's and
Qwen's alternating ones) keeps a window per layer, not at its output: two sliding layers of
window ``W`` make a model that sees ``2 (W - 1) + 1`` positions. So a declared module is audited
on its own: the model runs once (one sample, inference) with a hook that records every argument
the module is called with; :class:`ModuleCall` then calls the module again with those arguments
(masks, position embeddings, caches: the model's own) and a new sequence input in place of the
recorded one, the ``(B, N, D)`` tensor of its first argument (or ``hidden_states=``). Its
output's first tensor of shape ``(B, N, D')`` are its predictions. That callable is an
``nn.Module``: the float64 copy, the gradients, the sweeps and the certificate all work on it as
on any model.

Objects that are not tensors (a cache the module writes to) are deep-copied on every call, as
they were when recorded: each call is the recorded one, not the next step of a generation.
"""

import copy

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from properties.errors import AdapterError

__all__ = ["ModuleCall", "module_subject", "record"]


class _Recorded(Exception):
    pass


class ModuleCall(nn.Module):
    """``module(*args, **kwargs)`` as recorded, with the sequence input replaced by ``x``."""

    def __init__(self, module: nn.Module, args: tuple, kwargs: dict, slot, name: str):
        super().__init__()
        self.inner = module
        self.slot = slot  # the position (int) or keyword (str) of the sequence input
        self.name = name
        leaves, self._spec = tree_flatten((args, kwargs))
        self._objects = {}
        self._tensors = []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                key = f"recorded_{i}"
                self.register_buffer(key, leaf.detach().clone(), persistent=False)
                self._tensors.append((i, key))
            else:
                self._objects[i] = leaf

    def forward(self, x):
        count = len(self._tensors) + len(self._objects)
        leaves = [None] * count
        for i, key in self._tensors:
            leaves[i] = getattr(self, key)
        for i, obj in self._objects.items():
            leaves[i] = copy.deepcopy(obj)  # a cache the module writes to: as recorded
        args, kwargs = tree_unflatten(leaves, self._spec)
        args = list(args)
        if isinstance(self.slot, int):
            args[self.slot] = x
        else:
            kwargs[self.slot] = x
        out = self.inner(*args, **kwargs)
        return _first_sequence(out, x)


def _first_sequence(out, x):
    """The module's first output tensor with ``x``'s batch and length."""
    if isinstance(out, torch.Tensor):
        return out
    leaves, _ = tree_flatten(out)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor) and leaf.dim() == 3 and leaf.shape[:2] == x.shape[:2]:
            return leaf
    raise AdapterError(
        "the windowed module returns no (batch, positions, features) tensor",
        "declare windows on the attention modules themselves (--window-module)",
    )


def record(subject, names: list[str]) -> dict[str, ModuleCall]:
    """Run the subject once (one sample, inference) and record the calls of the named modules:
    ``{name: ModuleCall}``, each called with a new ``(B, N, D)`` sequence input."""
    from properties.subject.calls import forward, model_mode

    module = subject.module
    by_name = dict(module.named_modules())
    n = subject.n_positions
    recorded: dict[str, ModuleCall] = {}

    def hook_for(name):
        def pre(mod, args, kwargs):
            if name in recorded:
                return None
            slot = next(
                (i for i, a in enumerate(args) if _is_sequence(a, n)),
                "hidden_states" if _is_sequence(kwargs.get("hidden_states"), n) else None,
            )
            if slot is None:
                raise AdapterError(
                    f"module {name!r} is called without a (batch, {n} positions, features) "
                    "tensor as its first argument or hidden_states=",
                    "declare windows on modules that take the sequence (attention layers)",
                )
            recorded[name] = ModuleCall(mod, tuple(args), dict(kwargs), slot, name)
            return None

        return pre

    handles = [by_name[name].register_forward_pre_hook(hook_for(name), with_kwargs=True)
               for name in names]
    try:
        x = subject.draw_inputs(1, torch.Generator().manual_seed(0))
        with model_mode(subject, train=False):
            forward(subject, x, seed=0)
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in names if name not in recorded]
    if missing:
        raise AdapterError(
            f"the windowed module(s) {', '.join(missing)} did not run in a forward pass",
            "declare windows on modules the model calls",
        )
    return recorded


def _is_sequence(value, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[1] == n


def module_subject(subject, call: ModuleCall, width: int | None, *, exact: bool):
    """The subject of one recorded module: its sequence input ``(B, N, D)`` (raster order,
    ``predicts="auto"``) and, when it has a width, the window clause."""
    from properties.contracts import Window
    from properties.subject.canonical import make_subject

    features = int(getattr(call, f"recorded_{_slot_leaf(call)}").shape[-1])
    clauses = [] if width is None else [Window(width, exact=exact)]
    return make_subject(
        call,
        grid=subject.grid,
        layout="BTC",
        features=features,
        predicts="auto",
        name=f"{subject.name} / {call.name}",
        contracts=clauses,
    )


def _slot_leaf(call: ModuleCall) -> int:
    """The leaf index of the recorded sequence input (a buffer like the other tensors)."""
    args, kwargs = tree_unflatten(
        [i for i in range(len(call._tensors) + len(call._objects))], call._spec
    )
    return args[call.slot] if isinstance(call.slot, int) else kwargs[call.slot]
