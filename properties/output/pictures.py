"""Pictures of the dependency relation: what each prediction sees, and where it must not look.

- Sequences (and any grid, over flat positions): the *dependency matrix*, one row per mapped
  output and one column per input, over the region the contract forbids, shaded by clause
  (inputs of later rank; the diagonal too for ``predicts="current"``; other packed documents;
  positions beyond the window): what is left white is the allowed region. The violations are
  marked by evidence (gradient: a cross, perturbation: a ring); under it, the receptive field of
  one output as a strip over the inputs, where holes show (the lecture's dilated net sees every
  other past value).
- Images: the receptive field of a pixel on the image grid, in the style of the PixelCNN
  paper's figure (lecture slide 19): the current pixel, the pixels it sees, its causal past and
  its blind spot; a second panel for the output with the largest blind spot, if any.
- The incremental check: the difference between each stepped run and the full pass along the
  sequence, one panel per fixed schedule (its chunk boundaries marked), one for every schedule
  Hypothesis drew, one for the minimal divergence (in float64 too), against the tolerances.

The arrays are prepared without matplotlib (:func:`dependency_matrix`, :func:`categories`), so
they can be tested; drawing uses the Agg canvas directly and never touches pyplot's global
state. matplotlib is imported on first use (``pip install autoregressive-audit[plots]``).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from properties.auditing.result import AuditResult
from properties.contracts import KIND_OF_CODE
from properties.errors import AuditError
from properties.evidence import facts
from properties.evidence.gradients import DependencyMap
from properties.verdict import Kind, Source

# Categories of an input position relative to one output (values of :func:`categories`).
FUTURE, PRESENT, PAST, GAP, SEEN, LEAK, OTHER_DOCUMENT, BEYOND_WINDOW = range(8)
SHADE_FUTURE = "#fde0dd"
SHADE_PRESENT_FORBIDDEN = "#f768a1"
SHADE_PRESENT_ALLOWED = "#fff2ae"
SHADE_DOCUMENT = "#e7d4f0"
SHADE_WINDOW = "#d4ecd0"
COLORS = {
    FUTURE: SHADE_FUTURE,
    PRESENT: SHADE_PRESENT_FORBIDDEN,  # SHADE_PRESENT_ALLOWED where the present may be seen
    PAST: "#d9d9d9",
    GAP: "#ff9f1c",
    SEEN: "#2c7fb8",
    LEAK: "#b2182b",
    OTHER_DOCUMENT: SHADE_DOCUMENT,
    BEYOND_WINDOW: SHADE_WINDOW,
}
# The category of each contract code (properties.contracts.KIND_OF_CODE) in the pictures.
_CATEGORY_OF_KIND = {
    Kind.FUTURE: FUTURE,
    Kind.PRESENT: PRESENT,
    Kind.DOCUMENT: OTHER_DOCUMENT,
    Kind.WINDOW: BEYOND_WINDOW,
}
MARKERS = {"gradient": "x", "perturbation": "o"}
MODE_COLORS = {False: "#000000", True: "#7a0177"}  # inference, training mode
FRAME = "#000000"  # around the position predicted, and its row in the matrix


# ---------------------------------------------------------------------------------------------
# Data (no matplotlib)


def _require_map(result: AuditResult) -> DependencyMap:
    if result.dependency_map is None:
        raise AuditError(
            "pictures need the dependency map, which this audit does not have (gradients "
            "unavailable, or only the loss check run)",
            "run the causality or receptive_field check on a differentiable model",
        )
    return result.dependency_map


def present_forbidden(result: AuditResult) -> bool:
    """Whether seeing the present is a violation: only for ``predicts="current"``."""
    return result.subject.predicts == "current"


@dataclass
class Matrix:
    """The dependency matrix as arrays: rows are the mapped outputs, columns every input."""

    outputs: np.ndarray  # (M,) flat output positions
    seen: np.ndarray  # (M, N) bool
    future: np.ndarray  # (M, N) bool: input of later rank than the row's output
    present: np.ndarray  # (M, N) bool: the row's own rank
    present_forbidden: bool
    # evidence ("gradient", "perturbation/train"...) -> (row indices, input positions)
    violations: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    unmapped: int = 0  # violations at outputs with no row (sampled maps)
    # (M, N) bool: another packed document's input; beyond the window (the contract's)
    other_document: np.ndarray | None = None
    beyond_window: np.ndarray | None = None

    @property
    def forbidden(self) -> np.ndarray:
        out = self.future | (self.present if self.present_forbidden else False)
        for region in (self.other_document, self.beyond_window):
            if region is not None:
                out = out | region
        return out


def dependency_matrix(result: AuditResult) -> Matrix:
    dmap = _require_map(result)
    codes = result.subject.contract.codes(dmap.outputs)
    kind = {k: codes == code for code, k in enumerate(KIND_OF_CODE) if k is not None}
    contract = result.subject.contract
    matrix = Matrix(
        outputs=dmap.outputs.numpy(),
        seen=dmap.seen.numpy(),
        future=kind[Kind.FUTURE].numpy(),
        present=kind[Kind.PRESENT].numpy(),
        present_forbidden=present_forbidden(result),
        other_document=kind[Kind.DOCUMENT].numpy() if contract.documents else None,
        beyond_window=kind[Kind.WINDOW].numpy() if contract.width else None,
    )
    row_of = dmap.row_of()
    pairs: dict[str, list[tuple[int, int]]] = {}
    for v in result.violations:
        if v.output not in row_of:
            matrix.unmapped += 1
            continue
        pairs.setdefault(v.evidence, []).append((row_of[v.output], v.input))
    for evidence, items in pairs.items():
        rows, inputs = zip(*sorted(set(items)), strict=True)
        matrix.violations[evidence] = (np.array(rows), np.array(inputs))
    return matrix


def categories(result: AuditResult, output: int) -> np.ndarray:
    """``(*grid)`` codes of every input position for one mapped output: FUTURE, PRESENT, PAST
    (causal past, not seen), GAP (1D: a hole between the furthest and the nearest input seen;
    2D: the blind spot, by the rule of :func:`properties.evidence.facts.blind_spot`), SEEN, LEAK
    (seen but forbidden)."""
    dmap = _require_map(result)
    subject = result.subject
    row_of = dmap.row_of()
    if output not in row_of:
        raise AuditError(f"output {subject.position(output)} has no row in the dependency map")
    seen = dmap.seen[row_of[output]]
    ranks = subject.ranks
    contract_codes = subject.contract.codes(torch.tensor([output]))[0]
    codes = torch.full_like(ranks, PAST)
    for code, kind in enumerate(KIND_OF_CODE):
        if kind is not None:
            codes[contract_codes == code] = _CATEGORY_OF_KIND[kind]
    codes[_gaps(result, output, seen) & (contract_codes == 0)] = GAP
    forbidden = contract_codes != 0
    if not present_forbidden(result):
        forbidden &= contract_codes != KIND_OF_CODE.index(Kind.PRESENT)
    codes[seen & ~forbidden] = SEEN
    codes[seen & forbidden] = LEAK
    return codes.reshape(subject.grid).numpy()


def _gaps(result: AuditResult, output: int, seen: torch.Tensor) -> torch.Tensor:
    subject = result.subject
    ranks, rank = subject.ranks, int(subject.ranks[output])
    past_unseen = (ranks < rank) & ~seen
    if len(subject.grid) == 2 and subject.is_raster:
        one = DependencyMap(
            torch.tensor([output]), seen[None], seen[None].float(), passes=0, method="row"
        )
        return facts.blind_spot(subject, one).pixels.flatten()
    if not seen.any():
        return torch.zeros_like(seen)
    lo, hi = int(ranks[seen].min()), int(ranks[seen].max())
    return past_unseen & (ranks > lo) & (ranks < hi)


def row_facts(result: AuditResult, output: int) -> dict:
    """Size, span (in ranks) and gap count of one mapped output's receptive field."""
    codes = categories(result, output).flatten()
    ranks = result.subject.ranks.numpy()
    seen = (codes == SEEN) | (codes == LEAK)
    span = int(ranks[output] - ranks[seen].min()) if seen.any() else 0
    return {"size": int(seen.sum()), "span": span, "gaps": int((codes == GAP).sum())}


