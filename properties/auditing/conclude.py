"""Concluding: violations, mode, verdict, receptive field, blind spot, the loss check's verdict
and the certificate's cross-check, from the gathered evidence alone (never from the model), so
that shards' evidence, merged, concludes as one process would have; and the merge itself."""

from properties import verdict
from properties.auditing.coverage import Coverage
from properties.auditing.result import AuditResult
from properties.evidence import facts, gradients
from properties.evidence.loss import merge_losses
from properties.evidence.perturbation import merge_reports
from properties.verdict import ContractName, Kind, ModelMode, Source, Violation

__all__ = ["SOUNDNESS_BUG", "conclude", "loss_convention", "merge", "soundness_note"]


def conclude(result: AuditResult) -> AuditResult:
    """Violations, mode, verdict, receptive field, blind spot and the loss check's verdict,
    from the evidence gathered so far."""
    s, checks = result.subject, result.checks
    result.violations, result.derived_notes, result.violation_count = [], [], 0
    for mode in ModelMode:
        dmap = result.maps.get(mode)
        report = result.perturbations.get(mode)
        if dmap is not None and "causality" in checks:
            listed, total = facts.gradient_violations(s, dmap, train=mode.training)
            shrunk = _shrunk(result, dmap, report, mode)
            result.violations.extend(listed + shrunk)
            result.violation_count += total + len(shrunk)
        if dmap is not None and dmap.rounding:
            result.derived_notes.append(facts.rounding_note(dmap, mode))
        found = list(result.sample_gradients.get(mode, []))
        if report is not None:
            found += report.violations(s)
            result.derived_notes.extend(report.notes(mode.training))
        result.violations.extend(found)
        result.violation_count += len(found)
    if "causality" in checks and (result.perturbations or result.maps):
        result.mode = verdict.mode_of(result.violations)
        result.causal = verdict.passes(result.mode, s.predicts)
    _contracts(result)
    _facts(result)
    result.loss = result.losses.get(loss_convention(result))
    if result.loss is not None:
        result.coverage.loss_convention = loss_convention(result)
    _cross_check(result)
    result.coverage.verdict_by = _carried_by(result)
    return result


def _shrunk(result: AuditResult, dmap, report, mode: ModelMode) -> list[Violation]:
    """An exact window's outputs that do not reach its far end (the map's rows, cleared by the
    window probes that saw them reach it)."""
    window = result.subject.contract.window
    if window is None or not window.exact or result.subject.contract.width is None:
        return []
    reached = report.reached if report is not None else set()
    return facts.shrunk_violations(result.subject, dmap, reached, train=mode.training)


def _contracts(result: AuditResult) -> None:
    """Each declared contract's verdict besides causality's: no violation of its kinds, and,
    for per-module windows, every module within its own. The certificate alone speaks for the
    contracts it can prove."""
    contract, cert = result.subject.contract, result.certificate
    result.contracts = {}
    checked = "causality" in result.checks and bool(result.perturbations or result.maps)
    for name in contract.names[1:]:
        if checked:
            bad = any(v.contract == name and contract.forbids(v.kind) for v in result.violations)
            result.contracts[name] = not bad
        elif result.certificate_only and cert is not None:
            result.contracts[name] = cert.contracts.get(str(name))
        else:
            result.contracts[name] = None
    if result.modules and result.contracts.get(ContractName.WINDOW) is not None:
        within = all(_module_passes(m) for m in result.modules.values())
        result.contracts[ContractName.WINDOW] = result.contracts[ContractName.WINDOW] and within


def _module_passes(module_result: AuditResult) -> bool:
    within = module_result.contracts.get(ContractName.WINDOW) is not False
    return within and not module_result.unsound


