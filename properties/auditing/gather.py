"""The audit: every check, run on one subject, gathered in one result.

An audit *gathers* evidence (dependency maps, perturbation reports, loss rows, the certificate)
under the coverage policy and the budgets of :mod:`properties.auditing.options`, and then
*concludes* (:mod:`properties.auditing.conclude`) from that evidence alone. Shards gather
disjoint parts of the same evidence; :func:`~properties.auditing.conclude.merge` unites them and
concludes again, which gives the result one process would have given.
"""

import time
from dataclasses import dataclass, replace

import torch
from hypothesis import settings as hypothesis_settings

from properties import progress as bars
from properties.auditing import time_budget
from properties.auditing.conclude import conclude, merge
from properties.auditing.coverage import SKIPPED, UNAVAILABLE, MapCoverage
from properties.auditing.options import CHECKS, DYNAMIC, AuditOptions, CoveragePolicy
from properties.auditing.result import AuditResult
from properties.errors import ModelError
from properties.evidence import gradients
from properties.evidence.gradients import DependencyMap, GradientUnavailable
from properties.evidence.loss import LossRows
from properties.evidence.perturbation import perturbation_evidence
from properties.evidence.sharding import leads
from properties.subject.calls import (
    check_input_untouched,
    check_outputs_finite,
    float64_copy,
    forward,
    model_mode,
)
from properties.subject.canonical import Subject
from properties.subject.memory import (
    DEFAULT_CAP,
    GIB,
    MemoryBudgetError,
    limit_bytes,
    limited,
    measure,
)
from properties.verdict import ModelMode

__all__ = ["CHECKS", "DYNAMIC", "AuditResult", "audit", "conclude", "merge", "validate"]


def audit(
    subject: Subject,
    *,
    checks: tuple[str, ...] | list[str] | None = None,
    train: bool = False,
    exact: bool = False,
    seed: int = 0,
    max_examples: int | None = None,
    shard: tuple[int, int] | None = None,
    memory: float | None = None,
    budget: float | None = None,
    progress: bool | None = None,
    policy: CoveragePolicy | None = None,
    options: AuditOptions | None = None,
) -> AuditResult:
    """Audit ``subject``: causality (gradients and perturbations), receptive field, blind spot,
    loss equivalence and the certificate, as asked by ``checks``.

    ``train=True`` adds the evidence of training mode (same RNG state in both forward passes).
    ``max_examples`` bounds each Hypothesis search (default: the active Hypothesis profile's).
    ``shard=(i, n)`` gathers the i-th of n disjoint parts of the evidence (see :func:`merge`).
    ``checks=None``: every dynamic check, and the certificate when the grid has at most
    ``policy.certificate_positions`` positions.
    ``memory``: gigabytes the stacked passes may hold; ``budget``: seconds the audit may take;
    ``policy``: how much evidence to gather (see :mod:`properties.auditing.options`).
    ``progress``: progress bars on stderr (None: when stderr is a terminal).
    ``options``: all of the above as one :class:`AuditOptions` (the keywords are then ignored).
    """
    if options is None:
        options = AuditOptions(
            checks=None if checks is None else tuple(checks),
            train=train,
            exact=exact,
            seed=seed,
            max_examples=max_examples,
            shard=shard,
            memory=memory,
            budget=budget,
            progress=progress,
            policy=policy or CoveragePolicy(),
        )
    options = options.checked(subject.n_positions)
    memory = options.memory
    if memory is None and options.shard is not None:
        memory = DEFAULT_CAP / GIB  # the same on every machine: shards must cut alike
    with limited(memory), bars.showing(options.progress):
        return _audit(subject, options)


@dataclass
class Gathering:
    """One audit while it gathers: what it was asked, what it has, and its clock."""

    subject: Subject
    options: AuditOptions
    result: AuditResult
    timing: time_budget.Plan | None

    @property
    def policy(self) -> CoveragePolicy:
        return self.options.policy

    def note(self, text: str) -> None:
        self.result.evidence_notes.append(text)


