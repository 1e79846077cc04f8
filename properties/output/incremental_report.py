"""The incremental check in the reports: the JSON section ``incremental`` and its text lines.

JSON keys: ``holds``, ``adapter``, ``variants`` (the stepper's ways of running), ``dtype``,
``scale`` (largest |prediction| of the full pass), ``tolerance`` ``{dtype, float64, ulps}``,
``schedules_tried``, ``hypothesis_examples``, ``steps`` (calls of the stepper), ``rounding``
(schedules whose difference vanished in float64), ``poisoned`` (cache values poisoned),
``budgeted``, ``divergence`` (null when it holds: ``schedule`` ``{chunks, cuts, branch,
variant, description}``, ``position`` (the first diverging one; decided in float64 when the
copy ran), ``continuation``, ``diff`` / ``tolerance`` / ``max_diff`` ``{dtype, float64}``,
``first_over_dtype_tolerance``, ``error`` (what a step raised), ``module`` (the first module
whose output diverges: ``{name, type, position, diff, tolerance, input_diverges, parent,
parent_type}``)), ``schedules`` (the fixed ones and the divergence, each ``{description,
chunks, verdict, max_diff, max_diff_float64}``; every schedule tried with ``full``),
``full_pass_seconds``, ``seconds``, ``notes``.
"""

import math

from properties.evidence.incremental import IncrementalReport, Outcome
from properties.subject.canonical import Subject

__all__ = ["failed", "incremental_dict", "incremental_lines", "incremental_sentence"]

MAX_SCHEDULES = 20  # schedules listed in the JSON unless it is asked in full


def _num(x: float | None) -> float | str | None:
    if x is None:
        return None
    return x if math.isfinite(x) else ("inf" if x > 0 else "nan")


def _schedule_row(o: Outcome, variants: list[str]) -> dict:
    return {
        "description": o.schedule.describe(variants),
        "chunks": o.schedule.chunks,
        "verdict": o.verdict,
        "max_diff": _num(o.max_diff),
        "max_diff_float64": _num(o.max_diff64),
    }


def incremental_dict(report: IncrementalReport | None, subject: Subject, full: bool = False):
    if report is None:
        return None
    d = report.divergence
    listed = report.tried if full else _listed(report)
    return {
        "holds": report.holds,
        "adapter": report.adapter,
        "variants": report.variants,
        "dtype": report.dtype,
        "scale": _num(report.scale),
        "tolerance": {
            "dtype": _num(report.tolerance),
            "float64": _num(report.tolerance64),
            "ulps": report.ulps,
        },
        "schedules_tried": len(report.tried),
        "hypothesis_examples": report.examples,
        "steps": report.steps,
        "rounding": report.rounding,
        "poisoned": report.poisoned,
        "budgeted": report.budgeted,
        "divergence": None if d is None else _divergence(d, report, subject),
        "schedules": [_schedule_row(o, report.variants) for o in listed],
        "full_pass_seconds": round(report.full_seconds, 6),
        "seconds": round(report.seconds, 3),
        "notes": report.notes,
    }


def _listed(report: IncrementalReport) -> list[Outcome]:
    """The fixed schedules (they come first), then the divergence."""
    listed = report.tried[: report.fixed][:MAX_SCHEDULES]
    if report.divergence is not None and report.divergence not in listed:
        listed.append(report.divergence)
    return listed


def _divergence(d: Outcome, report: IncrementalReport, subject: Subject) -> dict:
    over = (d.diffs > d.tolerance).nonzero().flatten()
    return {
        "schedule": d.schedule.to_json(report.variants),
        "position": subject.position(d.position),
        "continuation": d.continuation,
        "diff": {"dtype": _num(d.at(d.diffs)), "float64": _num(d.at(d.diffs64))},
        "tolerance": {"dtype": _num(d.tolerance), "float64": _num(d.tolerance64)},
        "max_diff": {"dtype": _num(d.max_diff), "float64": _num(d.max_diff64)},
        "first_over_dtype_tolerance": subject.position(int(over[0])) if len(over) else None,
        "error": d.error,
        "module": report.module,
    }


# ---------------------------------------------------------------------------------------------
# Text


def incremental_sentence(data: dict) -> str:
    """What diverged, in one sentence (a failure message's first line)."""
    d = data["divergence"]
    where = f"at position {d['position']}"
    if d["error"]:
        return (
            f"the stepped run raised {d['error']} {where} on {d['schedule']['description']}: "
            "this way of running the model does not give its predictions"
        )
    dtype = data["dtype"]
    text = (
        f"the stepped run diverges from the full pass {where} on "
        f"{d['schedule']['description']} (minimal): |difference| {_g(d['diff']['dtype'])} in "
        f"{dtype} (tolerance {_g(d['tolerance']['dtype'])})"
    )
    if d["diff"]["float64"] is not None:
        text += (
            f", {_g(d['diff']['float64'])} in float64 (tolerance "
            f"{_g(d['tolerance']['float64'])}): not rounding"
        )
    return text


def _g(x) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"


def module_line(module: dict | None) -> str | None:
    if module is None:
        return None
    if module["name"] is None:
        return f"first diverging module: none found ({module['reason']})"
    text = (
        f"first diverging module: {module['name']} ({module['type']}) at position "
        f"{module['position']}"
    )
    if module["input_diverges"]:
        owner = module["parent"] or "the model"
        text += (
            f"; its input already diverges: the difference arises in the code of {owner} "
            f"({module['parent_type']}) outside its submodules"
        )
    return text


def incremental_lines(data: dict) -> list[str]:
    """The report's lines for the incremental check."""
    if data["holds"]:
        worst = max((r["max_diff"] for r in data["schedules"] if r["max_diff"] is not None),
                    default=0.0, key=lambda v: math.inf if isinstance(v, str) else v)
        lines = [
            f"  incremental: holds: {data['schedules_tried']} schedules "
            f"({data['hypothesis_examples']} from Hypothesis) through {', '.join(data['variants'])}"
            f": every position equals the full pass (largest difference {_g(worst)}, tolerance "
            f"{_g(data['tolerance']['dtype'])} in {data['dtype']})"
        ]
    else:
        lines = [f"  incremental: DIVERGES: {incremental_sentence(data)}"]
        module = module_line(data["divergence"]["module"])
        if module:
            lines.append(f"    {module}")
    extras = []
    if data["rounding"]:
        extras.append(f"{data['rounding']} schedules differed by rounding only (gone in float64)")
    if data["poisoned"]:
        extras.append(f"{data['poisoned']} unwritten cache values poisoned")
    if data["budgeted"]:
        extras.append("cut short by the time budget")
    if extras:
        lines.append("    " + "; ".join(extras))
    return lines + [f"    note: {n}" for n in data["notes"]]


def failed(data: dict | None) -> bool:
    return data is not None and data["divergence"] is not None

