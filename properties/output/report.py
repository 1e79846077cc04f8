"""Reports: the audit's result as JSON (the CLI's contract) and as text a person reads.

JSON keys (one object per target; a list for ``zoo``): ``target``, ``grid``, ``predicts``,
``train``, ``mode``, ``causal``, ``passed``, ``violations`` (``{output, input, kind, evidence,
effect, detail}``, the first ``MAX_VIOLATIONS``) and ``violations_total``, ``receptive_field``
``{size, span, holes, position, max_span}``, ``blind_spot`` ``{size, position}`` (null in 1D),
``loss_equivalence`` ``{max_abs_diff, max_loss_diff, one_pass_loss, masked_loss, holds,
tolerance, positions, positions_total, positions_listed}`` (``positions``: the
``MAX_POSITIONS`` worst rows, worst first, unless ``full``: then every row, by position),
``coverage``, ``noise_floor``, ``tolerance``, ``counterexamples``,
``declared``, ``notes``, ``seconds``, and ``pictures`` (paths) when the CLI drew them. Keys of
checks not run are null. Positions are ints in 1D and ``[row, column]`` in 2D.
"""

import json
import math

from properties.auditing.conclude import soundness_note
from properties.auditing.result import AuditResult
from properties.subject.canonical import Subject
from properties.verdict import Kind, ModelMode, Source, Violation

__all__ = [
    "MAX_POSITIONS",
    "MAX_VIOLATIONS",
    "certificate_dict",
    "certificate_line",
    "coverage_line",
    "dumps",
    "explain",
    "failure_summary",
    "headline",
    "render_table",
    "render_text",
    "to_dict",
    "verdict_line",
    "violation_dict",
]

MAX_VIOLATIONS = 100
MAX_POSITIONS = 20  # per-position rows listed in the JSON unless it is asked in full


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "nan")


def violation_dict(subject: Subject, v: Violation) -> dict:
    return {
        "output": subject.position(v.output),
        "input": subject.position(v.input),
        "kind": v.kind,
        # seeing the present is no fault of a next-value predictor: it only sets the mode
        "allowed": v.kind == Kind.PRESENT and subject.predicts != "current",
        "evidence": v.evidence,
        "effect": _finite(v.effect),
        "detail": v.described,
    }


def to_dict(
    result: AuditResult, target: str, declared: dict | None = None, *, full: bool = False
) -> dict:
    """The JSON report. ``full``: every per-position row (else the worst ``MAX_POSITIONS``, so
    that the report stays small at any grid size)."""
    s = result.subject
    rf, bs, loss = result.receptive_field, result.blind_spot, result.loss
    eval_report = result.perturbations.get(ModelMode.EVAL)
    return {
        "target": target,
        "grid": list(s.grid),
        "predicts": s.predicts,
        "train": result.train,
        "mode": result.mode,
        "causal": result.causal,
        "passed": result.passed and all(d["ok"] for d in (declared or {}).values()),
        "violations": [violation_dict(s, v) for v in result.violations[:MAX_VIOLATIONS]],
        "violations_total": result.violation_count,
        "receptive_field": None
        if rf is None
        else {
            "size": rf.size,
            "span": rf.span,
            "holes": rf.holes,
            "position": s.position(rf.position),
            "max_span": rf.max_span,
        },
        "blind_spot": None
        if bs is None
        else {
            "size": bs.size,
            "position": None if bs.position is None else s.position(bs.position),
        },
        "loss_equivalence": None if loss is None else _loss_dict(s, loss, full),
        "coverage": result.coverage.to_json(result.perturbations, s.n_positions),
        "noise_floor": None if eval_report is None else eval_report.noise_floor,
        "tolerance": None if eval_report is None else eval_report.tolerance,
        "counterexamples": {
            f"{mode}/{kind}": {**vars(p), "description": p.describe(result.subject.vocab)}
            for mode, rep in result.perturbations.items()
            for kind, p in rep.counterexamples.items()
        },
        "certificate": certificate_dict(result),
        "declared": declared,
        "notes": result.notes,
        "seconds": round(result.seconds, 3),
    }


