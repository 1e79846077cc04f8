"""JUnit XML (``--junit PATH``): one ``<testsuite>`` per audited target (one per model for
``zoo``), one ``<testcase>`` per check it ran (``causality``, ``receptive_field``,
``blind_spot``, ``loss``, ``certificate``).

A failing check's ``<failure>`` has the violated contract in one line as its ``message`` and, as
its text, the failure message ``assert_causal`` raises for the same audit (the JSON report's
``failure``: :func:`properties.output.report.failure_text`), so a CI's test view reads the same
words as a pytest run. A check that ran but measured nothing (the blind spot of a 1D grid, a
receptive field without a gradient map) is ``<skipped>`` with the reason.
"""

import xml.etree.ElementTree as ET

from properties.output.findings import findings
from properties.output.report import certificate_line

__all__ = ["build"]

RESULT_KEYS = {"receptive_field": "receptive_field", "blind_spot": "blind_spot",
               "loss": "loss_equivalence", "certificate": "certificate"}


def build(reports: list[dict], *, name: str = "causal-audit") -> bytes:
    suites = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for data in reports:
        suite = _suite(data)
        suites.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        suites.set(key, str(value))
    suites.set("time", f"{sum(d.get('seconds', 0.0) for d in reports):.3f}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def _suite(data: dict) -> ET.Element:
    target = data["target"]
    found = findings(data)
    checks = data.get("checks") or []
    suite = ET.Element("testsuite", name=target, time=f"{data.get('seconds', 0.0):.3f}")
    props = ET.SubElement(suite, "properties")
    for key in ("grid", "predicts", "mode"):
        ET.SubElement(props, "property", name=key, value=str(data.get(key)))
    failures = skipped = 0
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"causal-audit.{target}", name=check)
        mine = [f for f in found if f.check == check]
        if mine:
            failures += 1
            failure = ET.SubElement(case, "failure", type=mine[0].rule,
                                    message="; ".join(f.message for f in mine))
            failure.text = data.get("failure") or mine[0].message
            continue
        reason = _not_measured(data, check)
        if reason:
            skipped += 1
            ET.SubElement(case, "skipped", message=reason)
        elif check == "certificate" and data["certificate"]["status"] != "proved":
            # it ran and holds what was measured; it decides only when it is the only check
            ET.SubElement(case, "system-out").text = certificate_line(data).strip()
    suite.set("tests", str(len(checks)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    return suite


def _not_measured(data: dict, check: str) -> str | None:
    if check == "causality":
        return None if data.get("mode") is not None else "no causality evidence was gathered"
    if data.get(RESULT_KEYS[check]) is not None:
        return None
    if check == "blind_spot" and len(data["grid"]) == 1:
        return "the blind spot is defined on 2D grids only"
    return "not measured (the report's notes say why)"
