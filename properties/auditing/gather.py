"""The audit: every check, run on one subject, gathered in one result.

An audit *gathers* evidence (dependency maps, perturbation reports, loss rows, the certificate)
under the coverage policy and the budgets of :mod:`properties.auditing.options`, and then
*concludes* (:mod:`properties.auditing.conclude`) from that evidence alone. Shards gather
disjoint parts of the same evidence; :func:`~properties.auditing.conclude.merge` unites them and
concludes again, which gives the result one process would have given.
"""

import time
from dataclasses import dataclass, field, replace

import torch
from hypothesis import settings as hypothesis_settings

from properties import progress as bars
from properties.auditing import time_budget
from properties.auditing.availability import require_some_evidence
from properties.auditing.conclude import conclude, merge
from properties.auditing.coverage import BY_BOUND, SKIPPED, UNAVAILABLE, MapCoverage
from properties.auditing.evidence_plan import (
    EvidencePlan,
    PlanKind,
    plan_evidence,
    stratified,
    stratified_among,
)
from properties.auditing.locate import locate
from properties.auditing.options import CHECKS, DYNAMIC, AuditOptions, CoveragePolicy
from properties.auditing.result import AuditResult
from properties.errors import AdapterError, ModelError
from properties.evidence import gradients, map_rounding
from properties.evidence.gradients import DependencyMap, GradientUnavailable
from properties.evidence.loss import LossRows
from properties.evidence.perturbation import perturbation_evidence
from properties.evidence.sharding import leads
from properties.subject.calls import (
    check_outputs_finite,
    float64_copy,
    forward,
    forward_watching_input,
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

__all__ = [
    "CHECKS", "DYNAMIC", "AuditResult", "audit", "conclude", "merge", "stratified", "validate"
]


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
    options = options.checked(subject.n_positions, stepping=subject.step is not None)
    window = subject.contract.window
    if window is not None and window.matched and options.shard is not None:
        raise AdapterError(
            "per-module windows cannot be sharded (each module is audited whole)",
            "drop --shard, or declare a model-level --window",
        )
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
    reasons: list[str] = field(default_factory=list)  # why evidence could not be gathered
    planned: EvidencePlan | None = None  # decided once the certificate is in

    @property
    def policy(self) -> CoveragePolicy:
        return self.options.policy

    @property
    def plan(self) -> EvidencePlan:
        """The evidence plan (made from the result's certificate when not made yet)."""
        if self.planned is None:
            self.planned = plan_evidence(self.subject, self.options, self.result.certificate)
        return self.planned

    def note(self, text: str) -> None:
        self.result.evidence_notes.append(text)

    def unavailable(self, text: str) -> None:
        """A note on evidence that could not be gathered (the reason, should nothing run)."""
        self.note(text)
        self.reasons.append(text)


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
    certificate = None
    if "certificate" in options.checks and (leads(options.shard) or _plans_by_proof(options)):
        from properties.evidence.certificate import certify

        # within a budget, its time is taken from what the dynamic evidence has left
        certificate = certify(subject, train=options.train, seed=options.seed)
        if leads(options.shard):  # shard 0's is the audit's; the others' only plan
            result.certificate = certificate
    if "incremental" in options.checks:
        result.incremental = _incremental_evidence(g)
    if options.certificate_only:  # the static analysis alone: no sampled evidence
        conclude(result)
        require_some_evidence(result, g.reasons)
        result.blame = locate(result, options.seed)
        result.seconds = time.perf_counter() - start
        return result
    g.planned = plan_evidence(subject, options, certificate)
    result.coverage.plan = str(g.plan.kind)
    result.coverage.candidate_cuts = g.plan.candidates
    result.coverage.entered = g.plan.entered
    if g.plan.kind.proof_first and options.shard is not None:
        # A proof-first plan is a few passes: shard 0 gathers all of it as one process would,
        # the others nothing, so that the merged shards are the unsharded audit.
        if not leads(options.shard):
            conclude(result)
            result.seconds = time.perf_counter() - start
            return result
        g.options = replace(options, shard=None)
    _dynamic_evidence(g)
    _module_evidence(g)
    # what the subject learnt while running (e.g. a model that runs at one batch size only)
    result.evidence_notes.extend(n for n in subject.notes if n not in result.evidence_notes)
    conclude(result)
    require_some_evidence(result, g.reasons)
    result.blame = locate(result, options.seed)  # nothing to do when it passed
    everything = g.plan.kind == PlanKind.EXHAUSTIVE or (
        g.plan.kind == PlanKind.SAMPLED and len(g.plan.cuts) == subject.n_positions
    )
    result.coverage.exhaustive = everything and not result.coverage.budgeted
    if timing is not None:
        result.coverage.budget_seconds = options.budget
        result.coverage.forward_seconds = round(timing.forward, 6)
    result.seconds = time.perf_counter() - start
    return result


def _incremental_evidence(g: Gathering):
    """The incremental check: cached, chunked and streamed runs against the full pass. Within
    a budget it takes its share of the time left (all of it when it is the only check)."""
    from properties.evidence.incremental import incremental_evidence

    deadline = None
    if g.timing is not None:
        alone = g.options.checks == ("incremental",)
        share = 1.0 if alone else time_budget.INCREMENTAL_SHARE
        deadline = time.perf_counter() + share * g.timing.left()
    report = incremental_evidence(
        g.subject,
        seed=g.options.seed,
        max_examples=g.options.max_examples or hypothesis_settings.default.max_examples,
        ulps=g.policy.incremental_ulps,
        poison=g.policy.incremental_poison,
        deadline=deadline,
    )
    g.result.coverage.budgeted = g.result.coverage.budgeted or report.budgeted
    return report


def _plans_by_proof(options: AuditOptions) -> bool:
    """Whether a shard other than the first needs the certificate: to know the plan."""
    return options.policy.proof_first and not options.exact and options.shard is not None


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
                g.unavailable(f"perturbation evidence unavailable in {mode.label}: {exc.problem}")
                result.coverage.perturbation_unavailable.append(mode)
    if "causality" in checks and not (result.perturbations or result.maps) and failures:
        raise failures[0]  # no evidence at all: the model's error is the answer


def _module_evidence(g: Gathering) -> None:
    """Per-module window declarations: each declared module audited on its own, against its
    width (:mod:`properties.subject.modules`); the model itself is held to the bound they
    compose (its contract's window)."""
    window = g.subject.contract.window
    if window is None or not window.matched or "causality" not in g.options.checks:
        return
    from properties.subject import modules

    calls = modules.record(g.subject, [name for name, _ in window.matched])
    checks = ("causality", "receptive_field") + (
        ("certificate",) if "certificate" in g.options.checks else ()
    )
    options = replace(g.options, checks=checks, budget=None, shard=None)
    for name, width in window.matched:
        sub = modules.module_subject(g.subject, calls[name], width, exact=window.exact)
        g.result.modules[name] = _audit(sub, options.checked(sub.n_positions))


def validate(subject: Subject, seed: int, notes: list[str], timing=None) -> int:
    """One ordinary forward pass: output layout, finite values, no in-place change of input.
    With a time budget, also the measured cost of one forward pass of one sample. Returns the
    bytes one sample holds in a forward pass (measured, see :mod:`properties.subject.memory`)."""
    x = subject.draw_inputs(2, torch.Generator().manual_seed(seed))
    with model_mode(subject, train=False):
        notes_of_pass: list[str | None] = []

        def run() -> torch.Tensor:  # the outputs, for the measure to count
            y, changed = forward_watching_input(subject, x, seed=seed)
            notes_of_pass.append(changed)
            return y

        try:
            y, cost = measure(run)
        except ModelError as exc:
            _dispatch_shy(subject, x, seed, exc)
            raise
        note = notes_of_pass[0]
        check_outputs_finite(y)
        if timing is not None:
            timing.forward = time_budget.measure_forward(
                lambda: forward(subject, x[:1], seed=seed), 1
            )
    if note:
        notes.append(note)
    return cost.per_copy // 2


def _dispatch_shy(subject: Subject, x: torch.Tensor, seed: int, exc: ModelError) -> None:
    """The model raised under the memory probe (a ``TorchDispatchMode``): if it runs without
    one, that is the cause to name, not the layout."""
    try:
        forward(subject, x, seed=seed)
    except Exception:
        return  # it fails anyway: the model's own error says why
    raise AdapterError(
        "the model raises under a TorchDispatchMode (the audit measures memory and traces the "
        f"certificate under one), and runs without: {exc.problem}",
        "let the model run under torch's dispatch modes (drop the check that refuses them), "
        "or report the op that fails",
    ) from None


# ---------------------------------------------------------------------------------------------
# Gradient evidence


def _gradient_evidence(g: Gathering, mode: ModelMode) -> None:
    subject, result = g.subject, g.result
    if not g.plan.map_rows:  # a proof-first plan leaves a big model's map to the bound
        g.note(f"no dependency map ({g.plan.kind} plan): {g.plan.why_no_map}")
        result.coverage.gradient[mode] = BY_BOUND
        return
    probes, inputs = len(gradients.probe_positions(subject.grid)), g.policy.map_inputs
    if g.timing is not None:  # the probe rows on one input when all of them would not fit
        row = time_budget.VJP_FACTOR * g.timing.forward
        if probes * inputs * row > time_budget.MAP_SHARE * g.timing.left():
            inputs = 1
        probes = min(probes, g.timing.affordable(time_budget.MAP_SHARE, row * inputs))
        if probes == 0:
            g.unavailable(
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
        g.unavailable(f"gradient evidence unavailable in {mode.label}: {why}")
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
            dmap = _map(subject, x, g, probes)
        if leads(g.options.shard):
            _sample_gradients(g, subject, x, mode)
        return dmap, inputs
    except MemoryBudgetError:
        if inputs == 1:
            raise
    x = subject.draw_inputs(g.policy.map_inputs, torch.Generator().manual_seed(seed + 7))[:1]
    with model_mode(subject, train=mode.training):
        return _map(subject, x, g, probes), 1


def _sample_gradients(g: Gathering, subject: Subject, x: torch.Tensor, mode: ModelMode) -> None:
    """The batch-independence contract's gradients: from each sample's outputs to the other
    samples' inputs (:func:`properties.evidence.batch.gradient_violations`)."""
    if g.subject.contract.batch is None or "causality" not in g.options.checks:
        return
    from properties.evidence import batch

    try:
        with model_mode(subject, train=mode.training):
            found = batch.gradient_violations(
                subject, x, seed=g.options.seed, train=mode.training
            )
    except (GradientUnavailable, ModelError, MemoryBudgetError) as exc:
        g.note(f"gradients between samples unavailable in {mode.label}: {exc}")
        return
    g.result.sample_gradients[mode] = found


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
    # Entries that would decide something and may be rounding (an FFT's cancelled future lags)
    cert = g.result.certificate
    rows = None if cert is None or cert.bound is None else cert.rows  # either form of summary
    dmap = map_rounding.screen(subject, x, dmap, seed=seed, bound_rows=rows)
    # A model whose probe rows are all zero gives no gradient evidence (checked on the probe,
    # which every shard computes, so that shards agree).
    return replace(dmap, probe_silent=not probe.seen.any())


# ---------------------------------------------------------------------------------------------
# Perturbation evidence


def _cuts(g: Gathering) -> tuple[list[int], list[int]]:
    """The cuts the sweep covers, the plan's, in its two rounds (the second is the directed
    plan's rest of the candidates), within what the time budget affords."""
    n, seed, coverage = g.subject.n_positions, g.options.seed, g.result.coverage
    first, more = g.plan.cuts, list(g.plan.focus.more_cuts)
    if g.timing is not None:
        overhead = time_budget.NOISE_FLOOR_PASSES * g.timing.forward
        affordable = g.timing.affordable(
            time_budget.SWEEP_SHARE, g.timing.forward, overhead=overhead
        )
        if affordable < len(first) + len(more):
            coverage.budgeted = True
            if g.plan.kind.proof_first:
                first = _within(first, affordable, seed)
                more = _within(more, affordable - len(first), seed)
            else:
                first, more = stratified(n, max(0, affordable - 2), seed + 1), []
    fewer = len(first) + len(more) < n
    coverage.cuts_stratified = coverage.cuts_stratified or (
        fewer and g.plan.kind != PlanKind.DIRECTED  # the directed plan's are the candidates
    )
    if g.plan.kind.proof_first:
        coverage.cuts_planned = len(first) + len(more)
    return first, more


def _within(cuts: list[int], affordable: int, seed: int) -> list[int]:
    """``cuts``, or a stratified sample of them when fewer are affordable."""
    if affordable >= len(cuts):
        return cuts
    return stratified_among(cuts, max(0, affordable - 2), seed + 1) if affordable > 0 else []


def _probe_indices(g: Gathering, cuts: int) -> dict[str, list[int]]:
    """The probes the sweep covers for the contract's clauses besides causality: every
    document; every window end up to the exhaustive size, else (or within a budget) as many
    ends, stratified, as the ``cuts`` the plan sweeps."""
    contract, policy, n = g.subject.contract, g.policy, g.subject.n_positions
    out = {}
    for family in contract.families()[1:]:
        indices = contract.indices(family)
        if family == "window":
            count = len(indices)
            if not g.options.exact and n > policy.exhaustive_positions:
                count = policy.sampled_cuts
            if g.timing is not None:
                count = min(count, cuts)
            if count < len(indices):
                picks = stratified(len(indices), count, g.options.seed + 3)
                indices = [indices[i] for i in picks]
                g.result.coverage.cuts_stratified = True
        out[family] = indices
    return out


def _perturbation_evidence(g: Gathering, mode: ModelMode) -> None:
    """The sweep (and, for the causality check, the Hypothesis search); in inference its
    forward passes also give the loss check's rows."""
    subject, options, result = g.subject, g.options, g.result
    cut_list, more = _cuts(g)
    # as many window ends as cuts, within a budget: the plan's count, not planned again
    probes = _probe_indices(g, len(cut_list) + len(more)) if "causality" in options.checks else {}
    cap = options.max_examples or hypothesis_settings.default.max_examples
    examples = cap if g.plan.examples is None else min(cap, g.plan.examples)
    observers: list[LossRows] = []

    def observe(x, y_full, tolerance):
        observers.append(LossRows(subject, x, y_full, tolerance))
        return observers[-1]

    wants_loss = "loss" in options.checks and not mode.training
    with model_mode(subject, train=mode.training):
        report = perturbation_evidence(
            subject,
            cut_list=cut_list,
            max_examples=examples,
            seed=options.seed,
            train=mode.training,
            shard=options.shard,
            search="causality" in options.checks,
            observe=observe if wants_loss else None,
            timing=g.timing,
            probes=probes,
            focus=replace(g.plan.focus, more_cuts=tuple(more)),
        )
    if "causality" in options.checks:
        result.perturbations[mode] = report
    if observers:
        result.losses = observers[0].results()
        result.coverage.loss_checked = report.cuts_swept
        result.coverage.loss_total = subject.n_positions
