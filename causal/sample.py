"""Autoregressive synthesis (lecture slide 17), and pictures of the samples.

Start from a grid of zeros (the lecture's "0s simply fill in for unknown values"); for every
position ``t`` in raster order, run the model, take the logits at ``t``, sample ``x_t`` from
``Categorical(logits)`` and write it into the grid. Causality is what makes this correct: the
logits at ``t`` do not depend on the zeros still standing at ``t`` and after.

The step that produces the logits at ``t`` is a function ``step(x, t) -> (N, K)`` built by
:func:`full_recompute_step`, which reruns the whole model on the whole grid (``O(T)`` forward
passes per sample). The cached steppers of :mod:`causal.incremental` (WaveNet queues, PixelCNN
row caches) compute one new position per step instead; :func:`sample` takes one as ``stepper``, or
picks one with ``cache``, without touching the loop.

All randomness comes from a dedicated ``torch.Generator`` seeded by ``seed``: same seed, same
samples, and the caller's global RNG is left alone.
"""

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .incremental import NoCachedStepper, cached_stepper

Step = Callable[[torch.Tensor, int], torch.Tensor]  # (N, 1, *grid) float, t -> (N, K) logits

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class GridError(ValueError):
    """The model cannot be run on the requested grid; one-line message."""


def check_grid(model: nn.Module, grid, dims: int | None = None) -> None:
    """Raises :class:`GridError` unless ``model`` produces per-position logits on ``grid``.

    ``dims`` is the number of dimensions the model was built for (1 for sequences, 2 for
    images). A single position has no past to condition on, so every size must be at least 2.
    A probe forward pass catches the rest (e.g. a positional encoding built for another shape).
    """
    grid = tuple(grid)
    if dims is not None and len(grid) != dims:
        kind = {1: "sequences (--length T)", 2: "images (--shape H W)"}.get(dims, f"{dims}-D grids")
        raise GridError(f"the model works on {kind}, got a {len(grid)}-D grid {grid}")
    if any(n < 2 for n in grid):
        raise GridError(f"grid {grid} is too small: every size must be at least 2")
    device = next(model.parameters()).device
    probe = torch.zeros(1, 1, *grid, device=device, dtype=next(model.parameters()).dtype)
    try:
        with torch.no_grad():
            out = model(probe)
    except (RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise GridError(f"the model cannot run on grid {grid}: {first_line}") from error
    if tuple(out.shape[1:-1]) != grid:
        raise GridError(f"the model maps grid {grid} to {tuple(out.shape[1:-1])}, not per position")


def full_recompute_step(model: nn.Module) -> Step:
    """The lecture's step: the whole model on the whole current grid, logits at flat index t."""

    def step(x: torch.Tensor, t: int) -> torch.Tensor:
        logits = model(x)  # (N, *grid, K)
        return logits.reshape(x.size(0), -1, logits.size(-1))[:, t]  # (N, K)

    return step


@torch.no_grad()
def sample(
    model: nn.Module,
    nb_samples: int,
    grid,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    stepper: Callable[[nn.Module], Step] | None = None,
    cache: bool | str = False,
) -> torch.Tensor:
    """``nb_samples`` sequences/images ``(N, *grid)`` long, drawn position by position in raster
    order. The model runs in eval mode and in ``dtype`` on a copy, so the caller's model is left
    as it was.

    ``cache`` picks the stepper when ``stepper`` is not given:

    =========== =====================================================================
    ``False``   the lecture's full recompute (:func:`full_recompute_step`), the default
    ``True``    the model's cached stepper (:func:`causal.incremental.cached_stepper`);
                :class:`~causal.incremental.NoCachedStepper` for a model without one
    ``"auto"``  the cached stepper if the model has one, else the full recompute
    =========== =====================================================================

    Same seed, same samples either way (up to float rounding: the cached logits differ from the
    full pass by a few ulps, which in float64 leaves the draws identical in practice).
    """
    grid = tuple(grid)
    stepper = _choose_stepper(stepper, cache)
    model = copy.deepcopy(model).to(dtype).eval()
    check_grid(model, grid)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    step = stepper(model)
    x = torch.zeros(nb_samples, 1, *grid, dtype=dtype, device=device)  # (N, 1, *grid)
    flat = x.view(nb_samples, -1)  # (N, T): a view, writing to it writes to x
    for t in range(flat.size(1)):
        logits = step(x, t)  # (N, K)
        flat[:, t] = _draw(logits, generator).to(dtype)
    return flat.long().view(nb_samples, *grid)


def _choose_stepper(stepper, cache) -> Callable[[nn.Module], Step]:
    """The stepper :func:`sample` uses: the caller's, or the one ``cache`` names."""
    if not (isinstance(cache, bool) or cache == "auto"):
        raise ValueError(f"cache must be False, True or 'auto', got {cache!r}")
    if stepper is not None:
        if cache is not False:
            raise ValueError("pass either stepper or cache, not both")
        return stepper
    if cache is False:
        return full_recompute_step
    if cache is True:
        return cached_stepper

    def cached_or_full(model):
        try:
            return cached_stepper(model)
        except NoCachedStepper:
            return full_recompute_step(model)

    return cached_or_full


def _draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``Categorical(logits=logits)`` from ``generator``.

    ``Categorical.sample`` has no generator argument, so we draw with ``torch.multinomial`` on
    the distribution's normalized probabilities: the same distribution, our own RNG.
    """
    probs = torch.distributions.Categorical(logits=logits).probs  # (N, K)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (N,)


# ---------------------------------------------------------------------------------------------
# Pictures


def save_picture(samples: torch.Tensor, path, nb_classes: int | None = None, title=None) -> None:
    """Writes samples ``(N, *grid)`` as a PNG: a grid of gray images for 2D samples, one line plot
    per sequence for 1D samples (like the lecture's figures)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set before pyplot is imported
    import matplotlib.pyplot as plt

    samples = samples.cpu()
    top = (nb_classes or int(samples.max()) + 1) - 1
    nb = samples.size(0)
    cols = min(nb, 4 if samples.dim() == 2 else 8)
    rows = math.ceil(nb / cols)
    size = (3 * cols, 1.8 * rows) if samples.dim() == 2 else (1.2 * cols, 1.2 * rows)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples, strict=False):
        if s.dim() == 1:
            ax.axis("on")
            ax.plot(s.numpy(), linewidth=1)
            ax.set_ylim(-0.5, top + 0.5)
            ax.tick_params(labelsize=6)
        else:
            ax.imshow(s.numpy(), cmap="gray_r", vmin=0, vmax=max(top, 1))
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.03, top=0.9 if title else 0.98,
                        wspace=0.2, hspace=0.3)  # fmt: skip
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)