def file_stem(target: str) -> str:
    """A file name stem for a target: ``zoo:pixelcnn`` -> ``pixelcnn``,
    ``path/to/leaky.py:Model`` -> ``leaky_Model``, ``pkg.mod:attr`` -> ``pkg.mod_attr``."""
    if target.startswith("zoo:"):
        stem = target[4:]
    elif ":" in target:
        where, attr = target.rsplit(":", 1)
        if where.endswith(".py") or "/" in where or "\\" in where:
            where = Path(where).stem
        stem = f"{where}_{attr}"
    else:
        stem = target
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or "model"


# ---------------------------------------------------------------------------------------------
# Drawing


def require_matplotlib():
    """matplotlib's ``Figure`` and Agg canvas, or an :class:`AuditError` that says how to get
    them."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        fix = "pip install autoregressive-audit[plots]"
        raise AuditError("pictures need matplotlib", fix) from None
    return Figure, FigureCanvasAgg


def draw(result: AuditResult, directory, *, target: str | None = None) -> list[Path]:
    """Draw the pictures of ``result`` into ``directory`` (created if needed); return the paths.

    1D and 3D+ grids: ``STEM-dependencies.png``; 2D: ``STEM-receptive-field.png``. ``target``
    names the model in titles and file names (default: the subject's name).
    """
    require_matplotlib()
    target = target or result.subject.name
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(
            f"cannot create the pictures directory {str(directory)!r}: {exc.strerror}",
            "give a writable directory to --pictures",
        ) from None
    stem = file_stem(target)
    paths = []
    if result.certificate is not None and result.certificate.bound is not None:
        paths.append(directory / f"{stem}-certificate.png")
        _save(draw_certificate(result, target), paths[-1])
    if result.incremental is not None:
        paths.append(directory / f"{stem}-incremental.png")
        _save(draw_incremental(result, target), paths[-1])
    if paths and result.dependency_map is None:
        return paths  # the certificate or the incremental check alone
    if len(result.subject.grid) == 2:
        path = directory / f"{stem}-receptive-field.png"
        _save(draw_image_fields(result, target), path)
    else:
        path = directory / f"{stem}-dependencies.png"
        _save(draw_dependencies(result, target), path)
    return [path] + paths


@dataclass
class Panel:
    """One panel of the incremental picture: curves of |stepped - full| along the sequence."""

    title: str
    curves: list[tuple[str, np.ndarray]]  # (label, (n,) differences)
    tolerances: list[tuple[str, float]]  # (label, value)
    boundaries: list[int] = field(default_factory=list)  # where chunks start
    position: int | None = None  # the first diverging position


MAX_PANELS = 8  # fixed schedules drawn one per panel (the rest join the Hypothesis panel)


def incremental_panels(result: AuditResult) -> list[Panel]:
    """The incremental picture's panels, as arrays (no matplotlib)."""
    rep = result.incremental
    dtype = rep.dtype
    shown = rep.tried[: min(rep.fixed, MAX_PANELS)]
    panels = [
        Panel(
            f"{o.schedule.describe(rep.variants)}: {o.verdict}",
            [(dtype, o.diffs.numpy())],
            [(f"tolerance ({dtype})", o.tolerance)],
            [a for a, _ in o.schedule.spans[1:]],
        )
        for o in shown
    ]
    rest = [o for o in rep.tried if o not in shown]
    if rest:
        panels.append(Panel(
            f"{len(rest)} more schedules (Hypothesis' and the shrinker's)",
            [("", o.diffs.numpy()) for o in rest],
            [(f"tolerance ({dtype})", rep.tolerance)],
        ))
    d = rep.divergence
    if d is not None:
        curves = [(dtype, d.diffs.numpy())]
        tolerances = [(f"tolerance ({dtype})", d.tolerance)]
        if d.diffs64 is not None:
            curves.append(("float64", d.diffs64.numpy()))
            tolerances.append(("tolerance (float64)", d.tolerance64))
        panels.append(Panel(
            f"minimal divergence: {d.schedule.describe(rep.variants)}",
            curves, tolerances, [a for a, _ in d.schedule.spans[1:]], d.position,
        ))
    return panels


def draw_incremental(result: AuditResult, target: str):
    """|stepped - full| per position, on a log scale (exact zeros drawn at the bottom)."""
    import matplotlib.pyplot as plt

    panels = incremental_panels(result)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 2.9 * rows), squeeze=False)
    values = [c for p in panels for _, c in p.curves] + [np.array([t for p in panels
                                                                   for _, t in p.tolerances])]
    positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values] + [np.ones(1)])
    floor = float(positive.min()) / 10
    ceiling = float(positive.max()) * 10
    for ax, panel in zip(axes.flat, panels, strict=False):
        for (label, curve), color in zip(panel.curves, ("#2c7fb8", "#d95f02"), strict=False):
            many = len(panel.curves) > 2
            y = np.clip(np.nan_to_num(curve, nan=ceiling, posinf=ceiling), floor, ceiling)
            ax.plot(y, color="#7f7f7f" if many else color, lw=0.6 if many else 1.2,
                    alpha=0.5 if many else 1.0, label=None if many else label)
        for (label, value), style in zip(panel.tolerances, ("--", ":"), strict=False):
            ax.axhline(max(value, floor), color="#b2182b", ls=style, lw=0.9, label=label)
        for b in panel.boundaries:
            ax.axvline(b - 0.5, color="#bdbdbd", lw=0.5)
        if panel.position is not None:
            ax.axvline(panel.position, color="#b2182b", lw=1.5, alpha=0.4,
                       label=f"first divergence ({panel.position})")
        ax.set_yscale("log")
        ax.set_ylim(floor, ceiling)
        ax.set_title(panel.title if len(panel.title) < 70 else panel.title[:67] + "...",
                     fontsize=7)
        ax.set_xlabel("position", fontsize=7)
        ax.set_ylabel("|stepped - full|", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    verdict = "holds" if result.incremental.holds else "DIVERGES"
    fig.suptitle(f"{target}: stepped runs against the full pass ({verdict})", fontsize=10)
    fig.tight_layout()
    return fig


CERTIFICATE_SIDE = 512  # the first outputs and inputs drawn (a 8192 x 8192 image says no more)


def draw_certificate(result: AuditResult, target: str):
    """The certificate's bound beside the measured map, in rank order: what the proof allows
    and what the gradients reached (red: measured outside the bound, a soundness bug)."""
    import matplotlib.pyplot as plt

    cert, s = result.certificate, result.subject
    by_rank = torch.argsort(s.ranks)
    side = min(len(by_rank), CERTIFICATE_SIDE)
    keep = by_rank[:side]
    bound = cert.rows(keep)[:, keep].numpy()  # rows of either form of summary
    forbidden = (s.contract.codes(keep)[:, keep] != 0).numpy()
    if not present_forbidden(result):
        forbidden &= ~np.eye(side, dtype=bool)  # ranks are sorted: the diagonal is the present
    panels = [("certificate: " + cert.status.replace("_", " ") + f", best mode {cert.mode}",
               _rgb_bound(bound, None, forbidden=forbidden))]
    dmap = result.dependency_map
    if dmap is not None:
        seen = torch.zeros(len(s.ranks), len(s.ranks), dtype=torch.bool)
        measured = torch.zeros(len(s.ranks), dtype=torch.bool)
        seen[dmap.outputs] = dmap.seen
        measured[dmap.outputs] = True
        exact = " (equal: exact)" if result.certificate_exact else ""
        panels.append((f"measured (gradients){exact}", _rgb_bound(
            bound, seen[keep][:, keep].numpy(), measured[keep].numpy())))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.2), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("input (by rank)")
        ax.set_ylabel("output (by rank)")
    shown = "" if side == len(by_rank) else f" (first {side} ranks)"
    fig.suptitle(f"{target}: the proof beside the measurement{shown}", fontsize=10)
    fig.tight_layout()
    return fig


