"""The audit: every check, run on one subject, gathered in one result.

An audit *gathers* evidence (dependency maps, perturbation reports, loss rows) and then
*concludes* (violations, mode, verdict, receptive field, blind spot) from that evidence alone.
Shards gather disjoint parts of the same evidence; :func:`merge` unites them and concludes again,
which gives the result one process would have given.

Coverage policy (the one place it is stated; the report says what was covered):

- Cuts: grids of up to ``EXHAUSTIVE_POSITIONS`` positions get every cut swept; larger grids a
  stratified sample of ``SAMPLED_CUTS`` cuts. The Hypothesis search always ranges over every cut.
- Dependency map (gradients): every output when the colored map needs at most
  ``MAX_MAP_PASSES`` passes (receptive fields small against the grid) or with ``exact``;
  otherwise the probe outputs (on ``MAP_INPUTS`` inputs) plus a stratified sample of
  ``SAMPLED_OUTPUTS`` outputs (on ``SAMPLED_INPUTS`` input when one float64 VJP holds more than
  ``BIG_VJP`` bytes, as a language model's does).
- Loss equivalence: read off the sweep's forward passes (its masked inputs are the sweep's), so
  it covers the positions of the swept cuts.

``exact=True`` covers every cut, every output and every position, whatever the size.

With a time budget (``budget=`` seconds, ``--budget``) each of the above is an upper bound: the
audit times one forward pass first and plans each phase within its share of the time left
(:mod:`properties.auditing.time_budget`): the map's probe rows (fewer, and on one input, when they
would not fit), then sampled outputs; a stratified sample of cuts; Hypothesis examples until the
deadline. It ends within the budget (+10%); ``coverage`` (and the report's ``coverage:`` line) says
what was covered.

Memory (``memory=`` GB, ``--memory``): every stacked pass holds as many copies as its measured
cost allows (:mod:`properties.subject.memory`); default a quarter of the available memory, at most
1.5 GB (exactly 1.5 GB for shards, so that every shard cuts its chunks the same way).

Shards (``shard=(i, n)``): shard ``i`` runs every n-th chunk of the sweep's cuts and of the
map's colors (or rows) (:mod:`properties.evidence.sharding`): exactly the forward passes the whole
audit would run; shard 0 runs the search for future leaks, shard 1 (mod n) the one for the present.
Every phase is cut in at least ``chunks.MIN_CHUNKS`` chunks where it has that many items, so that a
small audit spreads over up to that many shards.
"""

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from hypothesis import settings as hypothesis_settings

from properties import progress as bars
from properties import verdict
from properties.auditing import time_budget as plan
from properties.auditing.locate import locate
from properties.errors import AdapterError, ModelError
from properties.evidence import facts, gradients
from properties.evidence.gradients import DependencyMap, GradientUnavailable
from properties.evidence.loss import LossEquivalence, LossRows, merge_losses
from properties.evidence.perturbation import (
    PerturbationReport,
    merge_reports,
    perturbation_evidence,
)
from properties.evidence.sharding import leads
from properties.subject.calls import (
    check_input_untouched,
    check_outputs_finite,
    float64_copy,
    forward,
    model_mode,
)
from properties.subject.canonical import Subject
from properties.subject.memory import DEFAULT_CAP, GIB, MemoryBudgetError, limited, measure
from properties.subject.memory import budget as budget_bytes
from properties.verdict import Violation

if TYPE_CHECKING:
    from properties.evidence.certificate import Certificate

CHECKS = ("causality", "receptive_field", "blind_spot", "loss", "certificate")
DYNAMIC = CHECKS[:4]
# The default audit adds the certificate up to this many positions: it costs a few forward passes
# (a boolean product per attention layer, a convolution of N summaries per conv layer), which
# stays within the default audit's budget there; beyond, ask for it (--checks certificate).
CERTIFICATE_POSITIONS = 1024
EXHAUSTIVE_POSITIONS = 1024
SAMPLED_CUTS = 256
MAX_MAP_PASSES = 160
SAMPLED_OUTPUTS = 24
MAP_INPUTS = 3  # random inputs whose dependency maps are united
# The sampled rows of a map too wide to colour are taken on one input when one float64 VJP of
# one input holds more than BIG_VJP bytes (a language model's: on a 124M model each costs about
# nine forward passes): they measure the receptive field at more outputs, while the probe rows
# (three inputs) and the sweep look for leaks. Smaller models keep the union over three inputs.
SAMPLED_INPUTS = 1
BIG_VJP = 256 << 20
MODES = {False: ("eval", "inference"), True: ("train", "training mode")}


