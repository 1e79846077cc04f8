"""Score matrices, kept factored: the run-form summary of an ``(..., I, J)`` tensor whose element
``(i, j)`` depends on ``row[i]`` and ``col[j]`` (where ``keep[i, j]``; nothing elsewhere).

Hand-written attention (GPT-2 and Llama in eager mode, torch's own math kernel of SDPA)
computes ``q @ k^T``, adds a mask, takes a softmax over keys and multiplies by ``v``. The
scores' summary is the union of a query's and a key's: stored as such it costs ``I + J``
summaries, where materialized it would cost ``I x J`` of them (at 8192 positions, more than
the machine has). :class:`Outer` is a :class:`~.runs.Runs` in every respect: the operations
attention needs (a mask, a dtype change, batch reshapes, the union over keys) are exact on the
factors; any other op reads ``lo``/``hi``, which materializes the plain runs once (exact, at the
plain form's cost). So it is never less sound than the plain form, only cheaper where it can be.
"""

import torch

from . import runs as R
from .runs import Runs

MIN_PAIRS = 4096  # I x J from which a score matrix is kept factored (tests set it to 0)


class Outer(Runs):
    __slots__ = ("row", "col", "keep", "_lead", "_full")

    def __init__(self, row: Runs | None, col: Runs | None, keep: torch.Tensor | None, lead):
        self.row, self.col, self.keep = row, col, keep  # row (..., I, 1), col (..., 1, J)
        self._lead = torch.Size(lead)
        self.n = (row if row is not None else col).n
        self._live = None
        self._full = None

    # -- a Runs, materialized on demand -------------------------------------------------------
    def full(self) -> Runs:
        if self._full is None:
            parts = [p.expand(*self._lead, self.n) for p in (self.row, self.col) if p is not None]
            r = parts[0] if len(parts) == 1 else R.union(parts)
            if self.keep is not None:
                hi = torch.where(self.keep.expand(self._lead).unsqueeze(-1), r.hi, r.lo)
                r = Runs(r.lo.expand_as(hi), hi, self.n)
            self._full = Runs(r.lo.expand(*self._lead, r.runs), r.hi.expand(*self._lead, r.runs),
                              self.n)
        return self._full

    @property
    def lo(self):
        return self.full().lo

    @property
    def hi(self):
        return self.full().hi

    @property
    def shape(self) -> torch.Size:
        return torch.Size(tuple(self._lead) + (self.n,))

    @property
    def runs(self) -> int:
        return self.full().runs

    def dim(self) -> int:
        return len(self._lead) + 1

    def stride(self, axis: int) -> int:
        return 1  # never narrowed by ``compress``: the factors are already broadcast

    def numel(self) -> int:
        return self.full().numel()

    def map(self, fn) -> Runs:
        return self.full().map(fn)

    # -- moves of the batch axes, on the factors ---------------------------------------------
    def _batch(self, lead, fn_runs, fn_keep) -> "Outer":
        row = None if self.row is None else fn_runs(self.row, 1)
        col = None if self.col is None else fn_runs(self.col, 0)
        keep = None if self.keep is None else fn_keep(self.keep.expand(self._lead))
        return Outer(row, col, keep, lead)

    def reshape(self, *shape) -> Runs:
        lead = self._sizes(shape)
        if -1 in lead or lead[-2:] != list(self._lead[-2:]):
            return self.full().reshape(*shape)
        i, j = self._lead[-2:]
        before = self._lead[:-2]

        def factor(r, which):
            here = (i, 1) if which == 1 else (1, j)
            return r.expand(*before, *here, self.n).reshape(*lead[:-2], *here, self.n)

        return self._batch(lead, factor, lambda k: k.reshape(lead))

    view = reshape

    def expand(self, *shape) -> Runs:
        lead = self._sizes(shape)
        if len(lead) < len(self._lead) or list(lead[-2:]) != list(self._lead[-2:]):
            return self.full().expand(*shape)
        extra = len(lead) - len(self._lead)
        lead = [o if s == -1 else s for s, o in zip(lead, [1] * extra + list(self._lead),
                                                    strict=True)]
        i, j = lead[-2:]

        def factor(r, which):
            here = (i, 1) if which == 1 else (1, j)
            r = r.reshape(*([1] * extra), *r.shape)
            return r.expand(*lead[:-2], *here, self.n)

        return self._batch(lead, factor, lambda k: k.expand(lead))

    def unsqueeze(self, axis: int) -> Runs:
        a = axis % (self.dim() + 1)
        if a >= self.dim() - 2:  # among the matrix's axes, or after them
            return self.full().unsqueeze(axis)
        lead = list(self._lead)
        lead.insert(a, 1)
        return self.reshape(*lead, self.n)

    def squeeze(self, axis: int) -> Runs:
        a = self._axis(axis)
        if a >= self.dim() - 3 or self._lead[a] != 1:
            return self.full().squeeze(axis)
        lead = list(self._lead)
        del lead[a]
        return self.reshape(*lead, self.n)

    def clone(self) -> Runs:
        return self.full().clone()

    def __repr__(self) -> str:
        return f"Outer(shape={tuple(self.shape)})"