def _rgb_bound(
    bound: np.ndarray, seen: np.ndarray | None, measured=None, forbidden=None
) -> np.ndarray:
    """White: proved independent; grey: the bound allows it; black: measured and allowed;
    red: measured outside the bound; pale blue: a row the gradients did not measure. With the
    contract's ``forbidden`` region (the bound alone): pale pink where it is proved, dark red
    where the bound does not exclude it."""
    image = np.ones(bound.shape + (3,))
    if seen is None:
        if forbidden is not None:
            image[forbidden] = (0.99, 0.88, 0.87)
        image[bound] = (0.15, 0.15, 0.15)
        if forbidden is not None:
            image[bound & forbidden] = (0.6, 0.05, 0.1)
        return image
    image[bound] = (0.72, 0.72, 0.72)
    if measured is not None:
        image[~measured] = (0.88, 0.93, 1.0)
    image[seen & bound] = (0.1, 0.1, 0.1)
    image[seen & ~bound] = (0.85, 0.1, 0.1)
    return image


def _save(fig, path: Path) -> None:
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise AuditError(
            f"cannot write {str(path)!r}: {exc.strerror}", "give a writable directory"
        ) from None


def _facts_line(result: AuditResult) -> str:
    s = result.subject
    parts = [f"grid {tuple(s.grid)}", f"predicts {s.predicts}"]
    if result.mode is not None:
        parts.append(f"mode {result.mode}")
    verdict = "PASS" if result.passed else "FAIL"
    rf = result.receptive_field
    if rf is not None:
        parts.append(f"RF size {rf.size}, span {rf.span}")
        if rf.holes is not None:
            parts.append(f"holes {rf.holes}")
    if result.blind_spot is not None:
        parts.append(f"blind spot {result.blind_spot.size} px")
    if result.train:
        parts.append("inference + training")
    return f"{verdict}: " + ", ".join(parts)