@dataclass
class AuditResult:
    """Everything the audit found; :mod:`properties.output.report` turns it into JSON and text."""

    subject: Subject
    checks: tuple[str, ...]
    train: bool
    exact: bool
    shard: tuple[int, int] | None = None
    # gathered evidence
    maps: dict[str, DependencyMap] = field(default_factory=dict)  # by mode: "eval", "train"
    perturbations: dict[str, PerturbationReport] = field(default_factory=dict)
    losses: dict[str, LossEquivalence] = field(default_factory=dict)  # by convention
    coverage: dict = field(default_factory=dict)
    evidence_notes: list[str] = field(default_factory=list)  # said while gathering
    seconds: float = 0.0
    # conclusions (recomputed by conclude())
    mode: str | None = None
    causal: bool | None = None
    violations: list[Violation] = field(default_factory=list)  # examples (see violation_count)
    violation_count: int = 0  # all of them: gradient pairs beyond facts.LISTED are only counted
    receptive_field: facts.ReceptiveField | None = None
    blind_spot: facts.BlindSpot | None = None
    loss: LossEquivalence | None = None
    derived_notes: list[str] = field(default_factory=list)
    # the static bound (certificate check) and its cross-check with the dynamic evidence
    certificate: "Certificate | None" = None
    certificate_exact: bool | None = None  # the measured map equals the bound
    unsound: list = field(default_factory=list)  # dynamic dependencies outside the bound
    sample_bytes: int = 0  # what one sample holds in a forward pass (measured by validate)
    # where each violated kind of dependency enters the model's source (a failing audit only;
    # properties.auditing.locate): {"future": Blame, "present": Blame}
    blame: dict = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """What the report should say besides the verdict (gathering's, then concluding's)."""
        return list(dict.fromkeys(self.evidence_notes + self.derived_notes))

    @property
    def dependency_map(self) -> DependencyMap | None:
        """The inference map (the one the receptive field and blind spot are measured on)."""
        return self.maps.get("eval")

    @property
    def passed(self) -> bool:
        ok = self.causal is not False and not self.unsound
        if self.loss is not None:
            ok = ok and self.loss.holds
        if self.checks == ("certificate",):  # the proof alone decides
            ok = ok and self.certificate is not None and self.certificate.proved
        return ok


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
) -> AuditResult:
    """Audit ``subject``: causality (gradients and perturbations), receptive field, blind spot
    and loss equivalence, as asked by ``checks``.

    ``train=True`` adds the evidence of training mode (same RNG state in both forward passes).
    ``max_examples`` bounds each Hypothesis search (default: the active Hypothesis profile's).
    ``shard=(i, n)`` gathers the i-th of n disjoint parts of the evidence (see :func:`merge`).
    ``checks=None``: every dynamic check, and the certificate when the grid has at most
    ``CERTIFICATE_POSITIONS`` positions.
    ``memory``: gigabytes the stacked passes may hold (default: see the module's docstring).
    ``budget``: seconds the audit may take (see "Coverage policy" above).
    ``progress``: progress bars on stderr (None: when stderr is a terminal).
    """
    shard = _checked_shard(shard)
    if budget is not None and not budget > 0:
        raise AdapterError(f"the time budget must be positive, got {budget}", "pass --budget S")
    if budget is not None and shard is not None:
        raise AdapterError(
            "a time budget cannot be combined with shards (each shard would plan differently)",
            "drop --budget, or shard an audit with a fixed plan",
        )
    if memory is None and shard is not None:
        memory = DEFAULT_CAP / GIB  # the same on every machine: shards must cut alike
    with limited(memory), bars.showing(progress):
        return _audit(subject, checks, train, exact, seed, max_examples, shard, budget)


