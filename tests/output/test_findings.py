"""Findings: one per violated contract, read off the JSON report, located where the leak enters
(or, with no line, at the model's class), with the counterexample."""

import linecache

import ci_reports

from properties.output.findings import RULES, findings


def rules(data):
    return [f.rule for f in findings(data)]


def test_a_passing_audit_has_no_finding():
    assert findings(ci_reports.report("causal")) == []


def test_a_leak_breaks_causality_and_the_loss_both_located_at_its_line():
    data = ci_reports.report("leak")
    found = findings(data)
    assert [f.rule for f in found] == ["sees-future", "loss-equivalence"]
    assert [f.check for f in found] == ["causality", "loss"]
    for f in found:
        assert f.blamed and f.location["module"] == "layers.1"
        code = linecache.getline(f.location["file"], f.location["line"]).strip()
        assert code == f.location["code"] == "x = torch.tanh(layer(x))"
    future = found[0]
    assert "sees the future" in future.message and "(input " in future.message
    assert future.counterexample == data["counterexamples"]["eval/future"]["description"]


def test_the_present_is_a_violation_only_when_the_model_predicts_the_current_value():
    data = ci_reports.report("present")
    assert rules(data) == ["sees-present"]
    assert findings(data)[0].location["module"] == "input"
    data["predicts"] = "next"
    for v in data["violations"]:
        v["allowed"] = True  # what the report says of the present for a next-value model
    assert rules(data) == []


def test_the_certificate_alone_is_its_own_check():
    found = findings(ci_reports.report("certificate"))
    assert [(f.rule, f.check) for f in found] == [("sees-future", "certificate")]
    assert "may depend on input" in found[0].message and found[0].blamed


def test_without_a_located_line_a_finding_is_shown_at_the_models_class():
    data = ci_reports.report("leak")
    data["blame"] = {}
    f = findings(data)[0]
    assert not f.blamed and f.location["name"] == "_Net1d"
    assert linecache.getline(f.location["file"], f.location["line"]).startswith("class _Net1d")
    data["model_source"] = None
    assert findings(data)[0].location is None


def test_declared_facts_and_an_unsound_certificate_are_contracts_too():
    data = ci_reports.report("causal")
    data["declared"] = {"span": {"declared": 7, "measured": 5, "ok": False},
                        "blind_spot": {"declared": False, "measured": True, "ok": False}}
    data["certificate"]["unsound"] = [{"output": 0, "input": 1, "evidence": "gradient"}]
    found = findings(data)
    assert [(f.rule, f.check) for f in found] == [
        ("certificate-unsound", "certificate"), ("declared-fact", "receptive_field"),
        ("declared-fact", "blind_spot"),
    ]
    assert found[1].message == "declared span 7, measured 5"


def test_every_rule_has_a_check_a_title_and_a_description():
    for check, title, text in RULES.values():
        assert check in ("causality", "loss", "certificate", "receptive_field") and title
        assert text.endswith(".")
