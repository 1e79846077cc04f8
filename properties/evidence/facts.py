"""Facts computed from a dependency map: gradient violations, receptive fields, blind spots.

All of them read the same object: ``seen[row, s]`` (output ``outputs[row]`` depends on input
``s``) together with the subject's contract (:attr:`~properties.subject.Subject.contract`: its
ranks, and which inputs each output must not see). None of them knows which model it is looking
at.
"""

from dataclasses import dataclass

import torch

from properties.contracts import KIND_OF_CODE
from properties.evidence import gradients
from properties.evidence.gradients import DependencyMap
from properties.subject.canonical import Subject
from properties.verdict import Kind, ModelMode, Source, Violation

__all__ = [
    "BlindSpot",
    "GRADIENT_PAIRS_KEPT",
    "ROWS_AT_ONCE",
    "ReceptiveField",
    "blind_spot",
    "clipped_sides",
    "clipping_note",
    "gradient_violations",
    "rank_extremes",
    "receptive_field",
    "rounding_note",
]

GRADIENT_PAIRS_KEPT = 2000  # gradient violations kept as objects; the rest are counted


def gradient_violations(
    subject: Subject, dmap: DependencyMap, train: bool = False
) -> tuple[list[Violation], int]:
    """(output, input) pairs where the output depends on an input the contract forbids it (its
    own or a later rank; another document; beyond its window), in output rank order: the first
    ``GRADIENT_PAIRS_KEPT`` (and the first of each kind, if later), and how many in all.

    A model that leaks everywhere has N^2/2 of them; the report needs examples and a count.
    """
    ranks, contract = subject.ranks, subject.contract
    pairs, total, first = [], 0, {}
    # Rows in their outputs' rank order (ranks are distinct): once GRADIENT_PAIRS_KEPT pairs are
    # collected, every later block's pairs come after them, whatever order the map stores its
    # rows in.
    by_rank = torch.argsort(ranks[dmap.outputs])
    for start in range(0, len(by_rank), ROWS_AT_ONCE):
        block = by_rank[start : start + ROWS_AT_ONCE]
        codes = contract.codes(dmap.outputs[block])
        forbidden = dmap.seen[block] & (codes != 0)
        rows, inputs = forbidden.nonzero(as_tuple=True)
        total += len(rows)
        if len(pairs) < GRADIENT_PAIRS_KEPT:
            pairs.extend(zip(block[rows].tolist(), inputs.tolist(), strict=True))
        kinds = codes[rows, inputs]
        for code in kinds.unique().tolist():
            # the mode (and each other contract) must not lose its evidence to the cap
            if code not in first and KIND_OF_CODE[code] != Kind.PRESENT:
                at = int((kinds == code).nonzero()[0])
                first[code] = (int(block[rows[at]]), int(inputs[at]))
    pairs.sort(key=lambda p: (int(ranks[dmap.outputs[p[0]]]), int(ranks[p[1]])))
    pairs = pairs[:GRADIENT_PAIRS_KEPT]
    for pair in first.values():
        if pair not in pairs:
            pairs.append(pair)
    violations = []
    for row, s in pairs:
        t = int(dmap.outputs[row])
        violations.append(
            Violation(
                output=t,
                input=s,
                kind=KIND_OF_CODE[int(contract.codes(torch.tensor([t]))[0, s])],
                source=Source.GRADIENT,
                effect=float(dmap.strength[row, s]),
                detail="non-zero gradient",
                train=train,
            )
        )
    return violations, total


def rounding_note(dmap: DependencyMap, mode: ModelMode) -> str:
    """What the report says of the entries :mod:`.map_rounding` took out of the map."""
    return (
        f"gradients ({mode.label}): {dmap.rounding} non-zero entries at rounding level, not "
        f"counted as dependencies (largest below {dmap.rounding_dtype} rounding: "
        f"{dmap.rounding_effect:.2g} against {dmap.rounding_scale:.2g}, the largest gradient of "
        "its row; ulp-jittered operands move them by as much): zeros that cancel only on paper, "
        "as an FFT convolution's future lags do"
    )


def shrunk_violations(
    subject: Subject, dmap: DependencyMap, reached: set, train: bool = False
) -> list[Violation]:
    """For an exact window: the mapped outputs that do not see the far end of their window
    (``width - 1`` back, where the grid and their document have it), by the gradients, and
    that the window's perturbations did not see reach it either (``reached``)."""
    far = subject.contract.far_ends(dmap.outputs)
    rows = torch.arange(len(dmap.outputs))
    has = far >= 0
    missing = has.clone()
    missing[has] = ~dmap.seen[rows[has], far[has]]
    out = []
    for row in missing.nonzero().flatten().tolist():
        t, s = int(dmap.outputs[row]), int(far[row])
        if t in reached:
            continue
        out.append(
            Violation(
                output=t,
                input=s,
                kind=Kind.SHRUNK,
                source=Source.GRADIENT,
                effect=0.0,
                detail="no gradient at the far end of its window, and replacing it moved "
                "nothing",
                train=train,
            )
        )
    return sorted(out, key=lambda v: int(subject.ranks[v.output]))


