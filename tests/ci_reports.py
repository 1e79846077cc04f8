"""Small audits and their JSON reports, made once per test process, for the tests of the CI
formats (tests/output/test_{findings,sarif,annotations,junit,html}.py)."""

import json
from functools import cache

import leaky
import wild_leaks

from properties import audit, make_subject
from properties.output.report import dumps, to_dict

ARCH = {"grid": (12,), "layout": "BCT->BCT"}
EXAMPLES = 5
CASES = {  # name: (model factory, subject keywords, predicts, checks)
    "leak": (leaky.same_padding, ARCH, "next", None),
    "causal": (leaky.causal, ARCH, "current", None),
    "present": (leaky.no_shift, ARCH, "current", ("causality",)),
    "certificate": (leaky.same_padding, ARCH, "next", ("certificate",)),
    "reflect": (wild_leaks.reflect_padding, wild_leaks.LEAKS["reflect_padding"][1], "next",
                None),
}


@cache
def result(name: str):
    factory, options, predicts, checks = CASES[name]
    subject = make_subject(factory(), predicts=predicts, **options)
    return audit(subject, checks=checks, max_examples=EXAMPLES)


def report(name: str) -> dict:
    """The JSON report as the CLI writes it (a fresh copy: tests may change it)."""
    return json.loads(_report(name))


@cache
def _report(name: str) -> str:
    return dumps(to_dict(result(name), f"tests/targets/{name}.py:model"))