def _audit(subject, checks, train, exact, seed, max_examples, shard, budget) -> AuditResult:
    start = time.perf_counter()
    if checks is None:
        cheap = subject.n_positions <= CERTIFICATE_POSITIONS
        checks = CHECKS if cheap else DYNAMIC
    result = AuditResult(subject, _checked(checks), train, exact, shard)
    result.evidence_notes.extend(subject.notes)
    timing = None if budget is None else plan.Plan(float(budget))
    if result.checks != ("certificate",):
        # First, as every audit's first call: a model that caches state from its first call
        # (properties.subject.batching) then sees the batch size the dynamic evidence uses.
        result.sample_bytes = validate(subject, seed, result.evidence_notes, timing)
    if "certificate" in result.checks and leads(result.shard):
        from properties.evidence.certificate import certify

        # within a budget, its time is taken from what the dynamic evidence has left
        result.certificate = certify(subject, train=train, seed=seed)
    if result.checks == ("certificate",):  # the static analysis alone: no sampled evidence
        conclude(result)
        result.blame = locate(result, seed)
        result.seconds = time.perf_counter() - start
        return result
    examples = max_examples or hypothesis_settings.default.max_examples
    needs_map = bool({"causality", "receptive_field", "blind_spot"} & set(result.checks))
    failures: list[ModelError] = []  # evidence the model could not be run for
    for training in (False, True) if train else (False,):
        if needs_map:
            _gradient_evidence(subject, result, training, seed, timing)
        if "causality" in result.checks or ("loss" in result.checks and not training):
            try:
                _perturbation_evidence(subject, result, training, seed, examples, timing)
            except ModelError as exc:
                failures.append(exc)
                mode, label = MODES[training]
                result.evidence_notes.append(
                    f"perturbation evidence unavailable in {label}: {exc.problem}"
                )
                result.coverage.setdefault("perturbation", {})[mode] = "unavailable"
    if "causality" in result.checks and not _any_evidence(result) and failures:
        raise failures[0]  # no evidence at all: the model's error is the answer
    # what the subject learnt while running (e.g. a model that runs at one batch size only)
    result.evidence_notes.extend(n for n in subject.notes if n not in result.evidence_notes)
    conclude(result)
    result.blame = locate(result, seed)  # nothing to do when it passed
    result.coverage["exhaustive"] = (
        exact or subject.n_positions <= EXHAUSTIVE_POSITIONS
    ) and not result.coverage.get("budgeted")
    if timing is not None:
        result.coverage["budget_seconds"] = float(budget)
        result.coverage["forward_seconds"] = round(timing.forward, 6)
    result.seconds = time.perf_counter() - start
    return result


def _checked(checks) -> tuple[str, ...]:
    checks = CHECKS if checks is None else tuple(checks)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise AdapterError(f"unknown checks {sorted(unknown)}", f"use some of {', '.join(CHECKS)}")
    return tuple(c for c in CHECKS if c in checks)


def _checked_shard(shard) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        index, count = -1, 0
    if not 0 <= index < count:
        raise AdapterError(
            f"shard {shard} is not (index, count) with 0 <= index < count",
            "pass shard=(i, n) for the i-th of n shards, e.g. from properties.testing.shards(n)",
        )
    return (index, count)


def _any_evidence(result: AuditResult) -> bool:
    return bool(result.perturbations or result.maps)


# ---------------------------------------------------------------------------------------------
# Concluding: everything below reads only the gathered evidence


def conclude(result: AuditResult) -> AuditResult:
    """Violations, mode, verdict, receptive field, blind spot and the loss check's verdict,
    from the evidence gathered so far."""
    s, checks = result.subject, result.checks
    result.violations, result.derived_notes, result.violation_count = [], [], 0
    for training in (False, True):
        mode = MODES[training][0]
        dmap = result.maps.get(mode)
        if dmap is not None and "causality" in checks:
            tag = "gradient/train" if training else "gradient"
            listed, total = facts.gradient_violations(s, dmap, tag)
            result.violations.extend(listed)
            result.violation_count += total
        report = result.perturbations.get(mode)
        if report is not None:
            found = report.violations(s)
            result.violations.extend(found)
            result.violation_count += len(found)
            result.derived_notes.extend(report.notes(training))
    if "causality" in checks and _any_evidence(result):
        result.mode = verdict.mode_of(result.violations)
        result.causal = verdict.passes(result.mode, s.predicts)
    dmap = result.dependency_map
    if dmap is not None and len(dmap.outputs) == 0:
        dmap = None  # a shard whose chunks held no output: no facts of its own
    if dmap is not None and "receptive_field" in checks:
        result.receptive_field = facts.receptive_field(s, dmap)
        note = facts.clipping_note(s, dmap)
        if note:
            result.derived_notes.append(note)
    if dmap is not None and "blind_spot" in checks:
        result.blind_spot = facts.blind_spot(s, dmap)
        if len(s.pixel_grid) == 2 and not s.is_pixel_raster:
            result.derived_notes.append("blind spot: defined for raster order only, not computed")
    result.loss = result.losses.get(loss_convention(result))
    if result.loss is not None:
        result.coverage["loss_convention"] = loss_convention(result)
    _cross_check(result)
    return result