def _audit(subject: Subject, options: AuditOptions) -> AuditResult:
    start = time.perf_counter()
    result = AuditResult(subject, options.checks, options.train, options.exact, options.shard)
    result.evidence_notes.extend(subject.notes)
    timing = None if options.budget is None else time_budget.Plan(options.budget)
    g = Gathering(subject, options, result, timing)
    if not options.certificate_only:
        # First, as every audit's first call: a model that caches state from its first call
        # (properties.subject.batching) then sees the batch size the dynamic evidence uses.
        result.sample_bytes = validate(subject, options.seed, result.evidence_notes, timing)
    if "certificate" in options.checks and leads(options.shard):
        from properties.evidence.certificate import certify

        # within a budget, its time is taken from what the dynamic evidence has left
        result.certificate = certify(subject, train=options.train, seed=options.seed)
    if options.certificate_only:  # the static analysis alone: no sampled evidence
        conclude(result)
        result.seconds = time.perf_counter() - start
        return result
    _dynamic_evidence(g)
    # what the subject learnt while running (e.g. a model that runs at one batch size only)
    result.evidence_notes.extend(n for n in subject.notes if n not in result.evidence_notes)
    conclude(result)
    result.coverage.exhaustive = (
        options.exact or subject.n_positions <= options.policy.exhaustive_positions
    ) and not result.coverage.budgeted
    if timing is not None:
        result.coverage.budget_seconds = options.budget
        result.coverage.forward_seconds = round(timing.forward, 6)
    result.seconds = time.perf_counter() - start
    return result


def _dynamic_evidence(g: Gathering) -> None:
    """The gradient and perturbation evidence, in inference (and training mode when asked)."""
    checks, result = g.options.checks, g.result
    failures: list[ModelError] = []  # evidence the model could not be run for
    for mode in (ModelMode.EVAL, ModelMode.TRAIN) if g.options.train else (ModelMode.EVAL,):
        if g.options.wants_map:
            _gradient_evidence(g, mode)
        if "causality" in checks or ("loss" in checks and not mode.training):
            try:
                _perturbation_evidence(g, mode)
            except ModelError as exc:
                failures.append(exc)
                g.note(f"perturbation evidence unavailable in {mode.label}: {exc.problem}")
                result.coverage.perturbation_unavailable.append(mode)
    if "causality" in checks and not (result.perturbations or result.maps) and failures:
        raise failures[0]  # no evidence at all: the model's error is the answer


def validate(subject: Subject, seed: int, notes: list[str], timing=None) -> int:
    """One ordinary forward pass: output layout, finite values, no in-place change of input.
    With a time budget, also the measured cost of one forward pass of one sample. Returns the
    bytes one sample holds in a forward pass (measured, see :mod:`properties.subject.memory`)."""
    x = subject.draw_inputs(2, torch.Generator().manual_seed(seed))
    with model_mode(subject, train=False):
        y, cost = measure(lambda: forward(subject, x, seed=seed))
        check_outputs_finite(y)
        note = check_input_untouched(subject, x, seed)
        if timing is not None:
            timing.forward = time_budget.measure_forward(
                lambda: forward(subject, x[:1], seed=seed), 1
            )
    if note:
        notes.append(note)
    return cost.per_copy // 2


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


# ---------------------------------------------------------------------------------------------
# Gradient evidence


