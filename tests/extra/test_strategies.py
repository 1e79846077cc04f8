"""The project's own property tests, driven by its strategies: every drawn causal architecture
is causal with its analytic receptive field; every drawn planted bug is caught."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from properties import audit, make_subject, strategies
from properties.evidence.replacements import apply
from properties.extra.architectures import Architecture


def subject_of(arch, **options):
    return make_subject(arch.build(), grid=arch.grid, layout=arch.layout, **options)


@given(strategies.causal_architectures())
def test_drawn_causal_architectures_are_causal_with_their_analytic_receptive_field(arch):
    result = audit(subject_of(arch, predicts="current"), max_examples=5)
    assert result.mode == "strict" and result.causal, result.violations[:3]
    rf = result.receptive_field
    assert rf.size == arch.size()
    assert rf.span == arch.span()
    assert rf.holes == arch.holes()
    if arch.dims == 2:
        assert result.blind_spot.size == arch.blind_spot()


@given(strategies.planted_bugs())
def test_drawn_planted_bugs_are_caught(arch):
    train = arch.bug == "batchnorm_over_time"
    result = audit(subject_of(arch), train=train, max_examples=10)
    assert result.mode == arch.expected_train_mode
    if arch.expected_train_mode == "none":
        assert not result.causal


@given(st.data())
def test_perturbations_replace_exactly_the_positions_at_or_after_the_cut(data):
    arch = data.draw(strategies.causal_architectures(max_depth=2))
    subject = subject_of(arch)
    p = data.draw(strategies.perturbations(subject))
    pool = data.draw(strategies.inputs(subject, batch_size=2))
    x = apply(subject, pool, p)
    kept = subject.ranks < p.cut
    assert torch.equal(x[:, kept], pool[:, kept])
    assert x.shape == pool.shape


def test_strategies_reject_bad_arguments():
    subject = subject_of(Architecture(1, (2,), (1,)))
    bad = [
        lambda: strategies.cuts(subject, min_cut=5, max_cut=2),
        lambda: strategies.perturbations(subject, kinds=("random",)),
        lambda: strategies.perturbations(subject, min_magnitude=0),
        lambda: strategies.inputs(subject, batch_size=0),
        lambda: strategies.causal_architectures(dims=(3,)),
        lambda: strategies.planted_bugs(dims=(1,), bugs=("mask_open_below",)),
        lambda: strategies.cuts("not a subject"),
    ]
    for make in bad:
        with pytest.raises(InvalidArgument):
            make().example()