SOUNDNESS_BUG = "SOUNDNESS BUG of the certificate"  # how the cross-check's note begins


def soundness_note(result: AuditResult) -> str | None:
    """The cross-check's note when the dynamic evidence refutes the certificate."""
    return next((n for n in result.derived_notes if n.startswith(SOUNDNESS_BUG)), None)


def _cross_check(result: AuditResult) -> None:
    """The static upper bound must contain the dynamic lower bound: every gradient dependency
    and every perturbation violation. Where the measured map equals the bound, the receptive
    field is exact. A dynamic dependency outside the bound is a bug of the analysis."""
    cert = result.certificate
    result.unsound, result.certificate_exact = [], None
    if cert is None or cert.bound is None:
        return
    s = result.subject
    for mode, dmap in result.maps.items():
        # The training-mode map runs its inputs in one batch: a layer that mixes the batch
        # gives an output dependencies through the other samples, which the batch-1 bound need
        # not have; the perturbations of training mode are checked.
        if mode == "train":
            continue
        outside = cert.outside(dmap.seen, dmap.outputs)
        ranks = s.ranks
        result.unsound.extend(
            Violation(t, i, "future" if ranks[i] > ranks[t] else "present" if ranks[i] ==
                      ranks[t] else "past", f"gradient/{mode}", 0.0, "outside the bound")
            for t, i in outside[: facts.LISTED].tolist()
        )
    checked = [v for v in result.violations if cert.train or not v.evidence.endswith("/train")]
    result.unsound.extend(cert.unexplained(s, checked))
    dmap = result.dependency_map
    if dmap is not None and len(dmap.outputs) == s.n_positions:
        result.certificate_exact = cert.exact_for(dmap)
    if result.unsound:
        v = result.unsound[0]
        result.derived_notes.insert(
            0,
            f"{SOUNDNESS_BUG} ({cert.status}): {len(result.unsound)} dynamic "
            f"dependencies lie outside its bound, e.g. output {s.position(v.output)} on input "
            f"{s.position(v.input)} ({v.evidence}); please report it with this model",
        )
    elif result.certificate_exact:
        result.derived_notes.append(
            "the certificate's bound equals the measured dependency map: the receptive field "
            "is exact (proved from above, reached from below)"
        )


def loss_convention(result: AuditResult) -> str:
    """``auto`` subjects are checked as ``next`` models when they see the present."""
    if result.subject.predicts != "auto":
        return result.subject.predicts
    return "next" if result.mode == "inclusive" else "current"


def merge(results: list[AuditResult]) -> AuditResult:
    """The result of one audit from the results of its shards (``audit(..., shard=(i, n))`` for
    every i): evidence united, then concluded again."""
    if not results:
        raise ValueError("merge needs at least one result")
    results = sorted(results, key=lambda r: (r.shard or (0, 1))[0])  # shard 0 ran the search
    first = results[0]
    merged = AuditResult(first.subject, first.checks, first.train, first.exact)
    merged.evidence_notes = list(dict.fromkeys(n for r in results for n in r.evidence_notes))
    for mode in ("eval", "train"):
        maps = [r.maps[mode] for r in results if mode in r.maps]
        if maps:
            merged.maps[mode] = gradients.merge_maps(maps)
        reports = [r.perturbations[mode] for r in results if mode in r.perturbations]
        if reports:
            merged.perturbations[mode] = merge_reports(reports)
    for convention in {c for r in results for c in r.losses}:
        merged.losses[convention] = merge_losses([r.losses[convention] for r in results])
    merged.certificate = next((r.certificate for r in results if r.certificate), None)
    merged.coverage = _merge_coverage([r.coverage for r in results])
    merged.seconds = sum(r.seconds for r in results)
    return conclude(merged)


