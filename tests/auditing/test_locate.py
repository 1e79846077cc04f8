"""Which blame an audit reports, and what it costs: nothing for a passing audit, no forward pass
when the certificate located the leak (its blame run is the one it already made), three passes
of the counterexample's samples without it; the shards' certificate carries its blame to the
merged report."""

import json
import linecache

import leaky
import pytest
from torch import nn

from properties import audit, make_subject
from properties.auditing import locate as locating
from properties.auditing import shard_file
from properties.extra.architectures import Architecture

ARCH = {"grid": (12,), "layout": "BCT->BCT"}


class Counting:
    """Counts the model's forward calls (its root module's)."""

    def __init__(self, model: nn.Module):
        self.calls = 0
        model.register_forward_hook(lambda *_: self.tick())

    def tick(self):
        self.calls += 1


def audited(model, checks=None, predicts="current", **options):
    subject = make_subject(model, predicts=predicts, **ARCH)
    return audit(subject, checks=checks, max_examples=5, **options)


def test_a_passing_audit_has_no_blame_and_locating_runs_nothing():
    model = Architecture(1, (2, 2), (1, 2)).build()
    result = audited(model)
    assert result.passed and result.blame == {}
    counter = Counting(model)
    assert locating.locate(result) == {} and counter.calls == 0


def test_the_certificates_blame_costs_no_forward_pass():
    model = leaky.same_padding()
    result = audited(model, predicts="next")
    b = result.blame["future"]
    assert b.source == "certificate" and b.module == "layers.1"
    counter = Counting(model)
    assert locating.locate(result)["future"] == b and counter.calls == 0


def test_without_the_certificate_the_counterexample_is_replayed_in_three_passes():
    model = leaky.same_padding()
    result = audited(model, checks=("causality",), predicts="next")
    assert result.certificate is None
    b = result.blame["future"]
    assert (b.source, b.module) == ("modules", "layers.1")
    assert "layer(x)" in linecache.getline(b.file, b.line)
    counter = Counting(model)
    locating.locate(result)
    assert counter.calls == 3


def test_a_model_that_may_see_the_present_is_not_blamed_for_it():
    model = Architecture(1, (2, 2), (1, 2), bug="no_shift").build()
    result = audited(model, checks=("causality",), predicts="current")
    assert set(result.blame) == {"present"} and result.blame["present"].module == "input"
    assert locating.violated_kinds(result) == ["present"]
    result.subject.predicts = "next"  # the same evidence, read for a next-value model
    assert locating.violated_kinds(result) == []


def test_the_certificate_alone_blames_from_its_forbidden_pairs():
    result = audited(leaky.same_padding(), checks=("certificate",), predicts="next")
    assert not result.passed and result.blame["future"].source == "certificate"


def test_a_certificate_the_evidence_refutes_is_not_trusted_for_blame(monkeypatch):
    model = leaky.same_padding()
    result = audited(model, checks=("causality", "certificate"), predicts="next")
    result.unsound = ["pretend"]  # a soundness bug: the bound may be wrong anywhere
    assert locating.locate(result)["future"].source == "modules"


def test_the_shard_file_carries_the_certificates_blame():
    result = audited(leaky.same_padding(), predicts="next", shard=(0, 2))
    blames = result.certificate.blames
    assert blames
    data = shard_file.dump(result, 1 << 30)
    again = shard_file.load(json.loads(json.dumps(data)), "part")
    assert again.certificate.blames == blames


@pytest.mark.parametrize("kind", ["future", "present"])
def test_a_gradient_violation_alone_gives_a_counterexample(kind):
    result = audited(leaky.same_padding(), checks=("causality",), predicts="current")
    result.perturbations = {}  # as if only the gradients had seen it
    mode, p = locating.counterexample(result, kind)
    assert mode == "eval" and p.kind == "normal"
    v = next(v for v in result.violations if v.kind == kind)
    assert p.cut == int(result.subject.ranks[v.input])