def _carried_by(result: AuditResult) -> str | None:
    """Which evidence carried the verdict: the certificate, when it proves the contract alone
    or leads a confirmation that nothing refuted; else the dynamic evidence."""
    cert = result.certificate
    proved = cert is not None and cert.proved
    if result.certificate_only:
        return "certificate" if cert is not None else None
    if result.coverage.plan is None:  # hand-made evidence, or a shard file of an older version
        return None
    if result.coverage.plan == "confirmation" and proved:
        refuted = result.unsound or result.causal is False
        return "dynamic" if refuted else "certificate"
    return "dynamic" if (result.perturbations or result.maps or result.losses) else None


def _facts(result: AuditResult) -> None:
    """The receptive field and the blind spot, read off the inference map."""
    s, dmap = result.subject, result.dependency_map
    if dmap is None or len(dmap.outputs) == 0:
        return  # no map, or a shard whose chunks held no output: no facts of its own
    if "receptive_field" in result.checks:
        result.receptive_field = facts.receptive_field(s, dmap)
        note = facts.clipping_note(s, dmap)
        if note:
            result.derived_notes.append(note)
    if "blind_spot" in result.checks:
        result.blind_spot = facts.blind_spot(s, dmap)
        if len(s.pixel_grid) == 2 and not s.is_pixel_raster:
            result.derived_notes.append("blind spot: defined for raster order only, not computed")


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
    # The training-mode map runs its inputs in one batch: a layer that mixes the batch gives an
    # output dependencies through the other samples, which the batch-1 bound need not have; the
    # perturbations of training mode are checked.
    dmap = result.maps.get(ModelMode.EVAL)
    if dmap is not None:
        outside = cert.outside(dmap.seen, dmap.outputs)
        result.unsound.extend(
            Violation(t, i, _kind(s.ranks, t, i), Source.GRADIENT, 0.0, "outside the bound")
            for t, i in outside[: facts.GRADIENT_PAIRS_KEPT].tolist()
        )
    checked = [v for v in result.violations if cert.train or not v.train]
    result.unsound.extend(cert.unexplained(s, checked))
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


def _kind(ranks, t: int, i: int) -> Kind:
    if ranks[i] > ranks[t]:
        return Kind.FUTURE
    return Kind.PRESENT if ranks[i] == ranks[t] else Kind.PAST


def loss_convention(result: AuditResult) -> str:
    """``auto`` subjects are checked as ``next`` models when they see the present."""
    if result.subject.predicts != "auto":
        return result.subject.predicts
    return "next" if result.mode == verdict.Causality.INCLUSIVE else "current"


def merge(results: list[AuditResult]) -> AuditResult:
    """The result of one audit from the results of its shards (``audit(..., shard=(i, n))`` for
    every i): evidence united, then concluded again."""
    if not results:
        raise ValueError("merge needs at least one result")
    results = sorted(results, key=lambda r: (r.shard or (0, 1))[0])  # shard 0 ran the search
    first = results[0]
    merged = AuditResult(first.subject, first.checks, first.train, first.exact)
    merged.evidence_notes = list(dict.fromkeys(n for r in results for n in r.evidence_notes))
    for mode in ModelMode:
        maps = [r.maps[mode] for r in results if mode in r.maps]
        if maps:
            merged.maps[mode] = gradients.merge_maps(maps)
        reports = [r.perturbations[mode] for r in results if mode in r.perturbations]
        if reports:
            merged.perturbations[mode] = merge_reports(reports)
    for convention in {c for r in results for c in r.losses}:
        # shards without loss rows (a proof-first plan's other shards) add none
        parts = [r.losses[convention] for r in results if convention in r.losses]
        merged.losses[convention] = merge_losses(parts)
    for mode in ModelMode:
        found = [v for r in results for v in r.sample_gradients.get(mode, [])]
        if found or any(mode in r.sample_gradients for r in results):
            merged.sample_gradients[mode] = found
    merged.certificate = next((r.certificate for r in results if r.certificate), None)
    merged.coverage = Coverage.merged([r.coverage for r in results])
    merged.seconds = sum(r.seconds for r in results)
    return conclude(merged)