SUMMED = ("outputs_mapped", "passes", "checked")  # coverage counts that add up across shards


def _merge_coverage(coverages: list[dict]) -> dict:
    out: dict = {}
    for coverage in coverages:
        for key, value in coverage.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge_coverage([out[key], value])
            elif key in SUMMED and key in out:
                out[key] += value
            else:
                out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------
# Gathering


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
            timing.forward = plan.measure_forward(lambda: forward(subject, x[:1], seed=seed), 1)
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


def _gradient_evidence(
    subject: Subject, result: AuditResult, training: bool, seed: int, timing=None
) -> None:
    mode, label = MODES[training]
    probes, inputs = len(gradients.probe_positions(subject.grid)), MAP_INPUTS
    if timing is not None:  # the probe rows on one input when all of them would not fit
        row = plan.VJP_FACTOR * timing.forward
        if probes * inputs * row > plan.MAP_SHARE * timing.left():
            inputs = 1
        probes = min(probes, timing.affordable(plan.MAP_SHARE, row * inputs))
        if probes == 0:
            result.evidence_notes.append(
                f"gradient evidence skipped in {label}: one VJP pass would not fit the time "
                "budget; the perturbations decide"
            )
            result.coverage.setdefault("gradient", {})[label] = "skipped (budget)"
            result.coverage["budgeted"] = True
            return
    if subject.dtype != torch.float64 and subject.dtype.is_floating_point:
        # A float64 VJP holds at least a float64 forward pass (twice the measured float32 one):
        # when that alone is over the budget, say so without building the copy and the probe.
        scale = 64 // torch.finfo(subject.dtype).bits
        at_least = scale * result.sample_bytes
        if at_least > budget_bytes():
            exc = MemoryBudgetError(
                "one float64 VJP pass (1 input)", at_least, budget_bytes(), bound=True
            )
            result.evidence_notes.append(
                f"gradient evidence unavailable in {label}: {exc.problem} ({exc.fix})"
            )
            result.coverage.setdefault("gradient", {})[label] = "unavailable"
            return
    s64, note = float64_copy(subject)
    if note:
        result.evidence_notes.append(note)
    try:
        try:
            dmap, inputs = _map_within_memory(s64, result, training, seed, inputs, probes, timing)
        except ModelError as exc:
            if s64 is subject:
                raise
            # The float64 copy does not run (a dtype fixed inside the model): its own dtype.
            dmap, inputs = _map_within_memory(
                subject, result, training, seed, inputs, probes, timing
            )
            result.evidence_notes.append(
                f"the float64 copy of the model raised ({exc.problem}): gradients taken in "
                f"{subject.dtype}"
            )
    except (GradientUnavailable, ModelError, MemoryBudgetError) as exc:
        why = exc.problem if isinstance(exc, ModelError) else exc
        if isinstance(exc, MemoryBudgetError):
            why = f"{exc.problem} ({exc.fix})"
        result.evidence_notes.append(f"gradient evidence unavailable in {label}: {why}")
        result.coverage.setdefault("gradient", {})[label] = "unavailable"
        return
    finally:
        del s64  # the float64 copy of a big model is as big as two of it: free it now
    if dmap.probe_silent:  # round, argmax, thresholds: the gradient says nothing at all
        result.evidence_notes.append(
            f"gradient evidence unavailable in {label}: the gradients are zero everywhere "
            "(a non-differentiable step such as round, argmax or a threshold, or a model that "
            "ignores its input); the perturbations decide"
        )
        result.coverage.setdefault("gradient", {})[label] = "unavailable"
        return
    result.maps[mode] = dmap
    result.coverage.setdefault("gradient", {})[label] = {
        "outputs_mapped": len(dmap.outputs),
        "outputs_total": subject.n_positions,
        "method": dmap.method,
        "passes": dmap.passes,
        "inputs": inputs,
    }
    if dmap.method == "sampled" and dmap.row_inputs < inputs:
        result.coverage["gradient"][label]["sampled_row_inputs"] = dmap.row_inputs