def certificate_dict(result: AuditResult) -> dict | None:
    """The static certificate: status, best mode, the bound's receptive field, examples of
    forbidden pairs (with the op where the future entered), ops that lost precision."""
    cert, s = result.certificate, result.subject
    if cert is None:
        return None
    rf = cert.receptive_field
    return {
        "status": cert.status,
        "reason": cert.reason,
        "mode": cert.mode,
        "receptive_field": None
        if rf is None
        else {"size": rf.size, "span": rf.span, "holes": rf.holes,
              "position": s.position(rf.position)},
        "exact": result.certificate_exact,
        "forbidden": [
            {"output": s.position(f.output), "input": s.position(f.input), "kind": f.kind,
             "op": f.op}
            for f in cert.forbidden
        ],
        "forbidden_total": cert.forbidden_count,
        "lost_precision": cert.lost_precision,
        "path_dependent": cert.path_dependent,
        "train": cert.train,
        "unsound": [violation_dict(s, v) for v in result.unsound[:MAX_VIOLATIONS]],
        "seconds": round(cert.seconds, 3),
    }


def certificate_line(data: dict) -> str:
    c = data["certificate"]
    if c["status"] == "unavailable":
        return f"  certificate: unavailable: {c['reason']}"
    words = "PROVED" if c["status"] == "proved" else "not proved"
    text = f"  certificate: {words}, best mode {c['mode']}"
    rf = c["receptive_field"]
    if rf:
        holes = "" if rf["holes"] is None else f", holes {rf['holes']}"
        exact = " (exact: the measured map reaches it)" if c["exact"] else ""
        text += f"; receptive field at most size {rf['size']}, span {rf['span']}{holes}{exact}"
    if c["status"] != "proved" and c["reason"]:
        text += f"; {c['reason']}"
    if c["path_dependent"]:
        text += "; holds for the control-flow path taken (the model reads input values)"
    return text + f" [{c['seconds']:.2f} s]"


def _loss_dict(subject: Subject, loss, full: bool) -> dict:
    rows = loss.positions
    if not full and len(rows) > MAX_POSITIONS:
        rows = sorted(
            rows, key=lambda r: (-r["max_abs_diff"], -r.get("loss_diff", 0.0), r["position"])
        )[:MAX_POSITIONS]
    return {
        "max_abs_diff": loss.max_abs_diff,
        "max_loss_diff": loss.max_loss_diff,
        "one_pass_loss": loss.one_pass_loss,
        "masked_loss": loss.masked_loss,
        "holds": loss.holds,
        "tolerance": loss.tolerance,
        "positions": [{**row, "position": subject.position(row["position"])} for row in rows],
        "positions_total": len(loss.positions),
        "positions_listed": "all" if len(rows) == len(loss.positions) else "worst",
    }


def dumps(data) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str)


# ---------------------------------------------------------------------------------------------
# Text


def explain(subject: Subject, v: Violation) -> str:
    """One sentence a user can act on, in the style of ``torch.testing.assert_close``."""
    out, inp = subject.position(v.output), subject.position(v.input)
    if v.source is not Source.GRADIENT:
        what = f"prediction at position {out} changed by {v.effect:.3g} when {v.detail}"
    else:
        what = (
            f"prediction at position {out} has gradient {v.effect:.3g} with respect to input {inp}"
        )
    where = " in training mode" if v.train else ""
    if v.kind == Kind.PRESENT:
        hint = "" if v.train else _present_hint(subject)
        return f"{what}: the model sees the present{where}{hint}"
    return f"{what}: the model sees the future{where} (input {inp}){_hint(v)}"


def _present_hint(subject: Subject) -> str:
    """A model that sees the present: a missing shift, unless the present it sees is another
    channel of the same position, generated before it (a colour PixelCNN)."""
    advice = _subpixel_advice(subject)
    return f" (a missing shift? or, {advice})" if advice else " (a missing shift?)"


def _subpixel_advice(subject: Subject) -> str:
    """How to audit a model with several input channels per position at sub-pixel level."""
    if subject.features == 1 or subject.subpixel_axis is not None:
        return ""
    return (
        f"if the {subject.features} channels of a position are generated one after another, as "
        "a colour PixelCNN's R -> G -> B masks do, audit at sub-pixel level: --order "
        "raster+channels, order='raster+channels' in the API"
    )