def _gradient_evidence(g: Gathering, mode: ModelMode) -> None:
    subject, result = g.subject, g.result
    probes, inputs = len(gradients.probe_positions(subject.grid)), g.policy.map_inputs
    if g.timing is not None:  # the probe rows on one input when all of them would not fit
        row = time_budget.VJP_FACTOR * g.timing.forward
        if probes * inputs * row > time_budget.MAP_SHARE * g.timing.left():
            inputs = 1
        probes = min(probes, g.timing.affordable(time_budget.MAP_SHARE, row * inputs))
        if probes == 0:
            g.note(
                f"gradient evidence skipped in {mode.label}: one VJP pass would not fit the time "
                "budget; the perturbations decide"
            )
            result.coverage.gradient[mode] = SKIPPED
            result.coverage.budgeted = True
            return
    why = _float64_vjp_too_big(subject, result.sample_bytes)
    if why is None:
        dmap, inputs, why = _map_in_float64(g, mode, inputs, probes)
    if why is None and dmap.probe_silent:  # round, argmax, thresholds: the gradient says nothing
        why = (
            "the gradients are zero everywhere (a non-differentiable step such as round, argmax "
            "or a threshold, or a model that ignores its input); the perturbations decide"
        )
    if why is not None:
        g.note(f"gradient evidence unavailable in {mode.label}: {why}")
        result.coverage.gradient[mode] = UNAVAILABLE
        return
    result.maps[mode] = dmap
    fewer = dmap.method == "sampled" and dmap.row_inputs < inputs
    result.coverage.gradient[mode] = MapCoverage(
        outputs_mapped=len(dmap.outputs),
        outputs_total=subject.n_positions,
        method=dmap.method,
        passes=dmap.passes,
        inputs=inputs,
        sampled_row_inputs=dmap.row_inputs if fewer else None,
    )


def _float64_vjp_too_big(subject: Subject, sample_bytes: int) -> str | None:
    """Why no float64 VJP can fit the memory budget, said without building the copy: a float64
    VJP holds at least a float64 forward pass (twice the measured float32 one)."""
    if subject.dtype == torch.float64 or not subject.dtype.is_floating_point:
        return None
    at_least = 64 // torch.finfo(subject.dtype).bits * sample_bytes
    if at_least <= limit_bytes():
        return None
    exc = MemoryBudgetError("one float64 VJP pass (1 input)", at_least, limit_bytes(), bound=True)
    return f"{exc.problem} ({exc.fix})"


def _map_in_float64(g: Gathering, mode: ModelMode, inputs: int, probes: int):
    """The map on the float64 copy (on the model's own dtype when the copy does not run), the
    inputs it was taken on, and why there is none (None when there is one)."""
    subject = g.subject
    s64, note = float64_copy(subject)
    if note:
        g.note(note)
    try:
        try:
            return (*_map_within_memory(g, s64, mode, inputs, probes), None)
        except ModelError as exc:
            if s64 is subject:
                raise
            # The float64 copy does not run (a dtype fixed inside the model): its own dtype.
            found = _map_within_memory(g, subject, mode, inputs, probes)
            g.note(
                f"the float64 copy of the model raised ({exc.problem}): gradients taken in "
                f"{subject.dtype}"
            )
            return (*found, None)
    except (GradientUnavailable, ModelError, MemoryBudgetError) as exc:
        if isinstance(exc, MemoryBudgetError):
            return None, inputs, f"{exc.problem} ({exc.fix})"
        return None, inputs, exc.problem if isinstance(exc, ModelError) else str(exc)
    finally:
        del s64  # the float64 copy of a big model is as big as two of it: free it now


def _map_within_memory(g: Gathering, subject: Subject, mode: ModelMode, inputs: int, probes: int):
    """The map on ``inputs`` random inputs, or on one when a VJP of that many does not fit the
    memory budget (a MemoryBudgetError when not even one does)."""
    seed = g.options.seed
    try:
        x = subject.draw_inputs(inputs, torch.Generator().manual_seed(seed + 7))
        with model_mode(subject, train=mode.training):
            return _map(subject, x, g, probes), inputs
    except MemoryBudgetError:
        if inputs == 1:
            raise
    x = subject.draw_inputs(g.policy.map_inputs, torch.Generator().manual_seed(seed + 7))[:1]
    with model_mode(subject, train=mode.training):
        return _map(subject, x, g, probes), 1