def _map_within_memory(subject, result, training, seed, inputs, probes, timing):
    """The map on ``inputs`` random inputs, or on one when a VJP of that many does not fit the
    memory budget (a MemoryBudgetError when not even one does)."""
    try:
        x = subject.draw_inputs(inputs, torch.Generator().manual_seed(seed + 7))
        with model_mode(subject, train=training):
            return _map(subject, x, result, seed, probes, timing), inputs
    except MemoryBudgetError:
        if inputs == 1:
            raise
    x = subject.draw_inputs(MAP_INPUTS, torch.Generator().manual_seed(seed + 7))[:1]
    with model_mode(subject, train=training):
        return _map(subject, x, result, seed, probes, timing), 1


def _map(subject: Subject, x: torch.Tensor, result, seed: int, probes: int, timing):
    grid, shard, exact = subject.grid, result.shard, result.exact
    positions = gradients.probe_positions(grid)
    if probes < len(positions):  # a budget: the first, the last, then evenly spread
        picks = torch.tensor(stratified(len(positions), max(0, probes - 2), seed))
        positions = positions[picks][:probes]
        result.coverage["budgeted"] = True
    bars.phase("map: probe rows", len(positions))
    started = time.perf_counter()
    probe = gradients.plain_map(subject, x, outputs=positions, seed=seed)
    row = (time.perf_counter() - started) / max(1, len(positions))  # measured: seconds per row
    colors = gradients.color_count(probe, grid)
    affordable = None if timing is None else timing.affordable(plan.MAP_SHARE, row)
    if exact or (
        probe.passes + 2 * colors <= MAX_MAP_PASSES
        and (affordable is None or 2 * colors <= affordable)
    ):
        # one step per color, as colored_map advances (its two weighted VJPs share a forward
        # pass): planned as 2 * colors, the bar stopped half way
        bars.phase("map: colors", colors)
        dmap = gradients.colored_map(subject, x, seed=seed, probe=probe, shard=shard)
    else:
        count = SAMPLED_OUTPUTS
        if affordable is not None and affordable < count + 2:
            count = max(0, affordable - 2)
            result.coverage["budgeted"] = True
        sampled = stratified(subject.n_positions, count, seed) if affordable != 0 else []
        outputs = torch.tensor(sorted(set(probe.outputs.tolist()) | set(sampled)))
        bars.phase("map: sampled rows", len(outputs) - len(probe.outputs))
        big = gradients.vjp_bytes(subject, x) > BIG_VJP * len(x)
        rows = x[:SAMPLED_INPUTS] if big else x
        dmap = gradients.plain_map_around(subject, rows, outputs, probe, seed, shard=shard)
        dmap.method = "sampled"
        dmap.row_inputs = len(rows)
    # A model whose probe rows are all zero gives no gradient evidence (checked on the probe,
    # which every shard computes, so that shards agree).
    dmap.probe_silent = not probe.seen.any()
    return dmap


def _perturbation_evidence(
    subject: Subject, result: AuditResult, training: bool, seed: int, examples: int, timing=None
) -> None:
    """The sweep (and, for the causality check, the Hypothesis search); in inference its
    forward passes also give the loss check's rows."""
    n = subject.n_positions
    if result.exact or n <= EXHAUSTIVE_POSITIONS:
        cut_list = list(range(n))
    else:
        cut_list = stratified(n, SAMPLED_CUTS, seed + 1)
    if timing is not None:
        overhead = plan.NOISE_FLOOR_PASSES * timing.forward
        affordable = timing.affordable(plan.SWEEP_SHARE, timing.forward, overhead=overhead)
        if affordable < len(cut_list):
            cut_list = stratified(n, max(0, affordable - 2), seed + 1)
            result.coverage["budgeted"] = True
            result.coverage["cuts_stratified"] = True
    elif len(cut_list) < n:
        result.coverage["cuts_stratified"] = True
    observers: list[LossRows] = []

    def observe(x, y_full, tolerance):
        observers.append(LossRows(subject, x, y_full, tolerance))
        return observers[-1]

    wants_loss = "loss" in result.checks and not training
    with model_mode(subject, train=training):
        report = perturbation_evidence(
            subject,
            cut_list=cut_list,
            max_examples=examples,
            seed=seed,
            train=training,
            shard=result.shard,
            search="causality" in result.checks,
            observe=observe if wants_loss else None,
            timing=timing,
        )
    if "causality" in result.checks:
        result.perturbations[MODES[training][0]] = report
    if observers:
        result.losses = observers[0].results()
        result.coverage["loss_positions"] = {"checked": report.cuts_swept, "total": n}
