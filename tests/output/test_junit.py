"""JUnit XML, parsed with the standard library: a suite per target, a test case per check it
ran, a failure per violated contract whose text is ``assert_causal``'s message for the same
audit, and skips that say why a check measured nothing."""

import xml.etree.ElementTree as ET

import ci_reports
import pytest

from properties import assert_causal
from properties.output import junit


def parse(reports) -> ET.Element:
    root = ET.fromstring(junit.build(reports))
    assert root.tag == "testsuites"
    return root


def cases(suite) -> dict:
    return {c.get("name"): c for c in suite.iter("testcase")}


def test_one_case_per_check_and_the_failures_of_a_leak():
    data = ci_reports.report("leak")
    root = parse([data])
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == data["target"]
    got = cases(suite)
    assert list(got) == data["checks"] == [
        "causality", "receptive_field", "blind_spot", "loss", "certificate"]
    assert suite.get("tests") == "5" and suite.get("failures") == "2"
    failure = got["causality"].find("failure")
    assert failure.get("type") == "sees-future"
    assert failure.text == data["failure"]
    assert "The future enters at properties/extra/architectures.py" in failure.text
    assert got["loss"].find("failure").get("type") == "loss-equivalence"
    assert got["blind_spot"].find("skipped").get("message").startswith("the blind spot is")
    assert got["receptive_field"].find("failure") is None
    assert got["certificate"].find("system-out").text.startswith("certificate: not proved")


def test_the_failure_text_is_assert_causals_message():
    factory, options, predicts, checks = ci_reports.CASES["leak"]
    with pytest.raises(AssertionError) as raised:
        assert_causal(factory(), predicts=predicts, checks=checks,
                      max_examples=ci_reports.EXAMPLES, **options)
    root = parse([ci_reports.report("leak")])
    assert root.find(".//failure").text == str(raised.value)


def test_several_targets_are_several_suites_and_the_totals_add_up():
    reports = [ci_reports.report(n) for n in ("leak", "causal", "certificate")]
    root = parse(reports)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [r["target"] for r in reports]
    assert root.get("tests") == str(sum(len(r["checks"]) for r in reports))
    assert root.get("failures") == "3"  # causality and loss of the leak, the certificate's
    assert cases(suites[1])["causality"].find("failure") is None
    only = cases(suites[2])
    assert list(only) == ["certificate"] and only["certificate"].find("failure") is not None


def test_a_passing_audit_has_no_failure_element():
    root = parse([ci_reports.report("causal")])
    assert root.find(".//failure") is None and root.get("failures") == "0"


def test_xml_special_characters_survive():
    data = ci_reports.report("leak")
    data["target"] = "odd <&> \"name\""
    root = parse([data])
    assert root.find("testsuite").get("name") == data["target"]


def test_a_model_the_registry_declares_wrongly_fails_the_facts_check():
    data = ci_reports.report("causal")
    data["declared"] = {"span": {"declared": 99, "measured": 5, "ok": False}}
    data["passed"], data["failure"] = False, "the measured facts do not match"
    failure = cases(parse([data]).find("testsuite"))["receptive_field"].find("failure")
    assert failure.get("type") == "declared-fact" and failure.text == data["failure"]
