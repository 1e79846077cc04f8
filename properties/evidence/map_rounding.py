"""The dependency map without rounding residues.

An entry of the map counts as a dependency when its gradient is not zero. In a computation whose
zeros are zeros only on paper (a causal convolution by FFT: the future lags cancel) a non-zero
entry may be the rounding of that cancellation, 1e-18 against a present gradient of 0.5. Where
an entry would decide something (at the output's own or a later rank: the verdict; outside the
certificate's bound: a soundness alarm) and is small enough to be rounding (below
:func:`~properties.evidence.rounding.ceiling` of its row's largest gradient), its row is computed
again, plainly and under ulp jitter (:mod:`properties.evidence.rounding`), and the entries at the
row's rounding level leave the map. They are counted, with the largest of them, for the report.

Rows are recomputed one per pass, so that a shard decides its rows exactly as the unsharded
audit does.
"""

from dataclasses import replace

import torch

from properties import progress
from properties.evidence import rounding
from properties.evidence.gradients import (
    DependencyMap,
    DifferentiableInput,
    directions_for,
    weighted_vjps,
)
from properties.subject.canonical import Subject

# The map's strengths are bfloat16 (three digits): the pre-filter allows for their rounding.
_STRENGTH_SLACK = 1.01


def suspects(subject: Subject, dmap: DependencyMap, bound_rows=None) -> torch.Tensor:
    """``(M, N)`` entries worth a second look: seen, deciding something, and small against their
    row. ``bound_rows(outputs)``: the certificate's dense rows of those outputs, if any."""
    ranks = subject.ranks
    deciding = ranks[None, :] >= ranks[dmap.outputs][:, None]
    if bound_rows is not None:
        deciding = deciding | ~bound_rows(dmap.outputs)
    strength = dmap.strength.float()
    small = strength <= _STRENGTH_SLACK * rounding.ceiling(subject.dtype) * strength.amax(1, True)
    return dmap.seen & deciding & small


def screen(
    subject: Subject,
    inputs: torch.Tensor,
    dmap: DependencyMap,
    *,
    seed: int,
    bound_rows=None,
) -> DependencyMap:
    """``dmap`` without the entries its rows' rounding explains (``subject`` and ``inputs``: the
    ones the map was taken on; ``bound_rows``: the certificate's ``Certificate.rows``)."""
    suspect = suspects(subject, dmap, bound_rows)
    rows = suspect.any(1).nonzero().flatten().tolist()
    if not rows:
        return dmap
    source = DifferentiableInput(subject, inputs, seed=seed)
    directions = directions_for(source, seed)
    seen, strength = dmap.seen.clone(), dmap.strength.clone()
    count, largest, scale_of_largest = 0, 0.0, 0.0
    progress.phase("map: rounding", len(rows) * (1 + rounding.RUNS))
    for row in rows:
        magnitude, level = _row_level(source, int(dmap.outputs[row]), directions, seed)
        dismissed = suspect[row] & level.explains(magnitude)
        if not dismissed.any():
            continue
        seen[row] &= ~dismissed
        strength[row][dismissed] = 0
        count += int(dismissed.sum())
        worst = float(magnitude[dismissed].max())
        if worst >= largest:
            largest, scale_of_largest = worst, level.scale
    return replace(
        dmap,
        seen=seen,
        strength=strength,
        rounding=dmap.rounding + count,
        rounding_effect=max(largest, dmap.rounding_effect),
        rounding_scale=scale_of_largest if largest >= dmap.rounding_effect else dmap.rounding_scale,
        rounding_dtype=str(subject.dtype).replace("torch.", ""),
    )


def _row_level(
    source: DifferentiableInput, output: int, directions: torch.Tensor, seed: int
) -> tuple[torch.Tensor, rounding.Level]:
    """One output's row, ``(N,)`` largest |gradient| per input, and its rounding level."""
    n = source.subject.n_positions
    one_hot = torch.zeros(1, n, dtype=torch.float64)
    one_hot[0, output] = 1.0

    def run(jitter):
        _, (g,) = weighted_vjps(source, [one_hot], directions, jitter=jitter)
        return g[0].double()  # (B, N, D)

    def per_input(t):
        return t.amax(dim=(0, 2))

    base, level = rounding.level_of(run, per_input, source.subject.dtype, seed * 100003 + output)
    return per_input(base.abs()), level


__all__ = ["screen", "suspects"]