@dataclass
class ReceptiveField:
    size: int  # the largest number of inputs one output depends on
    span: int  # how far back, in ranks, that output reaches
    holes: int | None  # positions between its furthest and nearest inputs that it skips (1D)
    position: int  # flat position of that output
    max_span: int  # the furthest reach of any output
    sizes: torch.Tensor  # (M,) per output row
    spans: torch.Tensor  # (M,) per output row


ROWS_AT_ONCE = 1024  # rows of a map reduced together: bounds the (rows, N) temporaries


def rank_extremes(subject: Subject, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest and largest rank of a seen input (N and -1 for an empty row),
    computed in blocks of rows so that memory stays ``O(ROWS_AT_ONCE * N)``."""
    ranks = subject.ranks.to(torch.int32)
    lows, highs = [], []
    for start in range(0, len(seen), ROWS_AT_ONCE):
        block = seen[start : start + ROWS_AT_ONCE]
        none = torch.tensor(len(ranks), dtype=torch.int32)
        lows.append(torch.where(block, ranks, none).amin(1) if block.shape[1] else none)
        highs.append(torch.where(block, ranks, torch.tensor(-1, dtype=torch.int32)).amax(1))
    return torch.cat(lows).long(), torch.cat(highs).long()


def receptive_field(subject: Subject, dmap: DependencyMap) -> ReceptiveField:
    seen = dmap.seen
    min_rank, max_rank = rank_extremes(subject, seen)
    return field_of(subject, dmap.outputs, seen.sum(1), min_rank, max_rank)


def field_of(subject: Subject, outputs: torch.Tensor, sizes: torch.Tensor,
             min_rank: torch.Tensor, max_rank: torch.Tensor) -> ReceptiveField:
    """The receptive field from each output's number of inputs and extreme ranks (a map's
    rows, or the certificate's bound in any form)."""
    out_ranks = subject.ranks[outputs]
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
        position=int(outputs[row]),
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
    column (raster order, 2D grids only; ``None`` otherwise). At sub-pixel level a pixel is seen
    when one of its channels is, and the past is the pixels before the output's own."""
    if len(subject.pixel_grid) != 2 or not subject.is_pixel_raster:
        return None
    counts = []
    for start in range(0, len(dmap.seen), ROWS_AT_ONCE):
        counts.append(_blind(subject, dmap, start).flatten(1).sum(1))
    counts = torch.cat(counts)
    row = int(torch.argmax(counts))
    size = int(counts[row])
    pixels = _blind(subject, dmap, row, rows=1)[0]
    return BlindSpot(
        size=size,
        position=int(dmap.outputs[row]) if size else None,
        pixels=pixels,
    )


def _blind(subject: Subject, dmap: DependencyMap, start: int, rows: int = ROWS_AT_ONCE):
    """(rows, H, W) blind pixels of the map's rows ``start .. start + rows``."""
    h, w = subject.pixel_grid
    seen = dmap.seen[start : start + rows]
    outputs = dmap.outputs[start : start + rows]
    if subject.subpixel_axis is None:
        seen = seen.reshape(-1, h, w)
        past = subject.ranks[None, :] < subject.ranks[outputs][:, None]
    else:  # pixels, in raster order: one is seen when any of its channels is
        seen = seen.reshape(-1, *subject.grid).any(dim=1 + subject.subpixel_axis)
        past = torch.arange(h * w)[None, :] < subject.pixel_of[outputs][:, None]
    past = past.reshape(-1, h, w)
    # above[r, c]: some pixel of column c in a row < r is seen.
    above = torch.cumsum(seen.int(), dim=1) - seen.int() > 0
    return above & ~seen & past


def clipped_sides(subject: Subject, dmap: DependencyMap) -> tuple[int, list[str]] | None:
    """Whether the grid may clip the receptive field: ``(output, sides)`` when every output that
    sees the most inputs depends on inputs at the grid's border, on a side where its receptive
    field extends (``None`` when one of them sees all it sees well inside the grid).

    A border counts as reached when the next input at the receptive field's own spacing (its
    largest gap along that axis: 2 for a net that sees every other position) would fall off the
    grid. Raster order only: a fixed-size model in another order (MADE) has no larger grid.
    """
    if not subject.is_pixel_raster or len(dmap.outputs) == 0:
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
            if axis == subject.subpixel_axis:  # a pixel's channels are all there, not clipped
                continue
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
