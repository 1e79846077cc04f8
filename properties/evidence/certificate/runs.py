"""Run-form dependency summaries: the set of input positions of each element as a few runs.

A dense summary holds one bit per (element, input position): ``positions x inputs`` bits for a
transformer's activations, the square of the length. The sets real models produce are
prefixes (causal attention), windows (sliding attention, convolutions), document blocks,
strided sets with holes (the lecture's dilated net: 16 inputs over a span of 31) and their
unions: a handful of runs ``[lo, hi)`` each. :class:`Runs` stores them as two int tensors
``lo, hi`` of shape ``(*S', R)``: the element axes of the dense form (broadcast axes of size 1
alike), and ``R`` runs per element, the most any element needs. Element ``e`` may depend on
input ``s`` iff ``lo[e, r] <= s < hi[e, r]`` for some ``r``; a run with ``lo >= hi`` is empty.

Invariant: the runs of one element are disjoint (in any order). Unions sort and merge them
(:func:`canonical`). An element that would need more than :data:`CAP` runs keeps ``CAP``: the
smallest gaps between its runs are filled, a superset (sound: a summary is an upper bound; only
holes are lost, never a dependency, and never a reach beyond the set's extremes).

For the rules, a :class:`Runs` looks like the dense tensor it stands for where the elements
move: ``shape`` ends with ``n`` (the inputs' axis), and the methods that move elements
(``reshape``, ``expand``, ``permute``, ``narrow``...) take the dense form's arguments. Anything
that reads the bits (``&``, ``any``, a matrix product) does not exist here: a rule that needs it
is either written with :mod:`.deps`' helpers or run on the dense form (see ``rules.base``).
"""

import torch

CAP = 64  # runs per element at most (the dilated net needs 16, a 2D field one per row)
INT = torch.int32


class Runs:
    """The summary of a tensor of shape ``S`` over ``n`` input positions, in runs."""

    __slots__ = ("lo", "hi", "n", "_live", "__weakref__")

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, n: int):
        self.lo, self.hi, self.n = lo, hi, n
        self._live = None

    # -- the dense form's geometry --------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size(tuple(self.lo.shape[:-1]) + (self.n,))

    @property
    def runs(self) -> int:
        return self.lo.shape[-1]

    def dim(self) -> int:
        return self.lo.dim()

    def stride(self, axis: int) -> int:
        """0 where both bounds are broadcast along ``axis`` (``compress`` reads it)."""
        axis = self._axis(axis)
        return 0 if self.lo.stride(axis) == 0 and self.hi.stride(axis) == 0 else 1

    def numel(self) -> int:
        return self.lo.numel()

    def map(self, fn) -> "Runs":
        """``fn`` applied to both bounds: an op that moves elements, the runs riding along."""
        return Runs(fn(self.lo), fn(self.hi), self.n)

    def _axis(self, axis: int) -> int:
        """A leading (element) axis; the inputs' axis cannot be moved."""
        a = axis % self.dim()
        if a == self.dim() - 1:
            raise ValueError("the inputs' axis of a run-form summary does not move")
        return a

    def _sizes(self, shape) -> list[int]:
        sizes = list(shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)
        if not sizes or sizes[-1] not in (self.n, -1):
            raise ValueError(f"a summary's last axis is its {self.n} inputs, not {sizes[-1:]}")
        return sizes[:-1]

    # -- element moves, in the dense form's coordinates ----------------------------------------
    def reshape(self, *shape) -> "Runs":
        lead = self._sizes(shape)
        return self.map(lambda t: t.reshape(*lead, t.shape[-1]))

    view = reshape

    def expand(self, *shape) -> "Runs":
        lead = self._sizes(shape)
        return self.map(lambda t: t.expand(*lead, t.shape[-1]))

    def narrow(self, axis: int, start: int, length: int) -> "Runs":
        a = self._axis(axis)
        return self.map(lambda t: t.narrow(a, start, length))

    def select(self, axis: int, index: int) -> "Runs":
        a = self._axis(axis)
        return self.map(lambda t: t.select(a, index))

    def permute(self, *dims) -> "Runs":
        dims = list(dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)
        dims = [d % self.dim() for d in dims]
        if dims[-1] != self.dim() - 1:
            raise ValueError("the inputs' axis of a run-form summary stays last")
        return self.map(lambda t: t.permute(*dims))

    def transpose(self, a: int, b: int) -> "Runs":
        a, b = self._axis(a), self._axis(b)
        return self.map(lambda t: t.transpose(a, b))

    def movedim(self, source: int, destination: int) -> "Runs":
        s, d = self._axis(source), self._axis(destination)
        return self.map(lambda t: t.movedim(s, d))

    def unsqueeze(self, axis: int) -> "Runs":
        a = axis % (self.dim() + 1)
        if a == self.dim():
            raise ValueError("an axis after a summary's inputs")
        return self.map(lambda t: t.unsqueeze(a))

    def squeeze(self, axis: int) -> "Runs":
        a = self._axis(axis)
        return self.map(lambda t: t.squeeze(a))

    def flip(self, dims) -> "Runs":
        dims = [self._axis(d) for d in dims]
        return self.map(lambda t: t.flip(dims))

    def index_select(self, axis: int, index: torch.Tensor) -> "Runs":
        a = self._axis(axis)
        return self.map(lambda t: t.index_select(a, index))

    def repeat_interleave(self, repeats: int, dim: int) -> "Runs":
        a = self._axis(dim)
        return self.map(lambda t: t.repeat_interleave(repeats, dim=a))

    def clone(self) -> "Runs":
        return self.map(torch.clone)

    def __getitem__(self, index) -> "Runs":
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index) or sum(i is not None for i in index) >= self.dim():
            raise ValueError("a run-form summary is indexed on its element axes only")
        return self.map(lambda t: t[index])

    def __repr__(self) -> str:
        return f"Runs(shape={tuple(self.shape)}, runs={self.runs})"


