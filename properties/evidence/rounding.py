"""Rounding or dependence: the rounding level of an effect, measured.

A dependence is real when its size does not scale with the arithmetic's precision. A causal
convolution computed by FFT (S4, Hyena) gives future gradients of 1e-18 in float64 and 1e-9 in
float32: the rounding of ``rfft``/``irfft``, whose exact value is 0. A mixture-of-experts layer
regroups the tokens when the future changes, and float32 predictions of the past move by 1e-8,
in no other way than by the order of their sums. Neither may count as a leak, nor turn a verdict,
and a noise floor measured by repeating the same deterministic computation is 0 for both.

Two measurements, used where each exists:

- *Two precisions*: a change seen in float32 is confirmed on a float64 copy
  (:meth:`properties.evidence.perturbation.Runner.genuine`): rounding shrinks by the ratio of
  the machine epsilons, a dependence does not.
- *Ulp jitter*, in the computation's own precision (a float64 map, a model that has no float64
  kernel such as ``grouped_mm`` on CPU, a float64 model): the same computation again with every
  operand it is given (the input, the parameters, the gradient's cotangents) moved by one unit in
  the last place, in a random direction (:func:`jittered`). A rounding residue is a chaotic
  function of its operands' last bits, so it moves by its own size; a dependence moves by a
  relative ``eps * condition``. The *rounding level* of a comparison is the largest move of any
  of its positions over :data:`RUNS` jittered runs (pooled: one position's move can be small by
  chance, the largest over all of them is not); an effect is rounding when it is at most
  :data:`MARGIN` times that level (measured: residues of FFT convolutions are 1 to 3.5 times
  it, dependences 1e6 times in float32 and 1e15 in float64, ``tests/evidence/rounding``).

Two guards keep a broken estimate from hiding a leak. An effect above :func:`ceiling` (the square
root of the dtype's epsilon) of the scale is never rounding; and when the jitter itself moves
something by more than that, an ulp flipped a decision (a threshold, a top-k near a tie): the
estimate is not trusted, and the effect counts. Buffers are not jittered (they hold masks:
``mask == 1`` must stay true), nor zeros (a structural zero stays one), nor class-valued inputs.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

RUNS = 2  # jittered runs per rounding level
MARGIN = 16.0  # an effect counts when it exceeds MARGIN x the rounding level


def ceiling(dtype: torch.dtype) -> float:
    """The largest relative effect rounding may explain, in ``dtype``: ``sqrt(eps)`` (1.5e-8 in
    float64, 3.5e-4 in float32). Above it an effect counts, whatever the jitter says."""
    if not dtype.is_floating_point and not dtype.is_complex:
        return 0.0
    return float(torch.finfo(dtype).eps) ** 0.5


def ulp_jitter(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``t`` with every non-zero finite element moved one ulp up or down, at random."""
    if t.is_complex():
        return torch.view_as_complex(ulp_jitter(torch.view_as_real(t), generator))
    if not t.is_floating_point() or t.numel() == 0:
        return t
    up = torch.rand(t.shape, generator=generator) < 0.5
    inf = torch.tensor(float("inf"), dtype=t.dtype)
    target = torch.where(up, inf, -inf).to(t.device)
    moved = torch.nextafter(t, target)
    keep = (t == 0) | ~torch.isfinite(moved)
    return torch.where(keep, t, moved)


@contextmanager
def jittered(module: nn.Module | None, generator: torch.Generator) -> Iterator[None]:
    """The module's floating-point parameters moved by one ulp (:func:`ulp_jitter`) for the
    duration, restored bit for bit after. Buffers stay (masks, running statistics)."""
    params = [] if module is None else [p for p in module.parameters() if _jitterable(p)]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(ulp_jitter(p.detach(), generator))
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved, strict=True):
                p.copy_(value)


def _jitterable(p: torch.Tensor) -> bool:
    return (p.is_floating_point() or p.is_complex()) and not p.is_meta


def jitter_input(x: torch.Tensor, dtype: torch.dtype, generator, *, classes: bool) -> torch.Tensor:
    """The canonical input in the model's dtype, jittered (tokens and class values as they are:
    a class index one ulp below 3 is read as class 2)."""
    if not x.is_floating_point() or classes:
        return x
    return ulp_jitter(x.to(dtype), generator)


def generators(seed: int, runs: int = RUNS) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(7919 * seed + 104729 + run) for run in range(runs)]


@dataclass(frozen=True)
class Level:
    """The rounding level of one comparison: the largest jittered move, and the scale it is
    judged against (the outputs' or the gradient row's largest magnitude)."""

    level: float
    scale: float
    dtype: torch.dtype

    @property
    def trusted(self) -> bool:
        """The jitter moved nothing by more than rounding can (no flipped decision)."""
        return self.level <= ceiling(self.dtype) * self.scale

    def explains(self, effect: torch.Tensor) -> torch.Tensor:
        """Which effects are at this rounding level (bool, like ``effect``)."""
        if not self.trusted:
            return torch.zeros_like(effect, dtype=torch.bool)
        return (effect <= MARGIN * self.level) & (effect <= ceiling(self.dtype) * self.scale)


def level_of(
    run: Callable[[torch.Generator | None], torch.Tensor], reduce, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, Level]:
    """``run(None)`` (the plain computation) and the rounding level of its result: the largest
    ``reduce(|run(g) - run(None)|)`` over :data:`RUNS` jittered runs (``run(g)`` jitters its
    operands with ``g``), against the largest ``reduce(|run(None)|)``."""
    base = run(None)
    moves = [float(reduce((run(g) - base).abs()).max()) for g in generators(seed)]
    scale = float(reduce(base.abs()).max()) if base.numel() else 0.0
    return base, Level(max(moves, default=0.0), scale, dtype)


def describe(effect: float, scale: float, dtype: torch.dtype) -> str:
    """``below float64 rounding: 7e-18 against 0.5``."""
    return f"below {str(dtype).replace('torch.', '')} rounding: {effect:.2g} against {scale:.2g}"


__all__ = [
    "MARGIN",
    "RUNS",
    "Level",
    "ceiling",
    "describe",
    "generators",
    "jitter_input",
    "jittered",
    "level_of",
    "ulp_jitter",
]