def _map(subject: Subject, x: torch.Tensor, g: Gathering, probes: int) -> DependencyMap:
    grid, shard, seed, policy = subject.grid, g.options.shard, g.options.seed, g.policy
    positions = gradients.probe_positions(grid)
    if probes < len(positions):  # a budget: the first, the last, then evenly spread
        picks = torch.tensor(stratified(len(positions), max(0, probes - 2), seed))
        positions = positions[picks][:probes]
        g.result.coverage.budgeted = True
    bars.phase("map: probe rows", len(positions))
    started = time.perf_counter()
    probe = gradients.plain_map(subject, x, outputs=positions, seed=seed)
    row = (time.perf_counter() - started) / max(1, len(positions))  # measured: seconds per row
    colors = gradients.color_count(probe, grid)
    affordable = None if g.timing is None else g.timing.affordable(time_budget.MAP_SHARE, row)
    if g.options.exact or (
        probe.passes + 2 * colors <= policy.max_map_passes
        and (affordable is None or 2 * colors <= affordable)
    ):
        # one step per color, as colored_map advances (its two weighted VJPs share a forward
        # pass): planned as 2 * colors, the bar stopped half way
        bars.phase("map: colors", colors)
        dmap = gradients.colored_map(subject, x, seed=seed, probe=probe, shard=shard)
    else:
        count = policy.sampled_outputs
        if affordable is not None and affordable < count + 2:
            count = max(0, affordable - 2)
            g.result.coverage.budgeted = True
        sampled = stratified(subject.n_positions, count, seed) if affordable != 0 else []
        outputs = torch.tensor(sorted(set(probe.outputs.tolist()) | set(sampled)))
        bars.phase("map: sampled rows", len(outputs) - len(probe.outputs))
        big = gradients.vjp_bytes(subject, x) > policy.big_vjp * len(x)
        rows = x[: policy.sampled_inputs] if big else x
        dmap = gradients.plain_map_around(subject, rows, outputs, probe, seed, shard=shard)
        dmap = replace(dmap, method="sampled", row_inputs=len(rows))
    # A model whose probe rows are all zero gives no gradient evidence (checked on the probe,
    # which every shard computes, so that shards agree).
    return replace(dmap, probe_silent=not probe.seen.any())


# ---------------------------------------------------------------------------------------------
# Perturbation evidence


def _cuts(g: Gathering) -> list[int]:
    """The cuts the sweep covers: every cut, a stratified sample, or what the budget affords."""
    n, seed, policy, coverage = g.subject.n_positions, g.options.seed, g.policy, g.result.coverage
    if g.options.exact or n <= policy.exhaustive_positions:
        cut_list = list(range(n))
    else:
        cut_list = stratified(n, policy.sampled_cuts, seed + 1)
    if g.timing is not None:
        overhead = time_budget.NOISE_FLOOR_PASSES * g.timing.forward
        affordable = g.timing.affordable(
            time_budget.SWEEP_SHARE, g.timing.forward, overhead=overhead
        )
        if affordable < len(cut_list):
            cut_list = stratified(n, max(0, affordable - 2), seed + 1)
            coverage.budgeted = True
    coverage.cuts_stratified = coverage.cuts_stratified or len(cut_list) < n
    return cut_list


def _perturbation_evidence(g: Gathering, mode: ModelMode) -> None:
    """The sweep (and, for the causality check, the Hypothesis search); in inference its
    forward passes also give the loss check's rows."""
    subject, options, result = g.subject, g.options, g.result
    cut_list = _cuts(g)
    observers: list[LossRows] = []

    def observe(x, y_full, tolerance):
        observers.append(LossRows(subject, x, y_full, tolerance))
        return observers[-1]

    wants_loss = "loss" in options.checks and not mode.training
    with model_mode(subject, train=mode.training):
        report = perturbation_evidence(
            subject,
            cut_list=cut_list,
            max_examples=options.max_examples or hypothesis_settings.default.max_examples,
            seed=options.seed,
            train=mode.training,
            shard=options.shard,
            search="causality" in options.checks,
            observe=observe if wants_loss else None,
            timing=g.timing,
        )
    if "causality" in options.checks:
        result.perturbations[mode] = report
    if observers:
        result.losses = observers[0].results()
        result.coverage.loss_checked = report.cuts_swept
        result.coverage.loss_total = subject.n_positions
