"""Hypothesis strategies over a subject: cuts, perturbations and inputs (the search draws from
these; users' property tests may too, through :mod:`properties.strategies`).

Following Hypothesis' API style: keyword-only arguments with defaults, ``min_*``/``max_*``
names, :class:`~hypothesis.errors.InvalidArgument` for bad arguments. Tensors are built from a
drawn seed through a ``torch.Generator``; no strategy touches the global torch RNG.
"""

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from properties.evidence.replacements import MAGNITUDES, Perturbation, kinds_for
from properties.subject.canonical import Subject

__all__ = ["POOLS", "cuts", "inputs", "perturbations"]

POOLS = 4  # distinct pools of base inputs a search may draw


def _check_subject(subject):
    if not isinstance(subject, Subject):
        raise InvalidArgument(f"subject must be a properties.Subject, got {type(subject).__name__}")


def cuts(subject: Subject, *, min_cut: int = 0, max_cut: int | None = None):
    """Ranks at which to cut: everything at this rank or later gets replaced. Shrinks to 0."""
    _check_subject(subject)
    top = subject.n_positions - 1 if max_cut is None else max_cut
    if not 0 <= min_cut <= top < subject.n_positions:
        raise InvalidArgument(
            f"need 0 <= min_cut={min_cut} <= max_cut={top} < {subject.n_positions} positions"
        )
    return st.integers(min_cut, top)


def perturbations(
    subject: Subject,
    *,
    min_magnitude: float = MAGNITUDES[0],
    max_magnitude: float = MAGNITUDES[-1],
    kinds: tuple[str, ...] | None = None,
    cut=None,
):
    """Perturbations of ``subject``'s inputs at and after a cut.

    Draw order matters for shrinking: the cut first (a failure shrinks to the earliest cut),
    then the kind (``add``, the gentlest, first), then the magnitude (the smallest first).
    ``cut`` may be a strategy of ranks (default: :func:`cuts`).
    """
    _check_subject(subject)
    allowed = kinds_for(subject)
    kinds = allowed if kinds is None else tuple(kinds)
    if not kinds or any(k not in allowed for k in kinds):
        raise InvalidArgument(f"kinds must be a non-empty subset of {allowed}, got {kinds}")
    if not 0 < min_magnitude <= max_magnitude:
        raise InvalidArgument(
            f"need 0 < min_magnitude={min_magnitude} <= max_magnitude={max_magnitude}"
        )
    magnitudes = [m for m in MAGNITUDES if min_magnitude <= m <= max_magnitude] or [min_magnitude]
    return st.builds(
        Perturbation,
        cut=cuts(subject) if cut is None else cut,
        kind=st.sampled_from(kinds),
        magnitude=st.sampled_from(magnitudes),
        seed=st.integers(0, 2**31 - 1),
        pool=st.integers(0, POOLS - 1),
    )


def inputs(subject: Subject, *, batch_size: int = 2):
    """Random canonical inputs for ``subject`` (``(B, N, F)`` floats or ``(B, N)`` tokens)."""
    _check_subject(subject)
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be >= 1, got {batch_size}")
    return st.integers(0, 2**31 - 1).map(
        lambda seed: subject.draw_inputs(batch_size, torch.Generator().manual_seed(seed))
    )
