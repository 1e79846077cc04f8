"""Hypothesis strategies for auditing causal models.

Following Hypothesis' API style: keyword-only arguments with defaults, ``min_*``/``max_*``
names, :class:`~hypothesis.errors.InvalidArgument` for bad arguments. Tensors are built from a
drawn seed through a ``torch.Generator``; no strategy touches the global torch RNG.

- :func:`cuts`, :func:`perturbations`, :func:`inputs`: for a :class:`~properties.Subject`.
- :func:`causal_architectures`, :func:`planted_bugs`: random causal conv nets (1D and 2D) that
  know their analytic receptive field, and the same nets with one classic leak planted.
"""

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .architectures import BUGS_1D, BUGS_2D, STYLES_2D, Architecture
from .perturbations import MAGNITUDES, Perturbation, kinds_for
from .subject import Subject

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


# ---------------------------------------------------------------------------------------------
# Architectures


@st.composite
def _architecture(draw, dims, max_depth, max_kernel_size, max_dilation, channels, bug):
    dims = draw(st.sampled_from(dims))
    depth = draw(st.integers(1, max_depth))
    seed = draw(st.integers(0, 2**31 - 1))
    if dims == 1:
        kernels = draw(st.lists(st.integers(1, max_kernel_size), min_size=depth, max_size=depth))
        dilations = draw(st.lists(st.integers(1, max_dilation), min_size=depth, max_size=depth))
        return Architecture(1, tuple(kernels), tuple(dilations), channels, "stack", bug, seed)
    style = draw(st.sampled_from(STYLES_2D))
    odd = [k for k in (1, 3, 5) if k <= max(1, max_kernel_size)]
    if style == "masked":
        depth = max(depth, 2) if bug == "mask_open_below" else depth
        first = draw(st.sampled_from([k for k in odd if k >= 3] or [3]))
        rest = draw(st.lists(st.sampled_from(odd), min_size=depth - 1, max_size=depth - 1))
        if bug == "mask_open_below":
            rest[-1] = max(rest[-1], 3)
        kernels = (first, *rest)
    else:
        kernels = tuple(draw(st.lists(st.sampled_from(odd), min_size=depth, max_size=depth)))
    return Architecture(2, kernels, (1,) * len(kernels), channels, style, bug, seed)


def _check_architecture_args(dims, max_depth, max_kernel_size, max_dilation, channels):
    if not dims or any(d not in (1, 2) for d in dims):
        raise InvalidArgument(f"dims must be a non-empty subset of (1, 2), got {dims}")
    for name, value in [
        ("max_depth", max_depth),
        ("max_kernel_size", max_kernel_size),
        ("max_dilation", max_dilation),
        ("channels", channels),
    ]:
        if value < 1:
            raise InvalidArgument(f"{name} must be >= 1, got {value}")


def causal_architectures(
    *,
    dims: tuple[int, ...] = (1, 2),
    max_depth: int = 4,
    max_kernel_size: int = 4,
    max_dilation: int = 4,
    channels: int = 4,
):
    """Random causal conv nets (:class:`~properties.architectures.Architecture`), 1D stacks of
    dilated causal convolutions or 2D two-stack / masked PixelCNNs, that know their analytic
    receptive field. Build one with ``.build()``; audit it on ``.grid``."""
    _check_architecture_args(dims, max_depth, max_kernel_size, max_dilation, channels)
    return _architecture(dims, max_depth, max_kernel_size, max_dilation, channels, None)


def planted_bugs(
    *,
    dims: tuple[int, ...] = (1, 2),
    bugs: tuple[str, ...] | None = None,
    max_depth: int = 3,
    max_kernel_size: int = 4,
    max_dilation: int = 4,
    channels: int = 4,
):
    """The same nets with one classic leak planted (see
    :mod:`properties.architectures`): ``no_shift``, ``same_padding``, ``batchnorm_over_time``
    (leaks in training mode only) and, for masked 2D nets, ``mask_open_below``."""
    _check_architecture_args(dims, max_depth, max_kernel_size, max_dilation, channels)
    allowed = set(BUGS_1D if dims == (1,) else BUGS_2D)
    bugs = tuple(allowed) if bugs is None else tuple(bugs)
    if not bugs or any(b not in allowed for b in bugs):
        raise InvalidArgument(f"bugs must be a non-empty subset of {sorted(allowed)}, got {bugs}")

    def arch_for(bug):
        bug_dims = tuple(d for d in dims if bug in (BUGS_1D if d == 1 else BUGS_2D))
        return _architecture(
            bug_dims, max_depth, max_kernel_size, max_dilation, channels, bug
        ).filter(lambda a: a.bug != "mask_open_below" or a.style == "masked")

    return st.sampled_from(sorted(bugs)).flatmap(arch_for)
