"""SARIF 2.1.0 (``--sarif PATH``): one result per violated contract, located at its blamed line,
for code-scanning tools (GitHub code scanning, VS Code's SARIF viewer).

Each result has the rule (:data:`properties.output.findings.RULES`), the message, the
counterexample, the model's frames that led to the op (``stacks``, innermost first), the module
(``logicalLocations``) and, when the CLI wrote one, a link to the full report (``attachments``).
Paths under the source root (``$GITHUB_WORKSPACE``, else the working directory) are relative to
the base id ``SRCROOT``, as code scanning wants them; others are absolute ``file://`` URIs.
"""

import hashlib
import os
from importlib import metadata
from pathlib import Path

from properties.output.blame import module_words
from properties.output.findings import RULES, Finding, findings

__all__ = ["artifact", "build", "source_root"]

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL = "causal-audit"


def source_root() -> str:
    return os.path.abspath(os.environ.get("GITHUB_WORKSPACE") or os.getcwd())


def build(reports: list[dict], *, report_uri: str | None = None, root: str | None = None,
          exit_code: int | None = None) -> dict:
    """The SARIF log of the audits whose JSON reports are ``reports`` (one per target)."""
    root = root or source_root()
    rule_ids = list(RULES)
    results = [
        _result(f, rule_ids, root, report_uri) for data in reports for f in findings(data)
    ]
    invocation = {"executionSuccessful": True}
    if exit_code is not None:
        invocation["exitCode"] = exit_code
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": TOOL,
                "version": _version(),
                "rules": [_rule(r) for r in rule_ids],
            }},
            "originalUriBaseIds": {"SRCROOT": {"uri": Path(root).as_uri() + "/"}},
            "invocations": [invocation],
            "results": results,
        }],
    }


def _version() -> str:
    try:
        return metadata.version("causal-audit")
    except metadata.PackageNotFoundError:
        return "0"


def _rule(rule_id: str) -> dict:
    _, title, text = RULES[rule_id]
    return {
        "id": rule_id,
        "name": "".join(w.capitalize() for w in rule_id.split("-")),
        "shortDescription": {"text": title},
        "fullDescription": {"text": text},
        "defaultConfiguration": {"level": "error"},
    }


def artifact(path: str, root: str) -> dict:
    path = os.path.abspath(path)
    if path.startswith(root + os.sep):
        return {"uri": Path(os.path.relpath(path, root)).as_posix(), "uriBaseId": "SRCROOT"}
    return {"uri": Path(path).as_uri()}


def _physical(file: str, line: int, code: str, root: str) -> dict:
    region = {"startLine": max(1, int(line))}
    if code:
        region["snippet"] = {"text": code}
    return {"artifactLocation": artifact(file, root), "region": region}


def _result(f: Finding, rule_ids: list[str], root: str, report_uri: str | None) -> dict:
    text = f"{f.target}: {f.message}"
    if f.counterexample:
        text += f". Counterexample: {f.counterexample}"
    if f.blamed:
        text += f". The leak enters here ({_module_words(f.location)})"
    elif f.location is not None:
        text += ". (No line located: shown at the model's class.)"
    if report_uri:
        text += f". Full report: {report_uri}"
    result = {
        "ruleId": f.rule,
        "ruleIndex": rule_ids.index(f.rule),
        "level": "error",
        "message": {"text": text},
        "partialFingerprints": {"causalAudit/v1": _fingerprint(f)},
        "properties": {
            "target": f.target,
            "check": f.check,
            "counterexample": f.counterexample,
            **({k: f.location.get(k) for k in ("module", "module_type", "op")}
               if f.blamed else {}),
        },
    }
    if f.location is not None:
        location = {"physicalLocation": _physical(
            f.location["file"], f.location["line"], f.location.get("code", ""), root)}
        if f.blamed and f.location.get("module") is not None:
            location["logicalLocations"] = [
                {"fullyQualifiedName": f.location["module"] or f.location["module_type"],
                 "kind": "module"}
            ]
        result["locations"] = [location]
    if len(f.chain) > 1:
        result["stacks"] = [{
            "message": {"text": "the model's frames at the op, innermost first"},
            "frames": [
                {"location": {"physicalLocation": _physical(fr["file"], fr["line"],
                                                            fr["code"], root),
                              "message": {"text": fr["function"]}}}
                for fr in f.chain
            ],
        }]
    if report_uri:
        result["attachments"] = [{
            "description": {"text": "the audit's full report"},
            "artifactLocation": artifact(report_uri, root) if "://" not in report_uri
            else {"uri": report_uri},
        }]
    return result


def _module_words(location: dict) -> str:
    op = f", {location['op']}" if location.get("op") else ""
    return module_words(location) + op


def _fingerprint(f: Finding) -> str:
    """Stable over reruns of the same leak (no line numbers: code moves)."""
    parts = [f.rule, f.target]
    if f.blamed:
        parts += [str(f.location.get("module")), str(f.location.get("op"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
