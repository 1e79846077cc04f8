"""Concluding: violations, mode, verdict, receptive field, blind spot, the loss check's verdict
and the certificate's cross-check, from the gathered evidence alone (never from the model), so
that shards' evidence, merged, concludes as one process would have; and the merge itself."""

from properties import verdict
from properties.auditing.coverage import Coverage
from properties.auditing.result import AuditResult
from properties.evidence import facts, gradients
from properties.evidence.loss import merge_losses
from properties.evidence.perturbation import merge_reports
from properties.verdict import Kind, ModelMode, Source, Violation

__all__ = ["SOUNDNESS_BUG", "conclude", "loss_convention", "merge", "soundness_note"]


def conclude(result: AuditResult) -> AuditResult:
    """Violations, mode, verdict, receptive field, blind spot and the loss check's verdict,
    from the evidence gathered so far."""
    s, checks = result.subject, result.checks
    result.violations, result.derived_notes, result.violation_count = [], [], 0
    for mode in ModelMode:
        dmap = result.maps.get(mode)
        if dmap is not None and "causality" in checks:
            listed, total = facts.gradient_violations(s, dmap, train=mode.training)
            result.violations.extend(listed)
            result.violation_count += total
        report = result.perturbations.get(mode)
        if report is not None:
            found = report.violations(s)
            result.violations.extend(found)
            result.violation_count += len(found)
            result.derived_notes.extend(report.notes(mode.training))
    if "causality" in checks and (result.perturbations or result.maps):
        result.mode = verdict.mode_of(result.violations)
        result.causal = verdict.passes(result.mode, s.predicts)
    _facts(result)
    result.loss = result.losses.get(loss_convention(result))
    if result.loss is not None:
        result.coverage.loss_convention = loss_convention(result)
    _cross_check(result)
    return result


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
        merged.losses[convention] = merge_losses([r.losses[convention] for r in results])
    merged.certificate = next((r.certificate for r in results if r.certificate), None)
    merged.coverage = Coverage.merged([r.coverage for r in results])
    merged.seconds = sum(r.seconds for r in results)
    return conclude(merged)