def _hint(v: Violation) -> str:
    if v.train:
        return "; normalization statistics over time (BatchNorm in training mode)?"
    if v.source is Source.SEARCH:
        return ""
    return "; symmetric padding (padding='same') or a mask open to the future?"


def headline(result: AuditResult) -> Violation | None:
    """The violation a failure message leads with: of the worst kind found (future, else
    present), the sweep's (a plain replacement, a large effect), else Hypothesis' minimal one,
    else a gradient; inference before training mode."""
    if not result.violations:
        return None
    worst = Kind.FUTURE if any(v.kind == Kind.FUTURE for v in result.violations) else Kind.PRESENT

    def rank(v: Violation):
        return (v.train, v.source is Source.GRADIENT, v.source is Source.SEARCH)

    return min((v for v in result.violations if v.kind == worst), key=rank)


def failure_summary(result: AuditResult) -> str:
    """What ``assert_causal`` raises: one sentence, then ``Key: value`` lines as
    ``torch.testing.assert_close`` writes them (mode, violations, the minimal counterexample,
    the evidence)."""
    s = result.subject
    lead = headline(result)
    cert = result.certificate
    if lead is not None:
        first = explain(s, lead)
    elif cert is not None and not cert.proved:
        first = f"the certificate does not prove it: {cert.reason}"
    else:
        first = _loss_sentence(result)
    lines = [first, ""]
    if result.unsound:  # the notes gathered before it may come first in result.notes
        lines.append(soundness_note(result))
    if cert is not None:
        lines.append(f"Certificate: {cert.status}, best mode {cert.mode}"
                     + (f"; lost precision at {', '.join(cert.lost_precision[:3])}"
                        if cert.lost_precision else ""))
    if result.mode is not None:
        lines.append(f"Mode: {result.mode} (predicts={s.predicts!r} needs {_need(s)})")
    if result.violations:
        kinds = {k: sum(v.kind == k for v in result.violations) for k in Kind}
        evidence = sorted({v.evidence for v in result.violations})
        listed = "" if result.violation_count == len(result.violations) else "of those listed: "
        lines.append(
            f"Violations: {result.violation_count} ({listed}{kinds[Kind.FUTURE]} future, "
            f"{kinds[Kind.PRESENT]} present; evidence: {', '.join(evidence)})"
        )
    for mode, report in result.perturbations.items():
        for kind, p in report.counterexamples.items():
            found = next((v for v in report.found if v.kind == kind), None)
            line = (
                f"Minimal counterexample ({kind}, {mode.label}): "
                f"{p.describe(result.subject.vocab)}"
            )
            if found is not None:
                where = s.position(found.output)
                line += f": prediction at position {where} changed by {found.effect:.3g}"
            lines.append(line)
    if result.loss is not None and not result.loss.holds:
        lines.append(f"Loss equivalence: {_loss_sentence(result)}")
    if _gathered(result):
        coverage = result.coverage.to_json(result.perturbations, s.n_positions)
        lines.append("Evidence: " + _evidence_line(coverage, _floor(result)))
    return "\n".join(lines)


def _need(subject: Subject) -> str:
    """The modes the subject's convention accepts (:func:`properties.verdict.passes`)."""
    return "strict" if subject.predicts == "current" else "strict or inclusive"


def _gathered(result: AuditResult) -> bool:
    """Whether any dynamic evidence was gathered (not the certificate alone)."""
    return bool(result.maps or result.perturbations or result.losses)


def _floor(result: AuditResult):
    report = result.perturbations.get(ModelMode.EVAL)
    return None if report is None else report.noise_floor


def _loss_sentence(result: AuditResult) -> str:
    loss = result.loss
    if loss is None:
        return "the audit failed"
    return (
        f"one-pass predictions differ from the masked ones by {loss.max_abs_diff:.3g} "
        f"(tolerance {loss.tolerance:.3g}): the one-pass loss is not the sum of the "
        "per-position losses"
    )


