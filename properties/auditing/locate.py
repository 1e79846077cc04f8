"""Where each violated causality contract's leak enters the model's source (a failing audit only).

For each kind of forbidden dependency the audit found (``future``; ``present`` when the subject
predicts the current value), the certificate's blame (:attr:`Certificate.blames`, taken on the
run it already makes when its bound sees what it must not) wins; without one (no certificate:
the grid is above its default size, ``--checks`` left it out, it was unavailable, or it proved a
model the dynamic evidence refutes) the failing counterexample is replayed with forward hooks
(:func:`properties.evidence.blame.by_modules`): three forward passes of the counterexample's
one or two samples. A passing audit costs nothing.
"""

import torch

from properties.evidence import blame as blaming
from properties.evidence.replacements import ZEROS, Perturbation, apply
from properties.verdict import Kind, ModelMode, Source

__all__ = ["base_pool", "counterexample", "locate", "violated_kinds"]

KINDS = (Kind.FUTURE, Kind.PRESENT)


def violated_kinds(result) -> list[str]:
    """The kinds of dependency that break the subject's contract (``"future"``,
    ``"present"``), worst first."""
    s = result.subject
    kinds = {str(v.kind) for v in result.violations}
    cert = result.certificate
    if result.checks == ("certificate",) and cert is not None and not cert.proved:
        kinds |= {str(f.kind) for f in cert.forbidden}
    allowed = {"present"} if s.predicts != "current" else set()
    return [str(k) for k in KINDS if str(k) in kinds and str(k) not in allowed]


def locate(result, seed: int = 0) -> dict[str, blaming.Blame]:
    """``{kind: Blame}`` for each violated kind that could be located (empty when it passed)."""
    if result.passed:
        return {}
    cert = result.certificate
    found = {}
    for kind in violated_kinds(result):
        site = None if cert is None or result.unsound else cert.blames.get(kind)
        if site is None:
            site = _by_counterexample(result, kind, seed)
        if site is not None:
            found[kind] = site
    return found


def counterexample(result, kind: str) -> tuple[ModelMode, Perturbation] | None:
    """The perturbation that showed a ``kind`` violation, and its mode: Hypothesis' minimal one,
    else the sweep's (the lecture's zeros from the cut on), else one made from a gradient
    violation (normal values from the input's rank on)."""
    s = result.subject
    kind = Kind(kind)
    for mode in (ModelMode.EVAL, ModelMode.TRAIN):
        report = result.perturbations.get(mode)
        if report is None:
            continue
        if kind in report.counterexamples:
            return mode, report.counterexamples[kind]
        for _, (cut, _, k) in sorted(report.sweep.items()):
            if Kind(k) is kind:
                return mode, Perturbation(cut, ZEROS, 0.0, seed=cut)
    for v in result.violations:
        if v.kind is kind and v.source is Source.GRADIENT:
            cut = int(s.ranks[v.input])
            return v.mode, Perturbation(cut, "random" if s.tokens else "normal", 1.0, seed=cut)
    return None


def base_pool(subject, seed: int, pool: int, size: int) -> torch.Tensor:
    """The perturbation evidence's base inputs (``Runner.pool``'s: the same seed, size and
    rounding), without running the model."""
    generator = torch.Generator().manual_seed(seed * 1000 + pool)
    return subject.draw_inputs(size, generator, integral=True)


def _by_counterexample(result, kind: str, seed: int) -> blaming.Blame | None:
    found = counterexample(result, kind)
    if found is None or result.subject.module is None:
        return None
    mode, p = found
    train = mode.training
    x = base_pool(result.subject, seed, p.pool, 2 if train else 1)
    x1 = apply(result.subject, x, p)
    return blaming.by_modules(result.subject, x, x1, kind=kind, cut=p.cut, train=train, seed=seed)
