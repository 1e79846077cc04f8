"""The audit: every check, run on one subject, gathered in one report.

Coverage policy (the one place it is stated; the report says what was covered):

- Cuts: grids of up to ``EXHAUSTIVE_POSITIONS`` positions get every cut swept; larger grids a
  stratified sample of ``SAMPLED_CUTS`` cuts. The Hypothesis search always ranges over every cut.
- Dependency map (gradients): every output when the colored map needs at most
  ``MAX_MAP_PASSES`` passes (receptive fields small against the grid) or with ``exact``;
  otherwise the probe outputs plus a stratified sample of ``SAMPLED_OUTPUTS`` outputs.
- Loss equivalence: every position up to ``EXHAUSTIVE_POSITIONS``, else ``SAMPLED_POSITIONS``.

``exact=True`` covers every cut, every output and every position, whatever the size.
"""

import time
from dataclasses import dataclass, field

import torch
from hypothesis import settings as hypothesis_settings

from . import facts, gradients
from .causality import PerturbationReport, Violation, perturbation_evidence
from .errors import AdapterError, ModelError
from .gradients import DependencyMap, GradientUnavailable
from .loss import LossEquivalence, loss_equivalence
from .running import check_input_untouched, check_outputs_finite, float64_copy, forward, model_mode
from .subject import Subject

CHECKS = ("causality", "receptive_field", "blind_spot", "loss")
EXHAUSTIVE_POSITIONS = 1024
SAMPLED_CUTS = 256
SAMPLED_POSITIONS = 128
MAX_MAP_PASSES = 160
SAMPLED_OUTPUTS = 32
MAP_INPUTS = 3  # random inputs whose dependency maps are united


@dataclass
class AuditResult:
    """Everything the audit found; :mod:`properties.report` turns it into JSON and text."""

    subject: Subject
    checks: tuple[str, ...]
    train: bool
    exact: bool
    mode: str | None = None
    causal: bool | None = None
    violations: list[Violation] = field(default_factory=list)
    receptive_field: facts.ReceptiveField | None = None
    blind_spot: facts.BlindSpot | None = None
    loss: LossEquivalence | None = None
    dependency_map: DependencyMap | None = None
    perturbations: dict[str, PerturbationReport] = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        ok = self.causal is not False
        if self.loss is not None:
            ok = ok and self.loss.holds
        return ok


def audit(
    subject: Subject,
    *,
    checks: tuple[str, ...] | list[str] = CHECKS,
    train: bool = False,
    exact: bool = False,
    seed: int = 0,
    max_examples: int | None = None,
) -> AuditResult:
    """Audit ``subject``: causality (gradients and perturbations), receptive field, blind spot
    and loss equivalence, as asked by ``checks``.

    ``train=True`` adds the evidence of training mode (same RNG state in both forward passes).
    ``max_examples`` bounds each Hypothesis search (default: the active Hypothesis profile's).
    """
    start = time.perf_counter()
    unknown = set(checks) - set(CHECKS)
    checks = tuple(c for c in CHECKS if c in checks)
    if unknown:
        raise AdapterError(f"unknown checks {sorted(unknown)}", f"use some of {', '.join(CHECKS)}")
    result = AuditResult(subject, checks, train, exact)
    result.notes.extend(subject.notes)
    validate(subject, seed, result.notes)
    n = subject.n_positions
    examples = max_examples or hypothesis_settings.default.max_examples

    modes = [False, True] if train else [False]
    needs_map = bool({"causality", "receptive_field", "blind_spot"} & set(checks))
    failures: list[ModelError] = []  # evidence the model could not be run for
    for training in modes:
        dmap = _gradient_evidence(subject, result, training, seed) if needs_map else None
        if training is False:
            result.dependency_map = dmap
        if dmap is not None and "causality" in checks:
            tag = "gradient/train" if training else "gradient"
            result.violations.extend(facts.gradient_violations(subject, dmap, tag))
        if "causality" in checks:
            mode = "train" if training else "eval"
            try:
                report = _perturbation_evidence(subject, training, exact, seed, examples)
            except ModelError as exc:
                failures.append(exc)
                label = "training mode" if training else "inference"
                result.notes.append(f"perturbation evidence unavailable in {label}: {exc.problem}")
                result.coverage.setdefault("perturbation", {})[mode] = "unavailable"
                continue
            result.perturbations[mode] = report
            result.violations.extend(report.violations)
            result.notes.extend(report.notes)

    if "causality" in checks:
        ran = result.perturbations or any(
            g != "unavailable" for g in result.coverage.get("gradient", {}).values()
        )
        if not ran and failures:  # no evidence at all: the model's error is the answer
            raise failures[0]
        result.mode = facts.mode_of(result.violations)
        result.causal = facts.passes(result.mode, subject.predicts)
    if result.dependency_map is not None:
        if "receptive_field" in checks:
            result.receptive_field = facts.receptive_field(subject, result.dependency_map)
            note = facts.clipping_note(subject, result.dependency_map)
            if note:
                result.notes.append(note)
        if "blind_spot" in checks:
            result.blind_spot = facts.blind_spot(subject, result.dependency_map)
            if len(subject.grid) == 2 and not subject.is_raster:
                result.notes.append("blind spot: defined for raster order only, not computed")
    if "loss" in checks:
        try:
            result.loss = _loss(subject, result, exact, seed)
        except ModelError as exc:
            result.notes.append(f"loss equivalence unavailable: {exc.problem}")
    result.coverage["exhaustive"] = exact or n <= EXHAUSTIVE_POSITIONS
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# Steps


