"""Dependency summaries: which input positions each element of a tensor may depend on.

A summary of a tensor of shape ``S`` has ``len(S) + 1`` axes: axis ``i`` has size ``S[i]`` or 1
(*broadcast*: every index along it has the same dependencies), and the last axis stands for the
``N`` input positions. ``D[e, n]`` true means element ``e`` *may* depend on input position
``n``; false is a proof that it does not, for any input value. ``None`` is the summary of a
constant (no dependency at all: parameters, buffers, masks).

Two forms, one meaning:

- **dense**: a bool tensor whose last axis has size ``N``. Simple and exact; it costs
  ``positions x N`` bits, the square of the length for a sequence model.
- **runs** (:class:`~.runs.Runs`): per element, a few disjoint runs ``[lo, hi)`` of input
  positions, as many as the fullest element needs. Prefixes, windows, blocks, strided sets and
  their unions stay a few runs each, so causal attention, sliding windows and convolutions stay
  linear in the length; an element that would need more than ``runs.CAP`` runs is widened
  (gaps filled: a superset, sound).

The form is chosen once per certificate (:func:`form_for`: dense up to ``DENSE_LIMIT``
positions, runs beyond; :func:`forced` overrides it, for tests) and every summary of a run
has it. The helpers below take either form and return the same form; a rule written with them
(and with the element moves both forms share: ``reshape``, ``expand``, ``permute``,
``narrow``...) works on both. A rule that reads bits directly is run on the dense form by the
tracer (``rules.base.through_dense``): sound, and slower.

Broadcast axes keep the cost at position granularity: after a dense linear layer every feature
of a position depends on the same inputs, so a ``(B, T, D)`` activation costs ``T`` summaries,
not ``T x D``; element-level summaries are kept where they matter (MADE's features).
"""

import os
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from . import outer as O
from . import runs as R
from .outer import Outer
from .runs import Runs

Deps = torch.Tensor | Runs | None

DENSE = "dense"
RUNS = "runs"
FORMS = (DENSE, RUNS)
DENSE_LIMIT = 2048  # positions up to which a certificate uses the dense form
ENVIRONMENT = "CAUSAL_AUDIT_SUMMARIES"  # dense|runs: every certificate in that form

_forced: ContextVar[str | None] = ContextVar("summary_form", default=None)


def form_for(n: int) -> str:
    """The form of a certificate over ``n`` input positions."""
    chosen = _forced.get() or os.environ.get(ENVIRONMENT) or None
    if chosen is not None:
        if chosen not in FORMS:
            raise ValueError(f"{ENVIRONMENT}={chosen!r}: expected one of {', '.join(FORMS)}")
        return chosen
    return DENSE if n <= DENSE_LIMIT else RUNS


@contextmanager
def forced(form: str | None):
    """Every certificate inside uses ``form`` (None: the automatic choice)."""
    if form is not None and form not in FORMS:
        raise ValueError(f"unknown summary form {form!r}: expected one of {', '.join(FORMS)}")
    token = _forced.set(form)
    try:
        yield
    finally:
        _forced.reset(token)


def is_runs(d: Deps) -> bool:
    return isinstance(d, Runs)


def inputs(index: torch.Tensor, n: int, form: str) -> Deps:
    """The model's input: element ``e`` depends on input position ``index[e]`` alone."""
    if form == RUNS:
        return R.positions(index, n)
    return torch.nn.functional.one_hot(index.reshape(-1), n).bool().reshape(*index.shape, n)


def in_form(d: Deps, like: Deps | str) -> Deps:
    """``d`` in the form of ``like`` (a summary, or a form's name)."""
    runs = like == RUNS if isinstance(like, str) else is_runs(like)
    if d is None or is_runs(d) == runs:
        return d
    return R.from_dense(d) if runs else R.to_dense(d)


def dense(d: Deps) -> torch.Tensor | None:
    """The dense form (``None`` stays ``None``)."""
    return R.to_dense(d) if is_runs(d) else d


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


def all_live(d: Deps) -> bool:
    """Whether every element of the summary depends on some input (cached per summary: the
    same summary object flows through many ops of a transformer)."""
    if is_runs(d):
        return bool(live(d).all())
    found = _ALL_LIVE.get(d)
    if found is None:
        found = bool(d.any(-1).all())
        _ALL_LIVE[d] = found
    return found


