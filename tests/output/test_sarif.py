"""SARIF 2.1.0: valid against the official schema (OASIS SARIF 2.1.0 Errata 01, vendored in
tests/output/data/ with its notice: CI has no network), one result per violated contract at the
blamed line, its rule, its model frames, a stable fingerprint and a link to the report."""

import json
import os
import urllib.parse
from pathlib import Path

import ci_reports
import jsonschema
import pytest

from properties.output import sarif
from properties.output.findings import RULES

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
ROOT = os.path.abspath(Path(__file__).parents[2])  # the repository


def validate(log: dict) -> None:
    validator = jsonschema.Draft4Validator(
        SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    for uri in _uris(log):  # format "uri" is not checked without rfc3987: check it here
        parsed = urllib.parse.urlparse(uri)
        assert parsed.scheme in ("", "file") and " " not in uri, uri


def _uris(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uri":
                yield value
            else:
                yield from _uris(value)
    elif isinstance(node, list):
        for item in node:
            yield from _uris(item)


def test_the_schema_is_the_official_one():
    assert SCHEMA["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    with pytest.raises(jsonschema.ValidationError):  # it can fail: a positive control
        jsonschema.validate({"version": "2.1.0", "runs": [{"results": []}]}, SCHEMA)


def test_every_kind_of_report_gives_a_valid_log():
    reports = [ci_reports.report(n) for n in ci_reports.CASES]
    log = sarif.build(reports, report_uri="audit.html", root=ROOT, exit_code=1)
    validate(log)
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == list(RULES)
    assert run["invocations"] == [{"executionSuccessful": True, "exitCode": 1}]
    for result in run["results"]:
        assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_a_leak_is_one_result_per_contract_at_the_blamed_line():
    data = ci_reports.report("reflect")
    log = sarif.build([data], report_uri="out/audit.html", root=ROOT)
    validate(log)
    results = log["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["sees-future", "loss-equivalence"]
    first = results[0]
    where = first["locations"][0]["physicalLocation"]
    blame = data["blame"]["future"]
    assert where["artifactLocation"] == {"uri": "tests/targets/wild_leaks.py",
                                         "uriBaseId": "SRCROOT"}
    assert where["region"]["startLine"] == blame["line"]
    assert "# LEAK" in where["region"]["snippet"]["text"]
    assert first["properties"]["op"] == "aten.reflection_pad1d.default"
    assert "Counterexample: positions of rank >= 1" in first["message"]["text"]
    assert first["attachments"][0]["artifactLocation"]["uri"] == "out/audit.html"
    assert log["runs"][0]["originalUriBaseIds"]["SRCROOT"]["uri"] == Path(ROOT).as_uri() + "/"


def test_the_model_frames_are_a_stack_innermost_first():
    data = ci_reports.report("leak")
    data["blame"]["future"]["chain"].append(
        {"file": __file__, "line": 3, "function": "caller", "code": "x"})
    result = sarif.build([data], root=ROOT)["runs"][0]["results"][0]
    frames = result["stacks"][0]["frames"]
    assert [f["location"]["physicalLocation"]["region"]["startLine"] for f in frames] == [
        data["blame"]["future"]["line"], 3]


def test_paths_outside_the_root_are_absolute_file_uris(tmp_path):
    data = ci_reports.report("leak")
    log = sarif.build([data], root=str(tmp_path))
    validate(log)
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri == {"uri": Path(data["blame"]["future"]["file"]).as_uri()}


def test_fingerprints_ignore_line_numbers():
    data = ci_reports.report("leak")
    before = sarif.build([data], root=ROOT)["runs"][0]["results"][0]["partialFingerprints"]
    data["blame"]["future"]["line"] += 10  # the code moved; the leak is the same
    after = sarif.build([data], root=ROOT)["runs"][0]["results"][0]["partialFingerprints"]
    assert before == after


def test_a_passing_audit_is_a_valid_log_without_results():
    log = sarif.build([ci_reports.report("causal")], root=ROOT)
    validate(log)
    assert log["runs"][0]["results"] == []


def test_github_workspace_is_the_source_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    assert sarif.source_root() == str(tmp_path)
