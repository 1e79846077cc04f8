"""The built-in models (``causal.registry``) as subjects, and their declared facts checked.

This is the only module of ``properties`` that knows about ``causal``: it turns a registry entry
into an ordinary :class:`~properties.subject.canonical.Subject` (layout, grid, classes) and compares
what the audit measured with what the entry declares. The checks themselves never see the registry.
"""

from causal.registry import REGISTRY, Declared, get
from properties.auditing.result import AuditResult
from properties.errors import TargetError
from properties.subject.canonical import Subject, make_subject

__all__ = ["compare", "declared_facts", "names", "zoo_subject"]


def names() -> list[str]:
    return list(REGISTRY)


def zoo_subject(name: str, grid: tuple[int, ...] | None = None, seed: int = 0) -> Subject:
    """A registry model with random weights (seeded), in canonical form."""
    import torch

    try:
        spec = get(name)
    except KeyError as exc:
        raise TargetError(str(exc.args[0]), "pick a name from `zoo` (e.g. zoo:pixelcnn)") from None
    grid = tuple(grid or spec.grid)
    if len(grid) != spec.dims:
        raise TargetError(
            f"zoo:{name} is a {spec.dims}D model but the grid {grid} has {len(grid)} dimensions",
            "use --length for 1D models and --shape H W for 2D ones",
        )
    torch.manual_seed(seed)
    try:
        model = spec.make(grid=grid)
    except Exception as exc:
        raise TargetError(
            f"could not build zoo:{name} on grid {grid}: {exc}", "use its default grid"
        ) from None
    return make_subject(
        model,
        grid=grid,
        layout=spec.layout,
        predicts="current",
        classes=spec.nb_classes,
        value_range=(0.0, float(spec.nb_classes - 1)),
        name=f"zoo:{name}",
    )


def declared_facts(name: str, grid: tuple[int, ...]) -> Declared:
    return get(name).declared(grid)


def compare(declared: Declared, result: AuditResult) -> dict:
    """``{fact: {declared, measured, ok}}`` for every fact the model declares and the audit
    measured."""
    measured = {}
    if result.mode is not None:
        measured["mode"] = result.mode
    rf = result.receptive_field
    if rf is not None:
        measured.update(span=rf.span, size=rf.size, holes=rf.holes)
    if result.blind_spot is not None:
        measured["blind_spot"] = result.blind_spot.size > 0
    out = {}
    for fact in ("mode", "span", "size", "holes", "blind_spot"):
        claim = getattr(declared, fact)
        if claim is None or fact not in measured or measured[fact] is None:
            continue
        out[fact] = {"declared": claim, "measured": measured[fact], "ok": claim == measured[fact]}
    return out