def verdict_line(result: AuditResult, passed: bool) -> str:
    s = result.subject
    cert = result.certificate
    verdict = "PASS" if passed else "FAIL"
    if result.mode is None and cert is not None and cert.mode is not None:
        proof = "proved" if cert.proved else "not proved"
        return (
            f"{verdict}: {proof} by the certificate, best mode {cert.mode} "
            f"(--predicts {s.predicts} needs {_need(s)})"
        )
    if result.mode is None:
        return verdict + ": causality not checked"
    words = {
        "strict": "strictly causal: no prediction sees the present or the future",
        "inclusive": "causal, inclusive: predictions see the present, never the future",
        "none": "NOT causal: some predictions see the future",
    }[result.mode]
    return f"{verdict}: {words} (--predicts {s.predicts} needs {_need(s)})"


def render_text(
    result: AuditResult, target: str, declared: dict | None = None, pictures=None
) -> str:
    data = to_dict(result, target, declared)
    s = result.subject
    lines = [
        f"{target}  grid {tuple(s.grid)}  predicts {s.predicts}"
        + ("  [inference + training]" if result.train else "  [inference]"),
        verdict_line(result, data["passed"]),
    ]
    if result.causal:
        # Seeing the present is what an inclusive model is allowed to do: one line of evidence
        # for the mode, not a list of problems.
        present = [v for v in result.violations if v.kind == Kind.PRESENT]
        if present:
            evidence = sorted({v.evidence for v in present})
            lines.append(
                f"  sees the present at {len({v.output for v in present})} outputs, allowed for "
                f"--predicts {s.predicts} (evidence: {', '.join(evidence)})"
                + (f"; {_subpixel_advice(s)}" if s.predicts == "auto" and s.features > 1 else "")
            )
    else:
        shown = _key_violations(result)
        for v in shown:
            lines.append(f"  - {explain(s, v)} [{v.evidence}]")
        if result.violation_count > len(shown):
            lines.append(f"  ({result.violation_count} violations in all; --json lists them)")
    rf = data["receptive_field"]
    if rf:
        holes = "" if rf["holes"] is None else f", holes {rf['holes']}"
        lines.append(
            f"  receptive field: size {rf['size']}, span {rf['span']}{holes} "
            f"(output {rf['position']}; furthest reach of any output {rf['max_span']})"
        )
    if data["blind_spot"]:
        b = data["blind_spot"]
        where = f" (output {b['position']})" if b["position"] is not None else ""
        lines.append(f"  blind spot: {b['size']} pixels{where}")
    if data["loss_equivalence"]:
        le = data["loss_equivalence"]
        text = (
            f"  loss equivalence: {'holds' if le['holds'] else 'FAILS'}: max |prediction diff| "
            f"{le['max_abs_diff']:.3g} over {le['positions_total']} positions"
        )
        if le["one_pass_loss"] is not None:
            text += (
                f"; one-pass loss {le['one_pass_loss']:.4f} vs masked {le['masked_loss']:.4f} nats"
            )
        lines.append(text)
    if data["certificate"]:
        lines.append(certificate_line(data))
    for fact, d in (declared or {}).items():
        mark = "ok" if d["ok"] else "MISMATCH"
        lines.append(f"  declared {fact}: {d['declared']}, measured {d['measured']}: {mark}")
    if _gathered(result):
        lines.append("  evidence: " + _evidence_line(data["coverage"], data["noise_floor"]))
        lines.append("  coverage: " + coverage_line(data["coverage"]))
    for note in data["notes"]:
        lines.append(f"  note: {note}")
    if pictures:
        lines.append(f"  pictures: {', '.join(str(p) for p in pictures)}")
    lines.append(f"  {data['seconds']:.1f} s")
    return "\n".join(lines)


def _key_violations(result: AuditResult) -> list[Violation]:
    """The violations worth a line: each evidence kind's first, the future before the present
    (which is no violation at all for a ``next``/``auto`` subject), Hypothesis' minimal ones
    first."""
    allowed_present = result.subject.predicts != "current"
    ordered = sorted(result.violations, key=lambda v: v.kind != Kind.FUTURE)  # stable
    picked, seen = [], set()
    for v in ordered:
        key = (v.source, v.train, v.kind)
        if key not in seen and not (allowed_present and v.kind == Kind.PRESENT):
            seen.add(key)
            picked.append(v)
    return picked[:6]