# -- construction and conversion ---------------------------------------------------------------
def positions(index: torch.Tensor, n: int) -> Runs:
    """Element ``e`` depends on input ``index[e]`` alone (the model's input)."""
    lo = index.to(INT).unsqueeze(-1)
    return Runs(lo, lo + 1, n)


def nothing(shape, n: int) -> Runs:
    """No dependency at all, broadcast at ``shape``."""
    empty = torch.full((1,) * len(shape) + (1,), n, dtype=INT)
    return Runs(empty.expand(*shape, 1), empty.expand(*shape, 1), n)


def to_dense(r: Runs) -> torch.Tensor:
    """The dense form ``(*S', n)`` bool (a difference array, summed along the inputs)."""
    lead = r.lo.shape[:-1]
    lo, hi = r.lo.reshape(-1, r.runs).long(), r.hi.reshape(-1, r.runs).long()
    live = (lo < hi).to(torch.int16)
    steps = torch.zeros(lo.shape[0], r.n + 1, dtype=torch.int16)
    steps.scatter_add_(1, lo.clamp(0, r.n), live)
    steps.scatter_add_(1, hi.clamp(0, r.n), -live)
    return (steps.cumsum(1, dtype=torch.int16)[:, : r.n] > 0).reshape(*lead, r.n)


def from_dense(d: torch.Tensor) -> Runs:
    """The runs of a dense summary (maximal runs of true bits, capped)."""
    n = d.shape[-1]
    lead = d.shape[:-1]
    flat = d.reshape(-1, n)
    pad = torch.zeros(flat.shape[0], 1, dtype=torch.bool)
    before = torch.cat([pad, flat[:, :-1]], 1)
    after = torch.cat([flat[:, 1:], pad], 1)
    found = [(flat & ~before).nonzero(as_tuple=True), (flat & ~after).nonzero(as_tuple=True)]
    count = torch.bincount(found[0][0], minlength=flat.shape[0])
    width = max(1, int(count.max()) if len(count) else 1)
    lo = torch.full((flat.shape[0], width), n, dtype=INT)
    hi = torch.full((flat.shape[0], width), n, dtype=INT)
    offsets = count.cumsum(0) - count  # where each row's runs begin among all runs
    for (rows, cols), out, shift in zip(found, (lo, hi), (0, 1), strict=True):
        slot = torch.arange(len(rows)) - offsets[rows]  # row-major: a row's runs in order
        out[rows, slot] = cols.to(INT) + shift
    lo, hi = _capped(lo, hi, count, n)
    return Runs(lo.reshape(*lead, -1), hi.reshape(*lead, -1), n)


