"""The blame run's tracer: where the leak entered, as a line of the model's Python source.

:class:`SiteTracer` is the tracer of the certificate's second run (the one that only runs when
the bound sees what it must not), with one addition: when it finds the op where the future
entered ("the first op whose output sees a later input while none of its inputs did"), it takes
the Python stack there (:func:`properties.evidence.blame.model_frames`) and the module whose
``forward`` was running. Two refinements, both about *which* op:

- **Tensors without a position axis.** A padded sequence (``T + p`` long), a statistic over
  time (``x.mean(-1)``) has no axis the tracer can read positions on, so whether it sees the
  future is unknown; the future then shows at the next op that has one (the convolution after a
  reflect padding, the subtraction of a mean over time). Such a tensor remembers the op that
  made it from inputs that did not see the future; an op blamed for the future with such an
  input is blamed on that op instead (the ``F.pad(..., mode="reflect")`` line). Tensors with
  *several* candidate axes (attention scores, ``T x T``) are not followed: their raw values see
  every key, and the mask that follows decides.
- **The present** (for a model that must not see it): it comes with the input, so no op brings
  it "new". The blamed op is the first, called from the model's code, that is neither a move of
  elements (views, copies, pads, ``cat``: what :mod:`.rules.moves` rules) nor a pointwise op of
  one input (a normalization by constants), and whose output sees the present: the first layer
  the unshifted input reaches (where the shift is missing).

The plain :class:`~.tracer.Tracer` is unchanged: this class only overrides its blame hook.
"""

import itertools
import sys

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from properties.evidence import blame as blaming

from . import rules
from .deps import aligned
from .tracer import Tracer


class SiteTracer(Tracer):
    def __init__(self, n, grid, ranks, names, *, paths: dict, present: bool):
        super().__init__(n, grid, ranks, names, True)
        self.paths = paths  # the tracer's module label -> (qualified path, class name)
        self.want_present = present
        self.sites: dict[str, blaming.Blame] = {}
        self.pending = WeakTensorKeyDictionary()  # axis-less tensor -> (order, Blame)
        self.order = itertools.count()
        self.func = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.func = func
        return super().__torch_dispatch__(func, types, args, kwargs)

    # -- the tracer's blame hook ---------------------------------------------------------------
    def _check_blame(self, outs, inputs) -> None:
        had = self.blame
        super()._check_blame(outs, inputs)
        if had is None and self.blame is not None and "future" not in self.sites:
            self.sites["future"] = self._pending_of(inputs) or self._site("future")
        elif self.blame is None:
            self._note_pending(outs, inputs)
        if self.want_present and "present" not in self.sites:
            site = self._brings_present(outs, inputs)
            if site is not None:
                self.sites["present"] = site

    def _site(self, kind: str) -> blaming.Blame:
        label = self.stack[-1] if self.stack else None
        path, type_name = self.paths.get(label, (None, None))
        frames = blaming.model_frames(sys._getframe(1))
        return blaming.make(kind, frames, module=path, module_type=type_name,
                            op=self.op_name, source="certificate")

    # -- tensors without a position axis -------------------------------------------------------
    def _axisless(self, t: torch.Tensor) -> bool:
        return _candidates(tuple(t.shape), self.grid) == 0

    def _pending_of(self, inputs) -> blaming.Blame | None:
        found = [self.pending[x] for x in inputs if x in self.pending]
        return min(found, key=lambda p: p[0])[1] if found else None

    def _note_pending(self, outs, inputs) -> None:
        fresh = [o for o in outs if self._axisless(o) and self.deps(o) is not None]
        if not fresh:
            return
        inherited = [self.pending[x] for x in inputs if x in self.pending]
        entry = min(inherited, key=lambda p: p[0]) if inherited else None
        if entry is None:
            entry = (next(self.order), self._site("future"))
        for o in fresh:
            self.pending[o] = entry

    # -- the present ---------------------------------------------------------------------------
    def _brings_present(self, outs, inputs) -> blaming.Blame | None:
        func = self.func
        if func is None or _moves(func):
            return None
        if len(inputs) == 1 and torch.Tag.pointwise in getattr(func, "tags", ()):
            return None
        if not any(self._sees_present(o) for o in outs):
            return None
        site = self._site("present")
        return site if site.chain else None  # the harness's own ops (layouts) are no blame

    def _sees_present(self, t: torch.Tensor) -> bool:
        d = self.deps(t)
        n = len(self.ranks)
        if d is None or n < 2:
            return False
        axes = blaming.position_axes(tuple(t.shape), self.grid)
        if axes is None:
            return False
        d = aligned(d, t.dim())[..., :n]
        others = [a for a in range(t.dim()) if a not in axes]
        r = d.any(dim=tuple(others), keepdim=True) if others else d
        r = r.expand(*[t.shape[a] if a in axes else 1 for a in range(t.dim())], n).reshape(n, n)
        return bool(r.diagonal().any())


def _candidates(shape: tuple[int, ...], grid: tuple[int, ...]) -> int:
    """How many sets of axes of ``shape`` could hold the grid's positions."""
    n = 1
    for g in grid:
        n *= g
    runs = sum(shape[a : a + len(grid)] == tuple(grid) for a in range(len(shape) - len(grid) + 1))
    flat = sum(s == n for s in shape) if len(grid) > 1 else 0
    return runs + flat


def _moves(func) -> bool:
    """Ops that move elements (their rule is one of :mod:`.rules.moves`: views, copies, pads,
    cat, index...), the embedding lookup excepted (a token's first values)."""
    rule = rules.RULES.get(func)
    if rule is None:
        return False
    return rule.__module__.endswith("rules.moves") and rule.__name__ != "embedding"


def module_paths(module) -> dict:
    """The tracer's module labels (``name (Type)``, as :func:`._module_hooks` pushes them) ->
    (qualified path, class name); the model itself has the path ``""``."""
    if module is None:
        return {}
    return {
        f"{name or type(m).__name__} ({type(m).__name__})": (name, type(m).__name__)
        for name, m in module.named_modules()
    }
