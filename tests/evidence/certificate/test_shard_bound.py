"""A certificate through a shard file (``auditing.shard_file``) keeps its bound in its own form
(a run-form bound as runs, never made ``N x N``) and says, after the merge as before it, where
unknown origin entered and where input values were read."""

import json

import pytest
import torch
from ground_truth import C, Floats, T

from properties import make_subject
from properties.auditing import shard_file
from properties.evidence.certificate import certify, deps

pytestmark = pytest.mark.usefixtures("summary_form")  # both forms (conftest)


def _through_a_file(cert):
    return shard_file._uncertificate(json.loads(json.dumps(shard_file._certificate(cert))))


def _certified(fn):
    subject = make_subject(Floats(fn), grid=(T,), predicts="next", layout="BTC", features=C)
    return certify(subject)


def test_a_bound_reads_back_in_its_own_form_with_the_same_rows(summary_form):
    cert = _certified(lambda s, x: x.cumsum(1))
    back = _through_a_file(cert)
    assert deps.is_runs(back.bound) == (summary_form == deps.RUNS)
    assert torch.equal(back.dense_bound(), cert.dense_bound())
    assert back.proved and back.mode == cert.mode


def test_where_unknown_origin_entered_survives_the_file():
    def fn(s, x):
        return torch.empty_like(x) + x  # uninitialized memory reaches every output
    cert = _certified(fn)
    back = _through_a_file(cert)
    assert not back.proved and back.unknown == cert.unknown
    assert back.unknown[0].startswith("uninitialized memory")