def validate(subject: Subject, seed: int, notes: list[str]) -> None:
    """One ordinary forward pass: output layout, finite values, no in-place change of input."""
    x = subject.draw_inputs(2, torch.Generator().manual_seed(seed))
    with model_mode(subject, train=False):
        y = forward(subject, x, seed=seed)
        check_outputs_finite(y)
        note = check_input_untouched(subject, x, seed)
    if note:
        notes.append(note)


def stratified(n: int, count: int, seed: int) -> list[int]:
    """``count`` positions out of ``n``, one drawn in each of ``count`` equal strata, plus the
    first and the last (where edge effects live)."""
    if count >= n:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    edges = torch.linspace(0, n, count + 1).long()
    picks = {0, n - 1}
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if hi > lo:
            picks.add(lo + int(torch.randint(hi - lo, (1,), generator=generator)))
    return sorted(picks)


def _gradient_evidence(
    subject: Subject, result: AuditResult, training: bool, seed: int
) -> DependencyMap | None:
    s64, note = float64_copy(subject)
    if note:
        result.notes.append(note)
    x = subject.draw_inputs(MAP_INPUTS, torch.Generator().manual_seed(seed + 7))
    label = "training mode" if training else "inference"
    try:
        try:
            with model_mode(s64, train=training):
                dmap = _map(s64, x, result.exact, seed)
        except ModelError as exc:
            if s64 is subject:
                raise
            # The float64 copy does not run (a dtype fixed inside the model): its own dtype.
            with model_mode(subject, train=training):
                dmap = _map(subject, x, result.exact, seed)
            result.notes.append(
                f"the float64 copy of the model raised ({exc.problem}): gradients taken in "
                f"{subject.dtype}"
            )
    except (GradientUnavailable, ModelError) as exc:
        why = exc.problem if isinstance(exc, ModelError) else exc
        result.notes.append(f"gradient evidence unavailable in {label}: {why}")
        result.coverage.setdefault("gradient", {})[label] = "unavailable"
        return None
    if not dmap.seen.any():  # round, argmax, thresholds: the gradient says nothing at all
        result.notes.append(
            f"gradient evidence unavailable in {label}: the gradients are zero everywhere "
            "(a non-differentiable step such as round, argmax or a threshold, or a model that "
            "ignores its input); the perturbations decide"
        )
        result.coverage.setdefault("gradient", {})[label] = "unavailable"
        return None
    result.coverage.setdefault("gradient", {})[label] = {
        "outputs_mapped": len(dmap.outputs),
        "outputs_total": subject.n_positions,
        "method": dmap.method,
        "passes": dmap.passes,
        "inputs": MAP_INPUTS,
    }
    return dmap


def _map(subject: Subject, x: torch.Tensor, exact: bool, seed: int) -> DependencyMap:
    grid = subject.grid
    probe = gradients.plain_map(subject, x, outputs=gradients.probe_positions(grid), seed=seed)
    colors = gradients.color_count(probe, grid)
    if exact or probe.passes + 2 * colors <= MAX_MAP_PASSES:
        return gradients.colored_map(subject, x, seed=seed, probe=probe)
    known = set(probe.outputs.tolist())
    extra = [t for t in stratified(subject.n_positions, SAMPLED_OUTPUTS, seed) if t not in known]
    rows = gradients.plain_map(subject, x, outputs=torch.tensor(extra), seed=seed)
    order = torch.argsort(torch.cat([probe.outputs, rows.outputs]))
    return DependencyMap(
        outputs=torch.cat([probe.outputs, rows.outputs])[order],
        seen=torch.cat([probe.seen, rows.seen])[order],
        strength=torch.cat([probe.strength, rows.strength])[order],
        passes=probe.passes + rows.passes,
        method="sampled",
    )


def _perturbation_evidence(
    subject: Subject, training: bool, exact: bool, seed: int, examples: int
) -> PerturbationReport:
    n = subject.n_positions
    if exact or n <= EXHAUSTIVE_POSITIONS:
        cut_list = list(range(n))
    else:
        cut_list = stratified(n, SAMPLED_CUTS, seed + 1)
    with model_mode(subject, train=training):
        return perturbation_evidence(
            subject, cut_list=cut_list, max_examples=examples, seed=seed, train=training
        )


def _loss(subject: Subject, result: AuditResult, exact: bool, seed: int) -> LossEquivalence:
    convention = subject.predicts
    if convention == "auto":
        convention = "next" if result.mode == "inclusive" else "current"
    n = subject.n_positions
    if exact or n <= EXHAUSTIVE_POSITIONS:
        positions = list(range(n))
    else:
        positions = stratified(n, SAMPLED_POSITIONS, seed + 2)
    x = subject.draw_inputs(1, torch.Generator().manual_seed(seed + 3), integral=True)
    with model_mode(subject, train=False):
        loss = loss_equivalence(subject, x, convention=convention, positions=positions, seed=seed)
    result.coverage["loss_positions"] = {"checked": len(positions), "total": n}
    result.coverage["loss_convention"] = convention
    return loss