def live(d: Deps) -> torch.Tensor:
    """Per element (the summary's element axes): whether it depends on anything."""
    if isinstance(d, Outer):
        return O.live(d)
    return R.live(d) if is_runs(d) else d.any(-1)


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
    if is_runs(first):
        present = [in_form(p, first) for p in present]
        factors = [p for p in present if isinstance(p, Outer)]
        if factors:
            return O.joined(factors[0], [p for p in present if p is not factors[0]])
        found = O.factored(present)  # q @ k^T: a query's union a key's, kept apart
        return found if found is not None else compress(R.union(present))
    out = first
    for p in present[1:]:
        out = out | dense(p)
    return compress(out)


def union_rows(rows: list[Deps]) -> Deps:
    """The union of ``(N,)`` rows (:func:`everything`'s)."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    if is_runs(rows[0]):
        return R.union([in_form(r, rows[0]) for r in rows])
    return torch.stack([dense(r) for r in rows]).any(0)


def columns(d: Deps, n: int) -> Deps:
    """``d`` over its first ``n`` columns only (the input positions, without the tracer's
    unknown-origin slots after them)."""
    if d is None or d.shape[-1] == n:
        return d
    return R.columns(d, n) if is_runs(d) else d[..., :n]


def expanded(d: Deps, shape) -> Deps:
    """A stride-0 view of ``d`` at the tensor's full shape (no memory)."""
    return d.expand(*shape, d.shape[-1])


def full_on(d: Deps, shape, axes) -> Deps:
    """``d`` expanded on ``axes`` only (the others keep their broadcast size)."""
    sizes = list(d.shape)
    for a in axes:
        sizes[a] = shape[a]
    return d.expand(*sizes)


def move(d: Deps, fn) -> Deps:
    """``fn`` applied to the summary as to a tensor whose last axis rides along (a slice, a
    gather, a roll...): the dense tensor itself, or both bounds of the runs."""
    if d is None:
        return None
    return d.map(fn) if is_runs(d) else fn(d)


def any_over(d: Deps, axes, keepdim: bool = True) -> Deps:
    """Union over ``axes`` (an element of the reduction depends on every reduced element)."""
    if d is None:
        return None
    axes = sorted({a % (d.dim() - 1) for a in axes})
    if isinstance(d, Outer) and d.dim() - 2 in axes:  # over the keys: without the matrix
        d = O.union_over_last(d, attend)
    reduced = [a for a in axes if d.shape[a] > 1]
    if reduced:
        d = R.merged(d, reduced) if is_runs(d) else d.any(dim=tuple(reduced), keepdim=True)
    if not keepdim:
        for a in reversed(axes):
            d = d.squeeze(a)
    return d


def everything(d: Deps) -> Deps:
    """The union over all elements, as an ``(N,)`` row (``None`` for a constant)."""
    if d is None:
        return None
    if is_runs(d):
        return any_over(d, list(range(d.dim() - 1)), keepdim=False)
    return d.reshape(-1, d.shape[-1]).any(0)


def everything_dense(d: Deps) -> torch.Tensor | None:
    """:func:`everything` as a dense ``(N,)`` bool row, in either form (a run-form summary's
    union without sorting its runs: the tracer's rows are dense)."""
    if d is None:
        return None
    if is_runs(d) and not isinstance(d, Outer):  # (a factored matrix: without materializing)
        return R.union_dense(d)
    return dense(everything(d))


def restrict(d: Deps, keep: torch.Tensor) -> Deps:
    """``d`` where ``keep`` (a bool tensor of element axes, broadcast) is true, nothing
    elsewhere."""
    if d is None:
        return None
    if bool(keep.all()):
        return d
    keep = _alike(keep, d)
    if is_runs(d):
        factored = O.masked(d, keep)  # a softmax's weights: a row's summary where unmasked
        return factored if factored is not None else compress(R.restrict(d, keep))
    return d & keep.unsqueeze(-1)


def _alike(keep: torch.Tensor, d: Deps) -> torch.Tensor:
    """``keep`` at size 1 along the axes where the summary is broadcast and ``keep`` is the same
    at every index (RoPE's ``sin`` is zero at position 0 for every feature): the result then
    stays broadcast there, instead of one summary per feature."""
    nd = d.dim() - 1
    for axis in range(keep.dim()):
        a = axis + nd - keep.dim()  # the summary's axis, right-aligned
        if keep.shape[axis] > 1 and (a < 0 or d.shape[a] == 1):
            first = keep.narrow(axis, 0, 1)
            if bool((keep == first).all()):
                keep = first
    return keep