def _color(code: int, forbidden_present: bool) -> str:
    if code == PRESENT and not forbidden_present:
        return SHADE_PRESENT_ALLOWED
    return COLORS[code]


def _rgb(codes: np.ndarray, forbidden_present: bool) -> np.ndarray:
    from matplotlib.colors import to_rgb

    table = np.array([to_rgb(_color(c, forbidden_present)) for c in range(len(COLORS))])
    return table[codes]


def _patch(label: str, color: str, edge: str = "#555555", width: float = 0.5):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, edgecolor=edge, linewidth=width, label=label)


def _category_handles(present: set[int], gap_label: str, forbidden_present: bool) -> list:
    labels = {
        SEEN: "seen",
        PAST: "causal past, not seen",
        GAP: gap_label,
        FUTURE: "future (must not be seen)",
        PRESENT: "the position predicted"
        + (" (must not be seen)" if forbidden_present else " (may be seen)"),
        LEAK: "seen, but forbidden: a leak",
        OTHER_DOCUMENT: "another document (must not be seen)",
        BEYOND_WINDOW: "beyond the window (must not be seen)",
    }
    order = (SEEN, GAP, PAST, PRESENT, FUTURE, OTHER_DOCUMENT, BEYOND_WINDOW, LEAK)
    handles = []
    for c in order:
        if c in present or c == PRESENT:  # the predicted position is framed even when seen
            edge = (FRAME, 2.0) if c == PRESENT else ("#555555", 0.5)
            handles.append(_patch(labels[c], _color(c, forbidden_present), *edge))
    return handles