def _by_mode(coverage: dict, kind: str):
    """``(mode, entry)`` of one kind of evidence in a JSON coverage object, by model mode (the
    object also holds the gradient entries under their old names, for one release)."""
    entries = coverage.get(kind, {})
    return [(mode, entries[mode]) for mode in ModelMode if mode in entries]


def _evidence_line(coverage: dict, floor) -> str:
    parts = []
    for mode, g in _by_mode(coverage, "gradient"):
        if isinstance(g, str):
            parts.append(f"gradients ({mode.label}): {g}")
        else:
            parts.append(
                f"gradients ({mode.label}): {g['method']} map, "
                f"{g['outputs_mapped']}/{g['outputs_total']} outputs, {g['passes']} VJP passes, "
                f"union of {g['inputs']} inputs"
                + (
                    f" (sampled rows: {g['sampled_row_inputs']} input)"
                    if "sampled_row_inputs" in g
                    else ""
                )
            )
    for mode, p in _by_mode(coverage, "perturbation"):
        if isinstance(p, str):
            parts.append(f"perturbations ({mode.label}): {p}")
            continue
        parts.append(
            f"perturbations ({mode.label}): {p['cuts_swept']}/{p['cuts_total']} cuts swept, "
            f"{p['hypothesis_examples']} Hypothesis examples"
        )
    if floor is not None:
        parts.append(f"noise floor {floor:.3g}")
    return "; ".join(parts)


def coverage_line(coverage: dict) -> str:
    """What was covered, in one line: "swept 212 of 1024 cuts, stratified; Hypothesis 180
    examples; map: 40 outputs" (and the budget, when one was given), from the JSON coverage."""
    parts = []
    for mode, p in _by_mode(coverage, "perturbation"):
        if isinstance(p, str):
            continue
        how = ", stratified" if coverage.get("cuts_stratified") else ""
        where = "" if mode == ModelMode.EVAL else f" ({mode.label})"
        parts.append(f"swept {p['cuts_swept']} of {p['cuts_total']} cuts{how}{where}")
        parts.append(f"Hypothesis {p['hypothesis_examples']} examples{where}")
    for mode, g in _by_mode(coverage, "gradient"):
        where = "" if mode == ModelMode.EVAL else f" ({mode.label})"
        if isinstance(g, dict):
            parts.append(f"map{where}: {g['outputs_mapped']} outputs")
        else:
            parts.append(f"map{where}: {g}")
    if "budget_seconds" in coverage:
        parts.append(f"within a budget of {coverage['budget_seconds']:g} s")
    elif coverage.get("exhaustive"):
        parts.append("exhaustive")
    return "; ".join(parts)


def _certificate_cell(c: dict | None) -> str:
    """``proved, exact`` (the bound equals the measured map), ``proved``, ``not proved``..."""
    if c is None:
        return "-"
    if c["status"] != "proved":
        return c["status"].replace("_", " ")
    return "proved, exact" if c["exact"] else "proved"


def render_table(rows: list[dict]) -> str:
    """The zoo: one line per model."""
    header = (
        f"{'target':28} {'verdict':7} {'mode':9} {'RF size':>7} {'span':>5} {'holes':>5} "
        f"{'blind':>5} {'loss':>6} {'certificate':>13} {'time':>6}"
    )
    lines = [header, "-" * len(header)]
    for d in rows:
        rf = d["receptive_field"] or {}
        bs = d["blind_spot"]
        le = d["loss_equivalence"]
        lines.append(
            f"{d['target']:28} {'PASS' if d['passed'] else 'FAIL':7} {d['mode'] or '-':9} "
            f"{rf.get('size', '-'):>7} {rf.get('span', '-'):>5} "
            f"{'-' if rf.get('holes') is None else rf['holes']:>5} "
            f"{'-' if bs is None else bs['size']:>5} "
            f"{'-' if le is None else ('ok' if le['holds'] else 'FAIL'):>6} "
            f"{_certificate_cell(d.get('certificate')):>13} {d['seconds']:>5.1f}s"
        )
    return "\n".join(lines)
