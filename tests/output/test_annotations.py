"""GitHub annotations: ``::error file=...,line=...,title=...::message`` workflow commands in the
format GitHub documents, escaped as ``@actions/core`` escapes them."""

import re

import ci_reports

from properties.output import annotations

COMMAND = re.compile(r"^::error (?P<props>[^:]*)::(?P<message>[^\r\n]*)$")


def props(line: str) -> dict:
    match = COMMAND.match(line)
    assert match, line
    return dict(p.split("=", 1) for p in match["props"].split(","))


def unescape(text: str) -> str:
    for code, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(code, char)
    return text


def test_escaping_is_githubs():
    # command.ts: escapeData for the message, escapeProperty for the properties
    assert annotations.escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert annotations.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert annotations.escape_property("%3A") == "%253A"  # no double meaning


def test_one_error_per_violated_contract_at_the_blamed_line(tmp_path):
    data = ci_reports.report("reflect")
    lines = annotations.commands([data])
    assert len(lines) == 2
    first = props(lines[0])
    blame = data["blame"]["future"]
    assert first["file"] == "tests/targets/wild_leaks.py"
    assert first["line"] == str(blame["line"])
    assert unescape(first["title"]) == f"causal-audit sees-future: {data['target']}"
    message = unescape(COMMAND.match(lines[0])["message"])
    assert message.splitlines()[1].startswith("Counterexample: ")
    assert message.splitlines()[2] == f"The leak enters here: {blame['code']}"


def test_files_are_relative_to_the_github_workspace(monkeypatch, tmp_path):
    data = ci_reports.report("leak")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))  # the model lies outside it
    assert props(annotations.commands([data])[0])["file"] == data["blame"]["future"]["file"]


def test_a_finding_without_a_location_is_still_an_error():
    data = ci_reports.report("leak")
    data["blame"], data["model_source"] = {}, None
    line = annotations.commands([data])[0]
    assert props(line).keys() == {"title"}


def test_annotations_are_on_in_github_actions_or_when_asked(monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert not annotations.wanted(None) and annotations.wanted("github")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert annotations.wanted(None) and not annotations.wanted("off")
    assert annotations.commands([ci_reports.report("causal")]) == []
