"""Reports: the audit's result as JSON (the CLI's contract) and as text a person reads.

JSON keys (one object per target; a list for ``zoo``): ``target``, ``grid``, ``predicts``,
``train``, ``mode``, ``causal``, ``passed``, ``violations`` (``{output, input, kind, contract,
allowed, evidence, effect, detail}`` and, by contract, ``documents`` ``[input's, output's]``,
``back``/``window``, ``samples`` ``[input's, output's]``; the first ``MAX_VIOLATIONS``) and
``violations_total``, ``contract`` (the declared clauses), ``contracts`` (``{name: {passed,
violations}}``), ``modules`` (per-module windows: each module's verdict), ``receptive_field``
``{size, span, holes, position, max_span}``, ``blind_spot`` ``{size, position}`` (null in 1D),
``loss_equivalence`` ``{max_abs_diff, max_loss_diff, one_pass_loss, masked_loss, holds,
tolerance, positions, positions_total, positions_listed}`` (``positions``: the
``MAX_POSITIONS`` worst rows, worst first, unless ``full``: then every row, by position),
``coverage``, ``noise_floor``, ``tolerance``, ``counterexamples``, ``certificate``,
``incremental`` (:mod:`properties.output.incremental_report`),
``declared``, ``notes``, ``seconds``, and ``pictures`` (paths) when the CLI drew them. Keys of
checks not run are null. Positions are ints in 1D and ``[row, column]`` in 2D.
"""

import json
import math

from properties.auditing.conclude import soundness_note
from properties.auditing.result import AuditResult
from properties.output import incremental_report
from properties.output.blame import blame_dict, blame_lines, model_source
from properties.subject.canonical import Subject
from properties.verdict import ContractName, Kind, ModelMode, Source, Violation

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
    data = {
        "output": subject.position(v.output),
        "input": subject.position(v.input),
        "kind": v.kind,
        "contract": v.contract,
        # seeing the present is no fault of a next-value predictor: it only sets the mode
        "allowed": v.kind == Kind.PRESENT and subject.predicts != "current",
        "evidence": v.evidence,
        "effect": _finite(v.effect),
        "detail": v.described,
    }
    data.update(subject.contract.pair(v.kind, v.output, v.input))
    if v.samples is not None:
        data["samples"] = list(v.samples)
    return data


def contracts_dict(result: AuditResult) -> dict:
    """Each declared contract: its verdict (None: not checked) and its violations' count."""
    out = {}
    if result.causal is not None or result.certificate is not None:
        causal = result.causal if result.mode is not None else (
            None if result.certificate is None else result.certificate.contracts.get("causality")
        )
        out[str(ContractName.CAUSALITY)] = {"passed": causal}
    for name, passed in result.contracts.items():
        out[str(name)] = {"passed": passed}
    for name, entry in out.items():
        entry["violations"] = sum(
            v.contract == name and (v.kind != Kind.PRESENT or result.subject.predicts == "current")
            for v in result.violations
        )
    return out


def modules_dict(result: AuditResult) -> dict:
    """Per-module windows: each declared module's verdict against its own width."""
    out = {}
    for name, m in result.modules.items():
        window = m.subject.contract.window
        rf = m.receptive_field
        out[name] = {
            "width": None if window is None else window.width,
            "passed": m.contracts.get(ContractName.WINDOW) is not False and not m.unsound,
            "mode": m.mode,
            "reach": None if rf is None else rf.max_span + 1,
            "violations": [violation_dict(m.subject, v) for v in m.violations[:MAX_VIOLATIONS]
                           if v.contract == ContractName.WINDOW],
            "certificate": None if m.certificate is None else m.certificate.status,
        }
    return out