# -- arithmetic ----------------------------------------------------------------------------------
def canonical(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted, merged runs (overlapping or adjacent ones become one), empties last as
    ``[n, n)``, as few columns as the fullest element needs (at most :data:`CAP`)."""
    empty = lo >= hi
    if lo.shape[-1] > 1:
        hull = _hull(lo, hi, empty, n)
        if hull is not None:
            return hull
    lo = torch.where(empty, n, lo)
    hi = torch.where(empty, n, hi)
    if lo.shape[-1] <= 1:
        return lo, hi
    lo, order = lo.sort(-1)
    hi = hi.gather(-1, order)
    reach = hi.cummax(-1).values  # the furthest stop among the runs up to this one
    before = torch.cat([torch.full_like(reach[..., :1], -1), reach[..., :-1]], -1)
    start = (lo > before) & (lo < n)  # a new run begins after a gap (empties never do)
    count = start.sum(-1)
    width = max(1, int(count.max()) if count.numel() else 1)
    group = (start.cumsum(-1) - 1).clamp(min=0)
    group = torch.where(lo < n, group, width)  # empties go to a column dropped below
    out_lo = torch.full((*lo.shape[:-1], width + 1), n, dtype=lo.dtype)
    out_hi = torch.full((*lo.shape[:-1], width + 1), -1, dtype=lo.dtype)
    out_lo.scatter_reduce_(-1, group.long(), lo, "amin")
    out_hi.scatter_reduce_(-1, group.long(), hi, "amax")
    out_lo, out_hi = out_lo[..., :width], out_hi[..., :width]
    out_hi = torch.where(out_hi < 0, n, out_hi)
    return _capped(out_lo, out_hi, count, n)


def _hull(lo, hi, empty, n):
    """The one-run union when, in every element, the runs share a point (the common case: a
    residual stream's prefix united with another prefix), else None. No sort needed."""
    low = torch.where(empty, n, lo).amin(-1, keepdim=True)
    high = torch.where(empty, -1, hi).amax(-1, keepdim=True)
    latest_start = torch.where(empty, -1, lo).amax(-1, keepdim=True)
    earliest_stop = torch.where(empty, n + 1, hi).amin(-1, keepdim=True)
    if not bool((latest_start <= earliest_stop).all()):
        return None
    none = high < 0  # every run empty
    return torch.where(none, n, low), torch.where(none, n, high)


def _capped(lo, hi, count, n):
    """At most :data:`CAP` runs per element: fill the smallest gaps of the elements with more
    (sorted, merged runs in; the first ``count`` columns of each element are its runs)."""
    if lo.shape[-1] <= CAP:
        return lo, hi
    gaps = (lo[..., 1:] - hi[..., :-1]).long()
    slots = torch.arange(gaps.shape[-1])
    gaps = torch.where(slots < (count[..., None] - 1), gaps, torch.iinfo(torch.int64).max)
    rank = gaps.argsort(dim=-1, stable=True).argsort(dim=-1)
    fill = rank < (count[..., None] - CAP).clamp(min=0)  # the smallest gaps of each element
    keep_start = torch.cat([torch.ones_like(fill[..., :1]), ~fill], -1)
    valid = torch.arange(lo.shape[-1]) < count[..., None]
    start = keep_start & valid
    group = torch.where(valid, start.cumsum(-1) - 1, CAP)
    out_lo = torch.full((*lo.shape[:-1], CAP + 1), n, dtype=lo.dtype)
    out_hi = torch.full((*lo.shape[:-1], CAP + 1), -1, dtype=lo.dtype)
    out_lo.scatter_reduce_(-1, group, lo, "amin")
    out_hi.scatter_reduce_(-1, group, hi, "amax")
    out_lo, out_hi = out_lo[..., :CAP], out_hi[..., :CAP]
    return out_lo, torch.where(out_hi < 0, n, out_hi)


def widened(r: Runs, width: int) -> Runs:
    """``r`` with empty runs appended up to ``width`` columns."""
    if r.runs >= width:
        return r
    extra = width - r.runs
    return Runs(torch.nn.functional.pad(r.lo, (0, extra), value=r.n),
                torch.nn.functional.pad(r.hi, (0, extra), value=r.n), r.n)


def union(parts: list[Runs]) -> Runs:
    """Elementwise union, the parts broadcast against each other (aligned already)."""
    first = parts[0]
    if all(p is first for p in parts):
        return first
    if len(parts) == 2 and _same(parts[0], parts[1]):
        return first
    lead = torch.broadcast_shapes(*[p.lo.shape[:-1] for p in parts])
    lo = torch.cat([p.lo.expand(*lead, p.runs) for p in parts], -1)
    hi = torch.cat([p.hi.expand(*lead, p.runs) for p in parts], -1)
    return Runs(*canonical(lo, hi, first.n), first.n)


def _same(a: Runs, b: Runs) -> bool:
    return a.lo.shape == b.lo.shape and bool(torch.equal(a.lo, b.lo)) and \
        bool(torch.equal(a.hi, b.hi))


def merged(r: Runs, axes: list[int]) -> Runs:
    """The union over element ``axes`` (kept, at size 1): their runs become one element's."""
    if not axes:
        return r
    nd = r.dim() - 1
    rest = [a for a in range(nd) if a not in axes]
    order = rest + list(axes) + [nd]

    def gathered(t):
        t = t.permute(*order)
        return t.reshape(*t.shape[: len(rest)], -1)

    lo, hi = canonical(gathered(r.lo), gathered(r.hi), r.n)
    for a in sorted(axes):  # back at their places, size 1
        lo, hi = lo.unsqueeze(a), hi.unsqueeze(a)
    return Runs(lo, hi, r.n)


def columns(r: Runs, n: int) -> Runs:
    """``r`` over inputs ``[0, n)`` only (``n <= r.n``): each run cut at ``n``. The runs stay
    disjoint; one wholly beyond becomes ``[n, n)``, empty."""
    return Runs(r.lo.clamp(max=n), r.hi.clamp(max=n), n)


def union_dense(r: Runs) -> torch.Tensor:
    """The union of every element's runs as a dense ``(n,)`` row: one difference array over all
    runs (``O(elements x runs + n)``, no sort), what a row of ``everything`` is in bits."""
    lo, hi = r.lo.reshape(-1).long(), r.hi.reshape(-1).long()
    live = (lo < hi).long()
    steps = torch.zeros(r.n + 1, dtype=torch.long)
    steps.scatter_add_(0, lo.clamp(0, r.n), live)
    steps.scatter_add_(0, hi.clamp(0, r.n), -live)
    return steps.cumsum(0)[: r.n] > 0


def live(r: Runs) -> torch.Tensor:
    """Per element: whether it depends on anything (cached: summaries flow through many ops)."""
    if r._live is None:
        r._live = (r.hi > r.lo).any(-1)
    return r._live


def restrict(r: Runs, keep: torch.Tensor) -> Runs:
    """The elements ``keep`` marks keep their runs, the others none (broadcast)."""
    hi = torch.where(keep.unsqueeze(-1), r.hi, r.lo)
    return Runs(r.lo.expand_as(hi), hi, r.n)


def cat(parts: list[Runs], axis: int) -> Runs:
    width = max(p.runs for p in parts)
    parts = [widened(p, width) for p in parts]
    return Runs(torch.cat([p.lo for p in parts], axis), torch.cat([p.hi for p in parts], axis),
                parts[0].n)


def pad(r: Runs, spec: list[int]) -> Runs:
    """Constant padding (or cropping) of the element axes: padded elements depend on nothing."""
    f = torch.nn.functional.pad
    return Runs(f(r.lo, [0, 0] + spec, value=r.n), f(r.hi, [0, 0] + spec, value=r.n), r.n)


def prefix_unions(r: Runs, axis: int) -> Runs:
    """Element ``i`` along ``axis`` gets the union of elements ``0..i`` (a running union, in
    ``log2`` steps of unions with shifted copies)."""
    step = 1
    size = r.shape[axis]
    while step < size:
        shifted = pad(r.narrow(axis, 0, size - step), _spec(r.dim() - 1, axis, step, 0))
        r = union([r, shifted])
        step *= 2
    return r


def _spec(nd: int, axis: int, before: int, after: int) -> list[int]:
    """``F.pad``'s list for ``before``/``after`` elements on element axis ``axis`` of ``nd``."""
    spec = [0, 0] * (nd - 1 - axis) + [before, after]
    return spec


# -- unions over ranges of an axis (attention, products with a constant pattern) ---------------
def range_unions(r: Runs, axis: int, starts: torch.Tensor, stops: torch.Tensor) -> Runs:
    """``out[..., i, ...]`` = the union of ``r`` along ``axis`` over the index ranges
    ``[starts[..., i, m], stops[..., i, m])`` (``m``: a few ranges per output; an empty range
    adds nothing). ``starts``/``stops``: ``(*B, L, M)``, ``B`` broadcast against ``r``'s axes
    before ``axis``. A sparse table of unions over power-of-two windows answers each range
    with two of its entries: ``O(S log S)`` unions in all, not ``L x S``."""
    axis = r._axis(axis)
    size = r.shape[axis]
    levels = [r]
    while 2 ** len(levels) <= size:
        prev, half = levels[-1], 2 ** (len(levels) - 1)
        count = prev.shape[axis] - half
        levels.append(union([prev.narrow(axis, 0, count), prev.narrow(axis, half, count)]))
    width = max(level.runs for level in levels)
    nd = r.dim() - 1
    # every level padded to ``size`` along the axis, the levels side by side along it
    table = cat([pad(widened(t, width), _spec(nd, axis, 0, size - t.shape[axis]))
                 for t in levels], axis)
    starts, stops = starts.long().clamp(0, size), stops.long().clamp(0, size)
    length = (stops - starts).clamp(min=0)
    level = _floor_log2(length).clamp(max=len(levels) - 1)
    first = level * size + starts.clamp(max=max(size - 1, 0))
    second = level * size + (stops - 2 ** level).clamp(0, max(size - 1, 0))
    hit = _along(length > 0, r, axis)
    ends = [restrict(_take(table, axis, i), hit) for i in (first, second)]
    out = union(ends)  # (..., L, M, ...)
    return merged(out, [axis + 1]).squeeze(axis + 1)


def _floor_log2(x: torch.Tensor) -> torch.Tensor:
    """``floor(log2(x))`` of positive ints, exactly (0 for 0)."""
    level = torch.floor(torch.log2(x.clamp(min=1).double())).long()
    level = torch.where(2 ** (level + 1) <= x, level + 1, level)
    return torch.where((2 ** level > x) & (level > 0), level - 1, level)


def _take(table: Runs, axis: int, index: torch.Tensor) -> Runs:
    """``table`` at ``index`` (``(*B, L, M)``) along ``axis``: ``(..., L, M, ...)``."""
    lead = index.shape[:-2]
    length, m = index.shape[-2:]

    def pick(t):
        before = t.shape[:axis]
        b = torch.broadcast_shapes(before, lead)
        t = t.expand(*b, *t.shape[axis:])
        rest = t.shape[axis + 1 :]
        flat = index.reshape(*lead, length * m).expand(*b, length * m)
        idx = flat.reshape(*b, length * m, *([1] * len(rest))).expand(*b, length * m, *rest)
        return t.gather(axis, idx).reshape(*b, length, m, *rest)

    return table.map(pick)


def _along(mask: torch.Tensor, r: Runs, axis: int) -> torch.Tensor:
    """A ``(*B, L, M)`` mask laid out against ``(..., L, M, rest...)`` element axes."""
    rest = r.dim() - 1 - axis - 1
    return mask.reshape(*mask.shape, *([1] * rest))


# -- queries on rows (the bound) ------------------------------------------------------------------
def sizes(r: Runs) -> torch.Tensor:
    """Inputs per element (the runs are disjoint)."""
    return (r.hi.long() - r.lo.long()).clamp(min=0).sum(-1)


class RankTable:
    """Range minimum and maximum of the subject's ranks over index runs, in ``O(1)`` per run
    after ``O(N log N)``: which rank an element reaches furthest, and nearest."""

    def __init__(self, ranks: torch.Tensor):
        self.n = len(ranks)
        self.identity = bool(torch.equal(ranks, torch.arange(self.n)))
        self.low, self.high = [ranks.long()], [ranks.long()]
        k = 1
        while 2 * k <= self.n:
            lo, hi = self.low[-1], self.high[-1]
            self.low.append(torch.minimum(lo[:-k], lo[k:]))
            self.high.append(torch.maximum(hi[:-k], hi[k:]))
            k *= 2

    def extremes(self, r: Runs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per element, the smallest and largest rank of its inputs (``n`` and -1 if none)."""
        lo, hi = r.lo.long(), r.hi.long()
        empty = lo >= hi
        if self.identity:
            low = torch.where(empty, self.n, lo).amin(-1)
            high = torch.where(empty, -1, hi - 1).amax(-1)
            return low, high
        length = (hi - lo).clamp(min=1)
        level = _floor_log2(length).clamp(max=len(self.low) - 1)
        low = torch.full(lo.shape, self.n, dtype=torch.long)
        high = torch.full(lo.shape, -1, dtype=torch.long)
        for k in range(len(self.low)):
            pick = (level == k) & ~empty
            if not bool(pick.any()):
                continue
            last = len(self.low[k]) - 1
            a = lo.clamp(0, last)
            b = (hi - 2 ** k).clamp(0, last)
            low = torch.where(pick, torch.minimum(self.low[k][a], self.low[k][b]), low)
            high = torch.where(pick, torch.maximum(self.high[k][a], self.high[k][b]), high)
        return low.amin(-1), high.amax(-1)


def contains(r: Runs, index: torch.Tensor) -> torch.Tensor:
    """Per element ``e`` (leading axes), whether it depends on input ``index[e]``."""
    i = index.to(r.lo.dtype).unsqueeze(-1)
    return ((r.lo <= i) & (i < r.hi)).any(-1)
