"""Findings: one per violated contract of one audit, read from its JSON report (the dict
:func:`properties.output.report.to_dict` makes), for the formats CI tools show (SARIF, GitHub
annotations, JUnit, HTML).

A finding is located at the line its leak enters (the report's ``blame``), else at the model's
class (``model_source``: a loss check that fails with no leak located, a declared fact), else
nowhere. Contracts (the SARIF rules):

- ``sees-future``: no prediction may depend on a later input;
- ``sees-present``: under ``--predicts current``, none on its own position either;
- ``loss-equivalence``: the one-pass loss is the sum of the masked per-position losses;
- ``certificate-unsound``: the certificate's bound must hold what the dynamic evidence found;
- ``certificate-unavailable``: an audit of the certificate alone that could not run it;
- ``declared-fact``: a zoo model's declared receptive field or blind spot is what was measured.
"""

from dataclasses import dataclass, field

from properties.output.blame import module_words

__all__ = ["RULES", "Finding", "findings"]

RULES = {  # id: (check, title, what the contract says)
    "sees-future": ("causality", "A prediction sees the future",
                    "No prediction may depend on an input of a later rank in the generation "
                    "order (a model that sees the future cannot be sampled from)."),
    "sees-present": ("causality", "A prediction sees the present",
                     "A model that predicts the current value (--predicts current) must not "
                     "depend on the input at the position it predicts (a missing shift)."),
    "loss-equivalence": ("loss", "The one-pass loss is not the masked per-position loss",
                         "One forward pass must give every position the prediction it gets "
                         "when the inputs it may not see are masked."),
    "certificate-unsound": ("certificate", "The certificate's bound misses a dependency",
                            "The static bound must contain every dependency the gradients and "
                            "perturbations measure; a miss is a bug of the analysis."),
    "certificate-unavailable": ("certificate", "The certificate could not be computed",
                                "An audit of the certificate alone needs the traced run."),
    "declared-fact": ("receptive_field", "A declared fact does not match the measured one",
                      "The receptive field and blind spot a model declares are the measured "
                      "ones."),
}
FACT_CHECKS = {"mode": "causality", "blind_spot": "blind_spot"}  # others: receptive_field


@dataclass
class Finding:
    rule: str
    check: str  # the check (a JUnit test case) it fails
    target: str
    message: str  # one line
    location: dict | None = None  # {file, line, code, ...}: the blame, or the model's class
    blamed: bool = False  # the location is where the leak enters (not just the model)
    counterexample: str | None = None
    chain: list = field(default_factory=list)  # model frames, innermost first (blamed only)

    @property
    def title(self) -> str:
        return RULES[self.rule][1]


def findings(data: dict) -> list[Finding]:
    """The violated contracts of one audit's JSON report, worst first."""
    found = []
    for kind in ("future", "present"):
        f = _causality(data, kind)
        if f is not None:
            found.append(f)
    loss = data.get("loss_equivalence")
    if loss is not None and not loss["holds"]:
        found.append(_loss(data, loss))
    cert = data.get("certificate")
    if cert is not None and cert.get("unsound"):
        v = cert["unsound"][0]
        found.append(_finding(
            data, "certificate-unsound", "certificate",
            f"{len(cert['unsound'])} dynamic dependencies lie outside the certificate's bound, "
            f"e.g. output {v['output']} on input {v['input']} ({v['evidence']}): please report "
            "it with this model",
        ))
    if cert is not None and data.get("checks") == ["certificate"] and cert["status"] == \
            "unavailable":
        found.append(_finding(data, "certificate-unavailable", "certificate",
                              f"the certificate is unavailable: {cert['reason']}"))
    for fact, d in (data.get("declared") or {}).items():
        if not d["ok"]:
            found.append(_finding(
                data, "declared-fact", FACT_CHECKS.get(fact, "receptive_field"),
                f"declared {fact} {d['declared']}, measured {d['measured']}",
            ))
    return found


def _forbidden(data: dict, kind: str) -> list[dict]:
    """The examples of ``kind`` that break the contract: dynamic violations, or the
    certificate's forbidden pairs when it alone was asked."""
    if kind == "present" and data["predicts"] != "current":
        return []
    listed = [v for v in data.get("violations", []) if v["kind"] == kind and not v["allowed"]]
    cert = data.get("certificate")
    if not listed and data.get("checks") == ["certificate"] and cert is not None:
        if cert["status"] == "not_proved":
            listed = [{**f, "evidence": "certificate", "detail": f"entering at {f['op']}"
                       if f.get("op") else ""} for f in cert["forbidden"] if f["kind"] == kind]
    return listed


def _causality(data: dict, kind: str) -> Finding | None:
    listed = _forbidden(data, kind)
    if not listed:
        return None

    def rank(v):  # a plain replacement first, as the text report leads with
        evidence = v["evidence"]
        return (evidence.endswith("/train"), not evidence.startswith("perturbation"),
                "hypothesis" in v.get("detail", ""))

    v = min(listed, key=rank)
    message = f"{_what(v)}: the model sees the {kind}"
    if v["evidence"].endswith("/train"):
        message += " in training mode"
    if kind == "future":
        message += f" (input {v['input']})"
    message += f" [{v['evidence']}]"
    check = "certificate" if data.get("checks") == ["certificate"] else "causality"
    rule = "sees-future" if kind == "future" else "sees-present"
    example = _counterexample(data, kind)
    return _finding(data, rule, check, message, kind=kind, counterexample=example)


def _what(v: dict) -> str:
    """What the evidence saw, as the text report says it (``report.explain``)."""
    out = v["output"]
    if v["evidence"].startswith("perturbation"):
        cut = v["detail"].split(": ", 1)[-1].removeprefix("changed when ")
        return f"prediction at position {out} changed by {_g(v['effect'])} when {cut}"
    if v["evidence"] == "certificate":
        return f"prediction at position {out} may depend on input {v['input']} (certificate)"
    return (f"prediction at position {out} has gradient {_g(v['effect'])} with respect to "
            f"input {v['input']}")


def _g(x) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"  # "inf" and "nan" are strings in the JSON


def _counterexample(data: dict, kind: str) -> str | None:
    for mode in ("eval", "train"):
        c = (data.get("counterexamples") or {}).get(f"{mode}/{kind}")
        if c is not None:
            label = "" if mode == "eval" else " (training mode)"
            return f"{c['description']}{label}"
    return None


def _loss(data: dict, loss: dict) -> Finding:
    convention = (data.get("coverage") or {}).get("loss_convention", data["predicts"])
    kinds = ("future", "present") if convention == "current" else ("future",)
    kind = next((k for k in kinds if k in data.get("blame", {})), None)
    message = (f"one-pass predictions differ from the masked ones by {loss['max_abs_diff']:.3g} "
               f"(tolerance {loss['tolerance']:.3g}) over {loss['positions_total']} positions")
    return _finding(data, "loss-equivalence", "loss", message, kind=kind)


def _finding(data, rule, check, message, *, kind=None, counterexample=None) -> Finding:
    b = (data.get("blame") or {}).get(kind) if kind else None
    if b is not None and b.get("file") is not None:
        location = {k: b[k] for k in ("file", "line", "code", "module", "module_type", "op")}
        return Finding(rule, check, data["target"], message, location, True, counterexample,
                       list(b.get("chain", [])))
    source = data.get("model_source")
    location = None if source is None else {**source, "code": ""}
    if b is not None:  # a module but no line of its own (torch modules only): say which
        message += f" (in {module_words(b)})"
    return Finding(rule, check, data["target"], message, location, False, counterexample)
