"""An audit split into shards gives, once merged, the report of one process, bit for bit."""

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reports import timeless_report as report

from properties import assert_causal, audit, make_subject, strategies
from properties.auditing.gather import merge
from properties.auditing.options import DEFAULT_POLICY, DYNAMIC
from properties.extra.architectures import Architecture, PlantedLeak
from properties.extra.zoo import zoo_subject
from properties.testing import shards

# These tests are about splitting the sweep and the map over shards: the sampled plan, whose
# passes shards share (a proof-first plan is gathered whole by shard 0: test_proof_first.py).
SAMPLED = {"policy": replace(DEFAULT_POLICY, proof_first=False)}


def same_report_split(make, count, **options):
    whole = audit(make(), max_examples=10, **options)
    parts = [audit(make(), max_examples=10, shard=(i, count), **options) for i in range(count)]
    assert report(merge(parts)) == report(whole)
    return whole, parts


@pytest.mark.parametrize(
    "make, options",
    [
        (lambda: zoo_subject("nettoy1d_dilated"), SAMPLED),
        (lambda: zoo_subject("pixelcnn_masked", (11, 20)), SAMPLED),
        (
            lambda: make_subject(
                PlantedLeak(Architecture(1, (2, 2), (1, 2)).build(), "late", start=10),
                grid=(40,),
                layout="BCT",
            ),
            SAMPLED,
        ),
        (
            lambda: make_subject(
                Architecture(1, (2, 2), (1, 2), bug="batchnorm_over_time").build(),
                grid=(24,),
                layout="BCT->BCT",
            ),
            {"train": True, **SAMPLED},
        ),
    ],
)
def test_merged_shards_equal_the_whole_audit(make, options):
    whole, parts = same_report_split(make, 3, **options)
    cuts = [p.perturbations["eval"].cuts_swept for p in parts]
    assert sum(cuts) == whole.perturbations["eval"].cuts_swept


@settings(max_examples=5)
@given(strategies.causal_architectures(max_depth=2), st.integers(2, 4))
def test_merged_shards_equal_the_whole_audit_on_random_architectures(arch, count):
    grid = tuple(2 * g for g in arch.grid)
    same_report_split(
        lambda: make_subject(arch.build(), grid=grid, layout=arch.layout), count, **SAMPLED
    )


def test_shards_as_pytest_parameters():
    params = shards(3)
    assert [p.values[0] for p in params] == [(0, 3), (1, 3), (2, 3)]
    assert [p.id for p in params] == ["shard1of3", "shard2of3", "shard3of3"]
    with pytest.raises(ValueError):
        shards(0)


@pytest.mark.parametrize("shard", shards(2))
def test_assert_causal_on_a_shard(shard):
    model = Architecture(1, (2, 2), (1, 2)).build()
    result = assert_causal(model, grid=(32,), layout="BCT->BCT", shard=shard, max_examples=5)
    assert result.shard == shard


def test_a_leak_fails_the_shard_that_holds_it():
    """Shards split whole chunks (forward passes): a small grid fits one chunk, so the last
    shards may have nothing to do; the leak fails the shard that ran it, and only that one.
    (The sampled plan, which splits its cuts: a proof-first plan is gathered by shard 0.)"""
    leaky = PlantedLeak(Architecture(1, (2, 2), (1, 2)).build(), "threshold", start=0)
    grid = (4096,)  # 16 chunks of cuts for the sweep: both shards get some
    outcomes = []
    for shard in [(0, 2), (1, 2)]:
        try:
            assert_causal(leaky, grid=grid, layout="BCT", shard=shard, max_examples=5,
                          checks=DYNAMIC)
            outcomes.append("pass")
        except AssertionError as exc:
            assert "sees the future" in str(exc)
            outcomes.append("fail")
    assert outcomes == ["fail", "fail"]


def test_bad_shard_is_refused():
    subject = zoo_subject("nettoy1d")
    for bad in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(Exception, match="shard"):
            audit(subject, shard=bad)
    assert torch.is_tensor(subject.ranks)
