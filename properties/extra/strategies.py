"""Hypothesis strategies over the lecture's architectures: random causal conv nets (1D and 2D)
that know their analytic receptive field, and the same nets with one classic leak planted.

Following Hypothesis' API style: keyword-only arguments with defaults, ``max_*`` names,
:class:`~hypothesis.errors.InvalidArgument` for bad arguments.
"""

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from properties.extra.architectures import BUGS_1D, BUGS_2D, STYLES_2D, Architecture

__all__ = ["causal_architectures", "planted_bugs"]


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
    """Random causal conv nets (:class:`~properties.extra.architectures.Architecture`), 1D stacks of
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
    :mod:`properties.extra.architectures`): ``no_shift``, ``same_padding``, ``batchnorm_over_time``
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
