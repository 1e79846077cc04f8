"""The verdict's vocabulary (properties/verdict.py): the mode of a set of violations, and which
modes each convention accepts."""

from properties import verdict
from properties.verdict import Violation


def test_mode_and_verdict_table():
    def v(kind):
        return Violation(0, 0, kind, "gradient", 1.0)

    assert verdict.mode_of([]) == "strict"
    assert verdict.mode_of([v("present")]) == "inclusive"
    assert verdict.mode_of([v("present"), v("future")]) == "none"
    assert verdict.mode_of([v("future")]) == "none"
    verdicts = {
        (mode, predicts): verdict.passes(mode, predicts)
        for mode in verdict.MODES
        for predicts in ("current", "next", "auto")
    }
    assert {k for k, ok in verdicts.items() if ok} == {
        ("strict", "current"),
        ("strict", "next"),
        ("strict", "auto"),
        ("inclusive", "next"),
        ("inclusive", "auto"),
    }
