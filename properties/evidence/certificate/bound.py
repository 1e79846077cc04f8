"""The certificate's bound, ``(N outputs, N inputs)``, in either form of summary, and what the
certificate reads from it: the mode, the forbidden pairs, the receptive field, rows.

A dense bound is the bool matrix. A run-form bound (:class:`~.runs.Runs` of shape ``(N, N)``)
is ``N`` rows of a few runs each: the mode and the receptive field come from range minima and
maxima of the ranks over runs (:class:`~.runs.RankTable`), and only the rows asked for (the
cross-check's, the forbidden pairs of a model that is not proved, ``ROWS_AT_ONCE`` at a time)
are ever made dense, so a proof at 16384 positions holds no ``N x N`` anything.
"""

import torch

from properties.evidence import facts
from properties.subject.canonical import Subject

from . import deps
from . import runs as R

ROWS_AT_ONCE = 1024  # rows made dense together when pairs are listed: (rows, N) temporaries


def of_output(d, n: int, width: int, escaped, form: str):
    """The rows ``(N, width)`` from the summary of the canonical output ``(1, N or 1, K or 1,
    width)`` and the inputs read into Python (``escaped``: a dense ``(width,)`` row, or None).
    ``width`` is the tracer's: the ``N`` inputs, then its unknown-origin slots."""
    parts = []
    if d is not None:
        parts.append(deps.any_over(deps.aligned(d, 3), [0, 2], keepdim=False))  # (N or 1, ·)
    if escaped is not None:  # values read into Python may flow anywhere
        parts.append(escaped.reshape(1, width))
    if not parts:
        if form == deps.RUNS:
            return R.nothing((n,), width)
        return torch.zeros(n, width, dtype=torch.bool)
    found = deps.in_form(deps.union(parts, 1), form).expand(n, width)
    return found if deps.is_runs(found) else found.clone()


def columns_reached(found, n: int) -> torch.Tensor:
    """Dense ``(width - n,)``: which columns after the first ``n`` some row holds (the
    unknown-origin slots that reached an output)."""
    if deps.is_runs(found):
        return R.to_dense(deps.everything(found))[n:]
    return found[:, n:].any(0)


def inputs_only(found, n: int):
    """The bound: the rows' first ``n`` columns (the input positions)."""
    return deps.columns(found, n) if deps.is_runs(found) else found[:, :n].clone()


def rows(bound, outputs) -> torch.Tensor:
    """Dense rows ``(len(outputs), N)`` of the bound."""
    if deps.is_runs(bound):
        return R.to_dense(bound[torch.as_tensor(outputs)])
    return bound[outputs]


def dense(bound) -> torch.Tensor:
    return R.to_dense(bound) if deps.is_runs(bound) else bound


def union(a, b):
    """The bound of two paths (inference and training mode)."""
    if a is None:
        return b
    if deps.is_runs(a):
        return R.union([a, deps.in_form(b, a)])
    return a | deps.dense(b)


def extremes(subject: Subject, bound) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output, the smallest and largest rank of an input it may see (N and -1: none)."""
    if deps.is_runs(bound):
        return deps.rank_table(subject.ranks).extremes(bound)
    return facts.rank_extremes(subject, bound)


def sizes(bound) -> torch.Tensor:
    return R.sizes(bound) if deps.is_runs(bound) else bound.sum(1)


def sees_future(subject: Subject, bound) -> bool:
    _, high = extremes(subject, bound)
    return bool((high > subject.ranks).any())


def sees_present(subject: Subject, bound) -> bool:
    """Whether some output may see its own position."""
    own = torch.arange(subject.n_positions)
    if deps.is_runs(bound):
        return bool(R.contains(bound, own).any())
    return bool(bound[own, own].any())


def receptive_field(subject: Subject, bound) -> facts.ReceptiveField:
    low, high = extremes(subject, bound)
    return facts.field_of(subject, torch.arange(subject.n_positions), sizes(bound), low, high)


def forbidden_pairs(subject: Subject, bound, present: bool, listed: int):
    """The (output, input) pairs the contract forbids (a later rank; with ``present``, the same
    rank too): how many, and the first ``listed`` in rank order of (output, input), plus the
    first future pair when a present one would hide it. Rows are made dense a block at a time,
    in output rank order."""
    ranks = subject.ranks
    n = len(ranks)
    by_rank = torch.argsort(ranks)
    total, pairs, first_future = 0, [], None
    for start in range(0, n, ROWS_AT_ONCE):
        block = by_rank[start : start + ROWS_AT_ONCE]
        out_ranks = ranks[block][:, None]
        seen = rows(bound, block)
        later = ranks[None, :] > out_ranks
        forbidden = seen & (later | (ranks[None, :] == out_ranks) if present else later)
        r, s = forbidden.nonzero(as_tuple=True)
        total += len(r)
        if len(pairs) < listed and len(r):
            keys = ranks[block[r]] * n + ranks[s]
            order = torch.argsort(keys)[: listed - len(pairs)]
            pairs.extend(zip(block[r[order]].tolist(), s[order].tolist(), strict=True))
        if first_future is None:
            f_r, f_s = (seen & later).nonzero(as_tuple=True)
            if len(f_r):
                keys = ranks[block[f_r]] * n + ranks[f_s]
                i = int(torch.argmin(keys))
                first_future = (int(block[f_r[i]]), int(f_s[i]))
    return total, pairs, first_future