# -- what deps asks of a factored summary --------------------------------------------------------
def pairs_of(lead) -> int:
    return int(lead[-1]) * int(lead[-2]) if len(lead) >= 2 else 0


def factored(parts: list[Runs]) -> Outer | None:
    """The union of ``parts`` (plain runs, aligned) as an :class:`Outer`, when each is broadcast
    along one of the last two axes, some along each (``q @ k^T``), and the matrix is big."""
    if any(isinstance(p, Outer) or p.dim() < 3 for p in parts):
        return None
    lead = torch.broadcast_shapes(*[p.shape[:-1] for p in parts])
    if pairs_of(lead) < MIN_PAIRS:
        return None
    rows = [p for p in parts if p.shape[-2] == 1]
    cols = [p for p in parts if p.shape[-2] != 1 and p.shape[-3] == 1]
    if len(rows) + len(cols) != len(parts) or not cols or all(p.shape[-3] == 1 for p in rows):
        return None
    row = rows[0] if len(rows) == 1 else R.union(rows)
    col = cols[0] if len(cols) == 1 else R.union(cols)
    return Outer(row, col, None, lead)


def masked(d: Runs, keep: torch.Tensor) -> Outer | None:
    """``d`` restricted by ``keep`` as an :class:`Outer` when ``keep`` would spread ``d`` over
    a big matrix it is broadcast on (a softmax's output under its mask), else None."""
    if isinstance(d, Outer):
        lead = torch.broadcast_shapes(d._lead, keep.shape)
        both = keep if d.keep is None else d.keep & keep
        return Outer(d.row, d.col, both, lead)
    if d.dim() < 3:
        return None
    lead = torch.broadcast_shapes(d.shape[:-1], keep.shape)
    if len(lead) > d.dim() - 1:
        d = d.reshape(*([1] * (len(lead) - d.dim() + 1)), *d.shape)
    if pairs_of(lead) < MIN_PAIRS or lead[-2:] == d.shape[-3:-1]:
        return None
    if d.shape[-2] == 1 and lead[-1] > 1:
        return Outer(d, None, keep, lead)
    if d.shape[-3] == 1 and lead[-2] > 1:
        return Outer(None, d, keep, lead)
    return None


def live(o: Outer) -> torch.Tensor:
    if o._live is None:
        found = None
        for f in (o.row, o.col):
            if f is not None:
                here = R.live(f)
                found = here if found is None else found | here
        if o.keep is not None:
            found = found & o.keep
        o._live = found.expand(o._lead)
    return o._live


def union_over_last(o: Outer, attend) -> Runs:
    """The union over the matrix's last axis (a softmax's, a product's ``k``): ``(..., I, 1)``,
    plain. ``attend(pattern, summary, axis)`` is :func:`deps.attend`."""
    from .deps import Pattern

    nd = o.dim() - 1
    parts = []
    if o.row is not None:
        row = o.row
        if o.keep is not None:
            row = R.restrict(row, o.keep.any(-1, keepdim=True))
        parts.append(row)
    if o.col is not None:
        col = o.col.transpose(nd - 2, nd - 1)  # (..., J, 1): the keys along an axis
        if o.keep is None:
            parts.append(R.merged(col, [nd - 2]))
        else:
            parts.append(attend(Pattern(o.keep), col, nd - 2))
    lead = list(o._lead[:-1]) + [1]
    parts = [p.expand(*lead, o.n) if p.dim() - 1 == nd else p for p in parts]
    return parts[0] if len(parts) == 1 else R.union(parts)


def joined(o: Outer, others: list[Runs]) -> Runs:
    """``o`` united with plain summaries: folded into a factor where it is broadcast the same
    way and ``o`` has no mask; materialized otherwise (exact either way)."""
    if o.keep is None:
        row, col = o.row, o.col
        for p in others:
            if p.dim() != o.dim() or isinstance(p, Outer):
                break
            if p.shape[-2] == 1:
                row = p if row is None else R.union([row, p])
            elif p.shape[-3] == 1:
                col = p if col is None else R.union([col, p])
            else:
                break
        else:
            lead = torch.broadcast_shapes(o._lead, *[p.shape[:-1] for p in others])
            return Outer(row, col, None, lead)
    return R.union([o.full()] + [p.full() if isinstance(p, Outer) else p for p in others])