# -- 1D: the dependency matrix and one receptive field --------------------------------------


def draw_dependencies(result: AuditResult, target: str):
    Figure, FigureCanvasAgg = require_matplotlib()
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    matrix = dependency_matrix(result)
    subject = result.subject
    m, n = matrix.seen.shape
    fig = Figure(figsize=(9.5, 8.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=[6, 1])
    ax = fig.add_subplot(grid[0])
    strip = fig.add_subplot(grid[1], sharex=ax)

    image = np.ones((m, n, 3))
    image[matrix.future] = to_rgb(SHADE_FUTURE)
    shade = SHADE_PRESENT_FORBIDDEN if matrix.present_forbidden else SHADE_PRESENT_ALLOWED
    image[matrix.present] = to_rgb(shade)
    if matrix.other_document is not None:
        image[matrix.other_document] = to_rgb(SHADE_DOCUMENT)
    if matrix.beyond_window is not None:
        image[matrix.beyond_window] = to_rgb(SHADE_WINDOW)
    image[matrix.seen & ~matrix.forbidden] = to_rgb(COLORS[SEEN])
    image[matrix.seen & matrix.forbidden] = to_rgb(COLORS[LEAK])
    ax.imshow(image, aspect="auto", interpolation="nearest")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda y, _: str(matrix.outputs[int(y)]) if 0 <= y < m else "")
    )
    ax.set_ylabel("output position" + ("" if m == n else f" ({m} of {n} mapped)"))
    ax.tick_params(labelbottom=False)

    handles = [
        _patch("seen", COLORS[SEEN]),
        _patch("seen, but forbidden: a leak", COLORS[LEAK]),
        _patch("future inputs (forbidden)", SHADE_FUTURE),
        _patch(
            "present (forbidden: predicts current)"
            if matrix.present_forbidden
            else f"present (allowed: predicts {subject.predicts})",
            shade,
        ),
    ]
    if matrix.other_document is not None:
        handles.append(_patch("other documents (forbidden: documents contract)", SHADE_DOCUMENT))
    if matrix.beyond_window is not None:
        width = subject.contract.width
        handles.append(_patch(f"beyond the window of {width} (forbidden)", SHADE_WINDOW))
    size = max(8.0, min(40.0, 4000.0 / max(m, n)))
    for evidence, (rows, inputs) in sorted(matrix.violations.items()):
        kind, training = evidence.split("/")[0], evidence.endswith("/train")
        color = MODE_COLORS[training]
        filled = MARKERS[kind] == "x"
        style = {"color": color} if filled else {"facecolors": "none", "edgecolors": color}
        ax.scatter(inputs, rows, marker=MARKERS[kind], s=size, linewidths=1.0, **style)
        label = f"{kind} evidence{' (training mode)' if training else ''}: {len(rows)}"
        handles.append(
            Line2D(
                [],
                [],
                marker=MARKERS[kind],
                linestyle="",
                color=color,
                markerfacecolor=color if filled else "none",
                label=label,
            )
        )
    if matrix.unmapped:
        handles.append(_patch(f"{matrix.unmapped} violations at unmapped outputs", "#ffffff"))

    rf = result.receptive_field
    output = rf.position if rf is not None else int(matrix.outputs[m // 2])
    row = int(np.searchsorted(matrix.outputs, output))
    ax.add_patch(Rectangle((-0.5, row - 0.5), n, 1, fill=False, edgecolor=FRAME, linewidth=1.2))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.95)
    ax.set_title(
        f"{target}: which inputs each prediction depends on\n{_facts_line(result)}", fontsize=10
    )

    codes = categories(result, output).ravel()  # grids of 3 or more axes: flat positions
    strip.imshow(
        _rgb(codes, matrix.present_forbidden)[None], aspect="auto", interpolation="nearest"
    )
    strip.set_yticks([])
    strip.add_patch(
        Rectangle((output - 0.5, -0.5), 1, 1, fill=False, edgecolor=FRAME, linewidth=2.5)
    )
    if n <= 128:  # one cell per position is visible: draw the cell borders
        strip.set_xticks(np.arange(-0.5, n, 1), minor=True)
        strip.grid(which="minor", axis="x", color="#ffffff", linewidth=0.6)
        strip.tick_params(which="minor", length=0)
    strip.set_xlabel("input position" + (" (flat, C order)" if len(subject.grid) > 1 else ""))
    f = row_facts(result, output)
    strip.set_title(
        f"receptive field of output {subject.position(output)} (the framed row "
        f"above): size {f['size']}, span {f['span']}, holes {f['gaps']}",
        fontsize=9,
    )
    present = set(np.unique(codes).tolist())
    strip.legend(
        handles=_category_handles(present, "hole", matrix.present_forbidden),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.55),
        ncol=6,
        fontsize=8,
        frameon=False,
    )
    return fig


