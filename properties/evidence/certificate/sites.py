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

The plain :class:`~.tracer.Tracer` is unchanged: this class only extends its blame hook (the
tracer's own answer, the op the certificate's reason names, stays as it was), and reads
positions a little better: of several candidate axes, one along which the summary is broadcast
(the channels of a toy grid with as many positions as channels) is not a position axis.
"""

import itertools
import sys

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from properties.evidence import blame as blaming

from . import deps as summaries
from . import rules
from .deps import aligned
from .tracer import Tracer

__all__ = ["SiteTracer", "module_paths"]


class SiteTracer(Tracer):
    def __init__(self, n, grid, ranks, names, *, paths: dict, present: bool, form=None):
        super().__init__(n, grid, ranks, names, True, form)
        self.paths = paths  # the tracer's module label -> (qualified path, class name)
        self.want_present = present
        self.sites: dict[str, blaming.Blame] = {}
        self.pending = WeakTensorKeyDictionary()  # axis-less tensor -> (order, Blame)
        self.seen_future = WeakTensorKeyDictionary()  # tensor -> sees the future (None: unknown)
        self.order = itertools.count()
        self.func = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.func = func
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _set(self, t, d) -> None:
        super()._set(t, d)
        self.seen_future.pop(t, None)  # a write in place changed what ``t`` may see

    # -- the tracer's blame hook ---------------------------------------------------------------
    def _check_blame(self, outs, inputs) -> None:
        super()._check_blame(outs, inputs)  # the tracer's own word (the certificate's reason)
        if "future" not in self.sites:
            if any(self._future_at(o) is True for o in outs) and not any(
                self._future_at(x) is True for x in inputs
            ):
                self.sites["future"] = self._pending_of(inputs) or self._site("future")
            else:
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

    # -- which axes hold the positions ----------------------------------------------------------
    def _future_at(self, t: torch.Tensor):
        """The tracer's question (does an element see a later input?) on
        :func:`_position_axes`: a tensor with as many channels as positions is read on the
        axis its summary varies along, the softmax of attention scores on its queries."""
        known = self._sees_future(t)  # the tracer's, cached: one candidate set of axes
        if known is not None:
            return known
        if t in self.seen_future:
            return self.seen_future[t]
        r = self._rows(t)
        if r is None:
            result = False if self.deps(t) is None else None
        else:
            reach = torch.where(r, self.ranks[None, :], torch.tensor(-1)).amax(1)
            result = bool((reach > self.ranks).any())
        self.seen_future[t] = result
        return result

    def _rows(self, t: torch.Tensor) -> torch.Tensor | None:
        """``(N, N)``: which inputs the elements at each position may depend on (None: no
        summary, or no single set of position axes)."""
        n = len(self.ranks)
        # the input columns (no unknown-origin slots), dense: a failing model's blame run only
        d = summaries.dense(summaries.columns(self.deps(t), self.n_inputs))
        if d is None or n < 2:
            return None
        d = aligned(d, t.dim())
        axes = _position_axes(tuple(t.shape), tuple(d.shape[:-1]), self.grid)
        if axes is None:
            return None
        others = [a for a in range(t.dim()) if a not in axes]
        r = d.any(dim=tuple(others), keepdim=True) if others else d
        return r.expand(*[t.shape[a] if a in axes else 1 for a in range(t.dim())], n).reshape(
            n, n)

    # -- tensors without a position axis -------------------------------------------------------
    def _axisless(self, t: torch.Tensor) -> bool:
        return not _candidates(tuple(t.shape), self.grid)

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
        r = self._rows(t)
        return r is not None and bool(r.diagonal().any())


def _candidates(shape: tuple[int, ...], grid: tuple[int, ...]) -> list[list[int]]:
    """The sets of axes of ``shape`` that could hold the grid's positions: a run of axes of the
    grid's shape, or (on a grid of several axes) one axis of all its positions."""
    n = 1
    for g in grid:
        n *= g
    found = [list(range(a, a + len(grid))) for a in range(len(shape) - len(grid) + 1)
             if shape[a : a + len(grid)] == tuple(grid)]
    if len(grid) > 1:
        found.extend([a] for a, s in enumerate(shape) if s == n)
    return found


def _position_axes(shape, summary_shape, grid) -> list[int] | None:
    """The one set of candidate axes that holds the positions, else None. Of several, those
    along which the summary is broadcast (every element alike: the channels after a dense
    layer, when a toy grid has as many positions as channels) are not positions; attention
    scores (queries x keys, both varying) stay ambiguous."""
    found = _candidates(shape, grid)
    if len(found) > 1:
        found = [axes for axes in found
                 if not all(summary_shape[a] == 1 < shape[a] for a in axes)]
    return found[0] if len(found) == 1 else None


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