def to_dict(
    result: AuditResult, target: str, declared: dict | None = None, *, full: bool = False
) -> dict:
    """The JSON report. ``full``: every per-position row (else the worst ``MAX_POSITIONS``, so
    that the report stays small at any grid size)."""
    s = result.subject
    rf, bs, loss = result.receptive_field, result.blind_spot, result.loss
    eval_report = result.perturbations.get(ModelMode.EVAL)
    passed = result.passed and all(d["ok"] for d in (declared or {}).values())
    return {
        "target": target,
        "grid": list(s.grid),
        "predicts": s.predicts,
        "train": result.train,
        "checks": list(result.checks),
        "mode": result.mode,
        "causal": result.causal,
        "passed": passed,
        "failure": None if passed else failure_text(result, declared),
        "blame": blame_dict(result),
        "model_source": model_source(result),
        "violations": [violation_dict(s, v) for v in result.violations[:MAX_VIOLATIONS]],
        "violations_total": result.violation_count,
        "contract": s.contract.to_json(),
        "contracts": contracts_dict(result),
        "modules": modules_dict(result) or None,
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
        "incremental": incremental_report.incremental_dict(result.incremental, s, full),
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
        # where values of unknown origin that reach an output entered (then not proved), and
        # where input values were read into Python
        "unknown": cert.unknown,
        "reads": cert.reads,
        "contracts": cert.contracts,
        "not_covered": cert.not_covered,
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
        "rounding_positions": loss.rounding,
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
    if v.kind in _OTHER_CONTRACTS:
        return _explain_contract(subject, v, out, inp)
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
    return f"{what}: the model sees the future{where} (input {inp}){_hint(subject, v)}"


_OTHER_CONTRACTS = (Kind.DOCUMENT, Kind.WINDOW, Kind.SHRUNK, Kind.SAMPLE, Kind.PADDING)


def _explain_contract(subject: Subject, v: Violation, out, inp) -> str:
    """The sentence for a violation of a contract other than causality: which contract, what
    the prediction saw (the document, the distance, the other sample), and the likely bug."""
    contract = subject.contract
    where = " in training mode" if v.train else ""
    sample = "" if v.samples is None else f" of sample {v.samples[1]}"
    if v.kind == Kind.SHRUNK:
        w = contract.width
        return (
            f"prediction at position {out} does not see input {inp}, {w - 1} back, the far end "
            f"of its window of {w}{where} [window contract, --window-exact]: the window shrank "
            "(an off-by-one in the window's mask?)"
        )
    if v.source is Source.GRADIENT:
        other = "" if v.samples is None else f" of sample {v.samples[0]}"
        what = (f"prediction at position {out}{sample} has gradient {v.effect:.3g} with respect "
                f"to input {inp}{other}")
    else:
        what = f"prediction at position {out}{sample} changed by {v.effect:.3g} when {v.detail}"
    if v.kind == Kind.DOCUMENT:
        d_in, d_out = contract.document(v.input), contract.document(v.output)
        return (
            f"{what}: it sees document {d_in} (input {inp}) from document {d_out}{where} "
            "[documents contract] (attention, a convolution or a scan across the boundary? "
            "position_ids not passed, or ignored because of an attention mask or a cache?)"
        )
    if v.kind == Kind.WINDOW:
        back = int(contract.ranks[v.output] - contract.ranks[v.input])
        return (
            f"{what}: it sees input {inp}, {back} back, beyond its window of "
            f"{contract.width}{where} [window contract] (a sliding window replaced by full "
            "attention, or a window off by one?)"
        )
    if v.kind == Kind.SAMPLE:
        return (
            f"{what}: it depends on sample {v.samples[0]} of the batch (input {inp}){where} "
            "[batch contract] (statistics over the batch, such as BatchNorm in training mode? a "
            "router with a capacity per batch?)"
        )
    return (
        f"{what}: the real predictions{sample} change with the padding{where} [padding "
        "contract] (a mask that does not reach the attention? absolute positions not shifted "
        "by left padding? one cache position for the whole batch?)"
    )


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


def _hint(subject: Subject, v: Violation) -> str:
    """The likely bug, for the kind of model: a sequence of values is convolved (padding), a
    sequence of tokens attends (a mask) or routes (tokens competing for experts)."""
    if v.train:
        return "; normalization statistics over time (BatchNorm in training mode)?"
    if v.source is Source.SEARCH:
        return ""
    if subject.tokens:
        return (
            "; an attention mask open to the future (no causal mask, or one of the wrong "
            "polarity), or tokens that compete across positions (experts with a capacity)?"
        )
    return "; symmetric padding (padding='same') or a mask open to the future?"


def headline(result: AuditResult) -> Violation | None:
    """The violation a failure message leads with: of the worst kind found (future, else
    present), the sweep's (a plain replacement, a large effect), else Hypothesis' minimal one,
    else a gradient; inference before training mode."""
    if not result.violations:
        return None
    kinds = {v.kind for v in result.violations}
    worst = next((k for k in _WORST if k in kinds), Kind.PRESENT)
    if worst == Kind.PRESENT and result.subject.predicts != "current":
        return None  # seeing the present is allowed: the failure is elsewhere (the loss check)

    def rank(v: Violation):
        return (v.train, v.source is Source.GRADIENT, v.source is Source.SEARCH)

    return min((v for v in result.violations if v.kind == worst), key=rank)


# the kind a failure leads with: causality's future, then the other contracts', then the present
_WORST = (Kind.FUTURE,) + _OTHER_CONTRACTS


def failure_summary(result: AuditResult) -> str:
    """What ``assert_causal`` raises: one sentence, then ``Key: value`` lines as
    ``torch.testing.assert_close`` writes them (mode, violations, the minimal counterexample,
    the evidence)."""
    s = result.subject
    lead = headline(result)
    cert = result.certificate
    stepped = incremental_report.incremental_dict(result.incremental, s)
    if lead is not None:
        first = explain(s, lead)
    elif result.loss is not None and not result.loss.holds:
        first = _loss_sentence(result)
    elif cert is not None and not cert.proved:
        first = f"the certificate does not prove it: {cert.reason}"
    elif result.unsound:
        first = soundness_note(result)
    elif incremental_report.failed(stepped):
        first = incremental_report.incremental_sentence(stepped)
    else:
        first = _loss_sentence(result)
    lines = [first, ""]
    lines.extend(line[0].upper() + line[1:] for line in blame_lines(blame_dict(result)))
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
        others = "".join(f", {kinds[k]} {k}" for k in _OTHER_CONTRACTS if kinds[k])
        lines.append(
            f"Violations: {result.violation_count} ({listed}{kinds[Kind.FUTURE]} future, "
            f"{kinds[Kind.PRESENT]} present{others}; evidence: {', '.join(evidence)})"
        )
    failing = [str(n) for n, ok in result.contracts.items() if ok is False]
    if failing:
        lines.append(f"Contracts broken: {', '.join(failing)}")
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
    if incremental_report.failed(stepped):
        lines.append(f"Incremental: {incremental_report.incremental_sentence(stepped)}")
        module = incremental_report.module_line(stepped["divergence"]["module"])
        if module:
            lines.append(f"Incremental: {module}")
    if _gathered(result):
        coverage = result.coverage.to_json(result.perturbations, s.n_positions)
        lines.append("Evidence: " + _evidence_line(coverage, _floor(result)))
    return "\n".join(lines)


def failure_text(result: AuditResult, declared: dict | None = None) -> str:
    """Why the audit failed, as ``assert_causal`` raises it and the JUnit file holds it: the
    :func:`failure_summary`, or the declared facts that do not match what was measured."""
    if result.passed:
        wrong = [f"{fact}: declared {d['declared']}, measured {d['measured']}"
                 for fact, d in (declared or {}).items() if not d["ok"]]
        return "the measured facts do not match the declared ones: " + "; ".join(wrong)
    return failure_summary(result)


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
    rounding = f", besides {loss.rounding} at rounding level" if loss.rounding else ""
    return (
        f"one-pass predictions differ from the masked ones by {loss.genuine_diff:.3g} "
        f"(tolerance {loss.tolerance:.3g}{rounding}): the one-pass loss is not the sum of the "
        "per-position losses"
    )


MODE_WORDS = {
    "strict": "strictly causal: no prediction sees the present or the future",
    "inclusive": "causal, inclusive: predictions see the present, never the future",
    "none": "NOT causal: some predictions see the future",
}


def verdict_line(result: AuditResult, passed: bool, declared: dict | None = None) -> str:
    """``PASS: <causality>``, or ``FAIL: <what failed>``: the headline names the real cause
    (the loss check, the certificate's soundness, a declared fact), and says what causality is
    when that is not what failed."""
    s = result.subject
    cert = result.certificate
    need = f"(--predicts {s.predicts} needs {_need(s)})"
    causality = None
    if result.mode is not None:
        causality = f"{MODE_WORDS[result.mode]} {need}"
    elif cert is not None and cert.mode is not None:
        proof = "proved" if cert.proved else "not proved"
        causality = f"{proof} by the certificate, best mode {cert.mode} {need}"
    if passed:
        return f"PASS: {causality or _stepped_or_unchecked(result)}"
    causality_fails = result.causal is False or (
        result.mode is None and result.certificate_only and not (cert is not None and cert.proved)
    )
    causes = [causality] if causality_fails and causality else []
    # a broken contract first: a leak across documents also fails the loss check
    broken = [str(n) for n, ok in result.contracts.items() if ok is False]
    if broken:
        plural = "s" if len(broken) > 1 else ""
        causes.append(f"breaks the {' and '.join(broken)} contract{plural}")
    if result.loss is not None and not result.loss.holds:
        causes.append(f"loss equivalence fails: {_loss_sentence(result)}")
    if result.unsound:
        causes.append(
            f"the dynamic evidence refutes the certificate ({len(result.unsound)} dependencies "
            "outside its bound: a soundness bug of the analysis, see the note)"
        )
    if result.incremental is not None and not result.incremental.holds:
        causes.append("a stepped (cached, chunked or streamed) run diverges from the full pass")
    mismatched = [fact for fact, d in (declared or {}).items() if not d["ok"]]
    if mismatched:
        causes.append(f"measured {', '.join(mismatched)} differ from the declared")
    if not causes:
        return f"FAIL: {causality or _stepped_or_unchecked(result)}"
    line = "FAIL: " + "; ".join(causes)
    if causality and not causality_fails:
        line += f"; causality holds: {causality}"
    return line


def _stepped_or_unchecked(result: AuditResult) -> str:
    if result.incremental is not None and result.incremental.holds:
        return "every way of running it gives the full pass's predictions"
    return "causality not checked"


def render_text(
    result: AuditResult, target: str, declared: dict | None = None, pictures=None
) -> str:
    data = to_dict(result, target, declared)
    s = result.subject
    lines = [
        f"{target}  grid {tuple(s.grid)}  predicts {s.predicts}"
        + ("  [inference + training]" if result.train else "  [inference]"),
        verdict_line(result, data["passed"], declared),
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
    if not result.causal or any(ok is False for ok in result.contracts.values()):
        shown = _key_violations(result)
        for v in shown:
            lines.append(f"  - {explain(s, v)} [{v.evidence}]")
        if result.violation_count > len(shown):
            lines.append(f"  ({result.violation_count} violations in all; --json lists them)")
    lines.extend(f"  {line}" for line in blame_lines(data["blame"]))
    lines.extend(contract_lines(result, data))
    rf = data["receptive_field"]
    if rf:
        holes = "" if rf["holes"] is None else f", holes {rf['holes']}"
        dmap = result.dependency_map
        rows = len(dmap.outputs) if dmap is not None else s.n_positions
        # measured rows give a lower bound; the certificate's line gives the upper one
        least = "at least " if rows < s.n_positions else ""
        measured = f"measured on {rows} of {s.n_positions} outputs; " if least else ""
        lines.append(
            f"  receptive field: {least}size {rf['size']}, span {rf['span']}{holes} "
            f"({measured}output {rf['position']}; furthest reach of any output {rf['max_span']})"
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
        if le["rounding_positions"]:
            text += f" ({le['rounding_positions']} of them at rounding level: not counted)"
        if le["one_pass_loss"] is not None:
            text += (
                f"; one-pass loss {le['one_pass_loss']:.4f} vs masked {le['masked_loss']:.4f} nats"
            )
        lines.append(text)
    if data["certificate"]:
        lines.append(certificate_line(data))
    if data["incremental"]:
        lines.extend(incremental_report.incremental_lines(data["incremental"]))
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
    first; then each other contract's (the causal ones only when causality fails)."""
    allowed_present = result.subject.predicts != "current"
    ordered = sorted(result.violations, key=lambda v: v.kind != Kind.FUTURE)  # stable
    picked, seen = [], set()
    for v in ordered:
        key = (v.source, v.train, v.kind)
        if result.causal and v.kind.contract == ContractName.CAUSALITY:
            continue
        if key not in seen and not (allowed_present and v.kind == Kind.PRESENT):
            seen.add(key)
            picked.append(v)
    return picked[:6]


def contract_lines(result: AuditResult, data: dict) -> list[str]:
    """A line per declared contract besides causality, and one per windowed module: the
    verdict, what was declared, and for a window the model-level bound next to the measured
    and the proved reach."""
    lines = []
    contract = result.subject.contract
    for name, entry in data["contracts"].items():
        if name == ContractName.CAUSALITY:
            continue
        word = {True: "PASS", False: "FAIL", None: "not checked"}[entry["passed"]]
        count = f" ({entry['violations']} violations)" if entry["violations"] else ""
        lines.append(f"  {name} contract: {word}{count}; {_declared(result, contract, name)}")
    for name, m in (data["modules"] or {}).items():
        width = "global" if m["width"] is None else f"window {m['width']}"
        word = "PASS" if m["passed"] else "FAIL"
        reach = "" if m["reach"] is None else f", sees {m['reach']} positions back (its own in)"
        proof = "" if m["certificate"] is None else f", certificate {m['certificate']}"
        lines.append(f"    module {name} ({width}): {word}{reach}{proof}")
        module = result.modules[name]
        for v in _key_violations(module)[:2]:
            lines.append(f"      - {explain(module.subject, v)} [{v.evidence}]")
    return lines


def _declared(result: AuditResult, contract, name) -> str:
    if name == ContractName.DOCUMENTS:
        d = contract.documents
        told = ", ".join(k if k == f else f"{k} ({f})" for k, f in d.keywords)
        if result.subject.forward is not None:
            told = told or "the forward hook"
        told = told or "nothing (not passed to the model)"
        return f"{d.count} documents, lengths {','.join(map(str, d.lengths))}; passed as {told}"
    if name == ContractName.WINDOW:
        w = contract.window
        declared = f"window {w.width}" if not w.modules else (
            f"{len(w.matched)} windowed modules"
        )
        bound = w.model_width
        text = f"declared {declared}{' (exact)' if w.exact else ''}; model-level bound " + (
            "unbounded (a global module)" if bound is None else f"{bound} positions"
        )
        rf = result.receptive_field
        if rf is not None:
            text += f"; measured reach {rf.max_span + 1}"
        cert = result.certificate
        if cert is not None and cert.receptive_field is not None:
            text += f"; proved reach at most {cert.receptive_field.max_span + 1}"
        return text
    if name == ContractName.BATCH:
        return "samples of a batch never see each other (sweep, search, gradients)"
    p = contract.padding
    mask = f"mask as {p.keyword}" if p.keyword else "no mask passed"
    return f"{'/'.join(p.sides)} padding, {mask}; inference only"


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
    """What was covered, in one line, and which evidence carried the verdict: "swept 212 of 1024
    cuts, stratified; Hypothesis 180 examples; map: 40 outputs" (and the budget, when one was
    given), led by "proved by the certificate; confirmed by: " or "not proved: directed by the
    bound's 40 candidate cuts ..." under a proof-first plan, from the JSON coverage."""
    parts = []
    plan = coverage.get("plan")
    for mode, p in _by_mode(coverage, "perturbation"):
        if isinstance(p, str):
            continue
        how = ", stratified" if coverage.get("cuts_stratified") else ""
        where = "" if mode == ModelMode.EVAL else f" ({mode.label})"
        if plan == "directed":
            planned = coverage.get("cuts_planned")
            stopped = planned is not None and p["cuts_swept"] < planned
            parts.append(
                f"swept {p['cuts_swept']} of them"
                + (", stopped at a forbidden change" if stopped else "")
                + where
            )
            parts.append(f"Hypothesis {p['hypothesis_examples']} examples among them{where}")
            continue
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
    return _carried(coverage) + "; ".join(parts)


def _carried(coverage: dict) -> str:
    """How a proof-first plan's coverage line begins: which evidence carried the verdict."""
    plan, by = coverage.get("plan"), coverage.get("verdict_by")
    if plan == "confirmation":
        if by == "certificate":
            return "proved by the certificate; confirmed by: "
        return "proved by the certificate, REFUTED by the dynamic evidence: "
    if plan == "directed":
        entered = coverage.get("entered")
        where = f", the future entering at {entered}" if entered else ""
        return (
            f"not proved; the dynamic evidence decides, directed by the bound's "
            f"{coverage.get('candidate_cuts')} candidate cuts{where}: "
        )
    return ""


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