def nothing(shape, like: Deps) -> Deps:
    """A summary of no dependency at all, broadcast at ``shape``, in ``like``'s form."""
    n = like.shape[-1]
    if is_runs(like):
        return R.nothing(shape, n)
    return torch.zeros(1, dtype=torch.bool).expand(*shape, n)


def cat(parts: list[Deps], axis: int) -> Deps:
    """Summaries side by side along an element axis (all present, one form)."""
    if is_runs(parts[0]):
        return R.cat([in_form(p, parts[0]) for p in parts], axis)
    return torch.cat([dense(p) for p in parts], axis)


def pad(d: Deps, spec: list[int]) -> Deps:
    """Constant padding (negative: cropping) of element axes, ``F.pad``'s ``spec`` for the
    tensor; padded elements depend on nothing."""
    if is_runs(d):
        return R.pad(d, list(spec))
    return torch.nn.functional.pad(d, [0, 0] + list(spec), value=False)


def cumulative(d: Deps, axis: int) -> Deps:
    """Element ``i`` along ``axis`` gets the union of elements ``0..i`` (a running sum's)."""
    if is_runs(d):
        return R.prefix_unions(d, axis)
    return d.to(torch.uint8).cummax(axis).values.bool()


def attend(allowed: "Pattern", d: Deps, axis: int) -> Deps:
    """``out[..., i, ...]`` = the union of ``d`` along element axis ``axis`` (size ``S``) over
    the indices ``j`` that ``allowed`` (``(..., L, S)``, its leading axes broadcast against
    ``d``'s axes before ``axis``) marks for ``i``: attention's keys, a product's live terms."""
    allowed = allowed.leading(axis)
    if is_runs(d):
        starts, stops = allowed.ranges()
        return compress(R.range_unions(d, axis, starts, stops))
    mask = allowed.dense().float()  # (*before, L, S)
    flat = d.reshape(*d.shape[: axis + 1], -1).float()  # (*before, S, rest * N)
    out = (mask @ flat) > 0  # (*before, L, rest * N)
    return compress(out.reshape(*out.shape[:-1], *d.shape[axis + 1 :]))


class Pattern:
    """Which of ``S`` indices each of ``L`` outputs reads (``(..., L, S)``), as a dense bool
    mask or as ranges per row (``starts``, ``stops``: ``(..., L, M)``); either form is made
    from the other when asked. A causal pattern is born as ranges: no ``L x S`` mask at a
    length where it would not fit."""

    def __init__(self, mask: torch.Tensor | None = None, ranges=None, keys: int | None = None):
        self._mask = mask
        self._ranges = ranges
        self.keys = mask.shape[-1] if mask is not None else keys

    @classmethod
    def causal(cls, length_q: int, length_k: int) -> "Pattern":
        """Key ``j`` for query ``i`` when ``j <= i`` (SDPA's ``is_causal``: top-left)."""
        starts = torch.zeros(length_q, 1, dtype=torch.long)
        stops = (torch.arange(length_q) + 1).clamp(max=length_k).reshape(length_q, 1)
        return cls(ranges=(starts, stops), keys=length_k)

    def dense(self) -> torch.Tensor:
        if self._mask is None:
            starts, stops = self._ranges
            j = torch.arange(self.keys)
            self._mask = ((j >= starts[..., None]) & (j < stops[..., None])).any(-2)
        return self._mask

    def ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._ranges is None:
            mask = self._mask.bool()
            for axis in range(mask.dim() - 2):  # heads alike: one pattern for all
                first = mask.narrow(axis, 0, 1)
                if mask.shape[axis] > 1 and bool((mask == first).all()):
                    mask = first
            r = R.from_dense(mask)
            self._ranges = (r.lo.long(), r.hi.long())
        return self._ranges

    def leading(self, count: int) -> "Pattern":
        """The pattern with exactly ``count`` leading axes: size-1 axes in front, or the union
        over the extra front axes (an upper bound)."""
        source = self._mask if self._mask is not None else self._ranges[0]
        have = source.dim() - 2
        if have == count:
            return self
        if have < count:
            def grown(t):
                return t.reshape(*([1] * (count - have)), *t.shape)
            if self._mask is not None:
                return Pattern(grown(self._mask))
            return Pattern(ranges=tuple(grown(t) for t in self._ranges), keys=self.keys)
        mask = self.dense()
        return Pattern(mask.reshape(-1, *mask.shape[have - count :]).any(0))