# -- 2D: receptive fields on the image --------------------------------------------------------


def image_outputs(result: AuditResult) -> list[tuple[str, int]]:
    """The outputs to draw on the image, with their role: the receptive field's, then the one
    with the largest blind spot (when there is a blind spot and it is another output)."""
    picks = []
    if result.receptive_field is not None:
        picks.append(("receptive field", result.receptive_field.position))
    bs = result.blind_spot
    if bs is not None and bs.position is not None:
        if not picks or picks[0][1] != bs.position:
            picks.append(("blind spot", bs.position))
        else:
            picks[0] = ("receptive field and blind spot", bs.position)
    if not picks:
        dmap = _require_map(result)
        picks.append(("receptive field", int(dmap.outputs[len(dmap.outputs) // 2])))
    return picks


def draw_image_fields(result: AuditResult, target: str):
    Figure, FigureCanvasAgg = require_matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    subject = result.subject
    h, w = subject.grid
    picks = image_outputs(result)
    fig = Figure(figsize=(max(7.6, 5.4 * len(picks)), 6.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(picks), squeeze=False)[0]
    present: set[int] = set()
    perturbed = False
    for ax, (role, output) in zip(axes, picks, strict=True):
        codes = categories(result, output)
        present |= set(np.unique(codes).tolist())
        ax.imshow(_rgb(codes, present_forbidden(result)), interpolation="nearest")
        r, c = subject.position(output)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=FRAME, lw=2.2))
        ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
        ax.grid(which="minor", color="#ffffff", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
        marks = [
            subject.position(v.input)
            for v in result.violations
            if v.output == output and v.source is not Source.GRADIENT
        ]
        if marks:
            perturbed = True
            ys, xs = zip(*marks, strict=True)
            ax.scatter(xs, ys, marker="o", s=40, facecolors="none", edgecolors="#000000")
        f = row_facts(result, output)
        ax.set_title(
            f"{role} of output [{r}, {c}]\nsees {f['size']} pixels, reaches {f['span']} back "
            f"in raster order; blind spot {f['gaps']} px",
            fontsize=9,
        )
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    handles = _category_handles(present, "blind spot (past, not seen)", present_forbidden(result))
    if perturbed:
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor="none",
                markeredgecolor="#000000",
                label="perturbation evidence",
            )
        )
    fig.legend(
        handles=handles, loc="outside lower center", ncol=2 + len(picks), fontsize=8, frameon=False
    )
    fig.suptitle(f"{target}: what a pixel's prediction sees\n{_facts_line(result)}", fontsize=10)
    return fig


__all__ = [
    "FUTURE",
    "GAP",
    "LEAK",
    "PAST",
    "PRESENT",
    "SEEN",
    "Matrix",
    "categories",
    "dependency_matrix",
    "draw",
    "file_stem",
    "image_outputs",
    "require_matplotlib",
    "row_facts",
]
