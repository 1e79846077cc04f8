"""Facts computed from a dependency map: gradient violations, receptive fields, blind spots.

All of them read the same object: ``seen[row, s]`` (output ``outputs[row]`` depends on input
``s``) together with the subject's ranks. None of them knows which model it is looking at.
"""

from dataclasses import dataclass

import torch

from . import gradients
from .causality import Violation
from .gradients import DependencyMap
from .subject import Subject

MODES = ("strict", "inclusive", "none")


def gradient_violations(
    subject: Subject, dmap: DependencyMap, evidence: str = "gradient"
) -> list[Violation]:
    """Every (output, input) pair where the output depends on its own or a later rank."""
    ranks = subject.ranks
    out_ranks = ranks[dmap.outputs][:, None]  # (M, 1)
    forbidden = dmap.seen & (ranks[None, :] >= out_ranks)
    rows, inputs = forbidden.nonzero(as_tuple=True)
    violations = []
    for row, s in zip(rows.tolist(), inputs.tolist(), strict=True):
        t = int(dmap.outputs[row])
        violations.append(
            Violation(
                output=t,
                input=s,
                kind="present" if ranks[s] == ranks[t] else "future",
                evidence=evidence,
                effect=float(dmap.strength[row, s]),
                detail="non-zero gradient",
            )
        )
    violations.sort(key=lambda v: (int(ranks[v.output]), int(ranks[v.input])))
    return violations


def mode_of(violations: list[Violation]) -> str:
    """``none`` if anything sees the future, ``inclusive`` if something sees the present."""
    kinds = {v.kind for v in violations}
    if "future" in kinds:
        return "none"
    return "inclusive" if "present" in kinds else "strict"


def passes(mode: str, predicts: str) -> bool:
    """``current`` needs a strict model; ``next`` and ``auto`` accept strict or inclusive."""
    if predicts == "current":
        return mode == "strict"
    return mode in ("strict", "inclusive")


@dataclass
class ReceptiveField:
    size: int  # the largest number of inputs one output depends on
    span: int  # how far back, in ranks, that output reaches
    holes: int | None  # positions between its furthest and nearest inputs that it skips (1D)
    position: int  # flat position of that output
    max_span: int  # the furthest reach of any output
    sizes: torch.Tensor  # (M,) per output row
    spans: torch.Tensor  # (M,) per output row


def receptive_field(subject: Subject, dmap: DependencyMap) -> ReceptiveField:
    ranks = subject.ranks
    seen = dmap.seen
    sizes = seen.sum(1)
    big = torch.iinfo(torch.long).max
    min_rank = torch.where(seen, ranks[None, :], torch.full_like(seen, big, dtype=torch.long))
    min_rank = min_rank.amin(1)
    max_rank = torch.where(seen, ranks[None, :], torch.full_like(seen, -1, dtype=torch.long))
    max_rank = max_rank.amax(1)
    out_ranks = ranks[dmap.outputs]
    spans = torch.where(sizes > 0, out_ranks - min_rank, torch.zeros_like(sizes))
    # The output with the most inputs; among those, the one reaching furthest back, earliest.
    key = sizes * (spans.max() + 1) + spans
    row = int(torch.argmax(key))
    holes = None
    if len(subject.grid) == 1 and sizes[row] > 0:
        holes = int(max_rank[row] - min_rank[row] + 1 - sizes[row])
    return ReceptiveField(
        size=int(sizes[row]),
        span=int(spans[row]),
        holes=holes,
        position=int(dmap.outputs[row]),
        max_span=int(spans.max()) if len(spans) else 0,
        sizes=sizes,
        spans=spans,
    )


@dataclass
class BlindSpot:
    size: int  # the largest number of blind pixels of one output
    position: int | None  # flat position of that output (None when size is 0)
    pixels: torch.Tensor  # (H, W) bool: the blind pixels of that output


def blind_spot(subject: Subject, dmap: DependencyMap) -> BlindSpot | None:
    """Causal-past pixels an output does not see although it sees a pixel above them in the same
    column (raster order, 2D grids only; ``None`` otherwise)."""
    if len(subject.grid) != 2 or not subject.is_raster:
        return None
    h, w = subject.grid
    seen = dmap.seen.reshape(-1, h, w)
    # above[r, c]: some pixel of column c in a row < r is seen.
    above = torch.cumsum(seen.int(), dim=1) - seen.int() > 0
    past = subject.ranks[None, :] < subject.ranks[dmap.outputs][:, None]
    blind = above & ~seen & past.reshape(-1, h, w)
    counts = blind.flatten(1).sum(1)
    row = int(torch.argmax(counts))
    size = int(counts[row])
    return BlindSpot(
        size=size,
        position=int(dmap.outputs[row]) if size else None,
        pixels=blind[row],
    )


def clipped_sides(subject: Subject, dmap: DependencyMap) -> tuple[int, list[str]] | None:
    """Whether the grid may clip the receptive field: ``(output, sides)`` when every output that
    sees the most inputs depends on inputs at the grid's border, on a side where its receptive
    field extends (``None`` when one of them sees all it sees well inside the grid).

    A border counts as reached when the next input at the receptive field's own spacing (its
    largest gap along that axis: 2 for a net that sees every other position) would fall off the
    grid. Raster order only: a fixed-size model in another order (MADE) has no larger grid.
    """
    if not subject.is_raster or len(dmap.outputs) == 0:
        return None
    coords = gradients.coordinates(subject.grid)
    sizes = dmap.seen.sum(1)
    if int(sizes.max()) == 0:
        return None
    clipped = None
    for row in (sizes == sizes.max()).nonzero().flatten().tolist():
        t = coords[int(dmap.outputs[row])]
        deps = coords[dmap.seen[row]]
        sides = []
        for axis, size in enumerate(subject.grid):
            values = deps[:, axis].unique()  # sorted
            gap = int((values[1:] - values[:-1]).max()) if len(values) > 1 else 1
            lo, hi = int(values[0]), int(values[-1])
            if lo < t[axis] and lo - gap < 0:
                sides.append(f"start of axis {axis}" if len(subject.grid) > 1 else "start")
            if hi > t[axis] and hi + gap > size - 1:
                sides.append(f"end of axis {axis}" if len(subject.grid) > 1 else "end")
        if not sides:
            return None
        if clipped is None:
            clipped = (int(dmap.outputs[row]), sides)
    return clipped


def clipping_note(subject: Subject, dmap: DependencyMap) -> str | None:
    """The report's note when :func:`clipped_sides` finds the receptive field at the border."""
    found = clipped_sides(subject, dmap)
    if found is None:
        return None
    output, sides = found
    flag = "--length" if len(subject.grid) == 1 else "--shape"
    return (
        f"the receptive field may be clipped by the grid {tuple(subject.grid)}: the outputs that "
        f"see the most inputs (e.g. output {subject.position(output)}) reach the "
        f"{' and '.join(sides)} of the grid; audit with a larger {flag} to measure it whole"
    )