def constant_where(value: torch.Tensor, d: Deps, test) -> torch.Tensor | None:
    """Elements where ``test(value)`` holds *and* that are constant (``None`` when there are
    none). A value computed from the input at this run proves nothing: another input would
    change it."""
    if d is not None and all_live(d):
        return None  # no constant element
    hit = test(value)
    if d is not None:
        hit = hit & ~live(aligned(d, value.dim()))
    return hit if bool(hit.any()) else None


def constant_zero(value: torch.Tensor, d: Deps) -> torch.Tensor | None:
    """Elements that are exactly zero *and* constant: structural zeros."""
    return constant_where(value, d, lambda v: v == 0)


def as_float(d: torch.Tensor) -> torch.Tensor:
    return d.to(torch.float32)


# -- storages: what every element of a storage may hold, after writes through aliases ---------
def storage(size: int, n: int, pieces: list, like: Deps | str) -> Deps:
    """The union, per storage element, of the rows ``pieces`` (``(index (k,), rows (k, N))``)
    put at ``index``: a storage's summary from the tensors seen on it (in ``like``'s form: a
    summary, or a form's name)."""
    if (like == RUNS) if isinstance(like, str) else is_runs(like):
        return _runs_storage(size, n, pieces)
    # counts of the rows put on each element, in int32: uint8 counts wrapped at 256 aliases of
    # one element, and a count of 0 is a proof of no dependency
    out = torch.zeros(size, n, dtype=torch.int32)
    for idx, rows in pieces:
        out.index_add_(0, idx, dense(rows).to(torch.int32))
    return out > 0


def _runs_storage(size: int, n: int, pieces: list) -> Runs:
    if not pieces:
        return R.nothing((size,), n).map(torch.clone)
    width = max(rows.runs for _, rows in pieces)
    idx = torch.cat([i for i, _ in pieces])
    rows = [R.widened(r, width) for _, r in pieces]
    lo = torch.cat([r.lo.reshape(-1, width) for r in rows])
    hi = torch.cat([r.hi.reshape(-1, width) for r in rows])
    order = idx.argsort(stable=True)
    idx, lo, hi = idx[order], lo[order], hi[order]
    # the k-th row that lands on a storage element goes to its k-th block of columns
    first = torch.searchsorted(idx, idx, right=False)
    slot = torch.arange(len(idx)) - first
    blocks = int(slot.max()) + 1 if len(slot) else 1
    out_lo = torch.full((size, blocks * width), n, dtype=R.INT)
    out_hi = torch.full((size, blocks * width), n, dtype=R.INT)
    cols = slot[:, None] * width + torch.arange(width)
    out_lo[idx[:, None], cols] = lo
    out_hi[idx[:, None], cols] = hi
    return Runs(*R.canonical(out_lo, out_hi, n), n)


def written(store: Deps, idx: torch.Tensor, rows: Deps) -> Deps:
    """``store`` with the elements at ``idx`` overwritten by ``rows`` (``(k, N)``, or None:
    constants)."""
    if is_runs(store):
        if rows is None:
            rows = R.nothing((len(idx),), store.n)
        rows = rows.expand(len(idx), store.n)
        width = max(store.runs, rows.runs)
        store, rows = R.widened(store, width).map(torch.clone), R.widened(rows, width)
        store.lo[idx], store.hi[idx] = rows.lo, rows.hi
        return store
    store = store.clone()
    store[idx] = False if rows is None else dense(rows)
    return store


_RANK_TABLES = WeakTensorKeyDictionary()  # a subject's ranks -> their RankTable


def rank_table(ranks: torch.Tensor) -> R.RankTable:
    table = _RANK_TABLES.get(ranks)
    if table is None:
        table = _RANK_TABLES[ranks] = R.RankTable(ranks)
    return table


def reaches_later(rows: Deps, ranks: torch.Tensor) -> bool:
    """Whether some row ``p`` (``(N, ...)``: one per position) holds an input of a later rank
    than ``ranks[p]``."""
    if is_runs(rows):
        _, high = rank_table(ranks).extremes(rows)
        return bool((high > ranks).any())
    reach = torch.where(rows, ranks[None, :], torch.tensor(-1)).amax(1)
    return bool((reach > ranks).any())
