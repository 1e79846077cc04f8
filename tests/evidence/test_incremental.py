"""properties/evidence/incremental.py: every way of running a model a chunk at a time gives the
full pass's predictions. Planted bugs of real classes are caught and shrunk to a minimal
schedule; their correct versions pass; rounding is told apart from a divergence."""

from dataclasses import replace

import incremental_models as im
import pytest
import torch
from torch import nn

from properties import assert_incremental, make_subject
from properties.auditing.options import DEFAULT_POLICY
from properties.errors import AdapterError, ModelError
from properties.evidence.incremental import ROUNDING, incremental_evidence
from properties.evidence.schedules import Branch, Schedule, _smaller

N = 12
EXAMPLES = 10
TOKENS = dict(grid=(N,), layout="BT", vocab=im.VOCAB, step=im.step)
CONV = dict(grid=(N,), layout="BCT->BCT", features=im.FEATURES, step=im.step)
SEQUENCE = dict(grid=(N,), layout="BTC", features=im.FEATURES, step=im.step)


def evidence(model, options, **keywords):
    subject = make_subject(model, **options)
    subject(subject.draw_inputs(1, torch.Generator().manual_seed(0)))  # the output layout
    return incremental_evidence(subject, max_examples=keywords.pop("max_examples", EXAMPLES),
                                **keywords)


# (builder, subject options, minimal schedule, first diverging position, first module, its
# input diverges too)
PLANTED = {
    "rope_restart": (im.rope_restart, TOKENS, Schedule(N, (1,)), 1,
                     "blocks.0.attention.rotary", True),
    "window_forgotten": (im.window_forgotten, TOKENS, Schedule(N, (1,)), 4,
                         "blocks.0.attention.out", True),
    "alibi_query_length": (im.alibi_query_length, TOKENS, Schedule(N, (1,)), 1,
                           "blocks.0.attention.out", True),
    "unsliced_read": (im.unsliced_read, TOKENS, Schedule(N, (1,)), 1, "qkv.1", True),
    "drop_buffer": (im.drop_buffer, CONV, Schedule(N, (1,)), 1, "convs.0", False),
    "reset_state": (im.reset_state, SEQUENCE, Schedule(N, (1,)), 1, "gru", False),
    "state_in_module": (im.state_in_module, CONV, Schedule(N, (1,), Branch(1, 2, fresh=False)),
                        1, "convs.0", False),
}
CORRECT = {
    "rope": (im.tiny_lm, TOKENS),
    "window": (im.windowed_lm, TOKENS),
    "alibi": (im.alibi_lm, TOKENS),
    "static_cache": (im.linear_lm, TOKENS),
    "streaming_conv": (im.streaming_conv, CONV),
    "recurrent": (im.recurrent, SEQUENCE),
}


@pytest.mark.parametrize("name", PLANTED)
def test_a_planted_bug_is_caught_and_shrunk_to_a_minimal_schedule(name):
    build, options, minimal, position, module, input_diverges = PLANTED[name]
    report = evidence(build(), options)
    d = report.divergence
    assert not report.holds and d.schedule == minimal
    assert d.position == position
    # the divergence is real in both dtypes, far above both tolerances
    assert d.at(d.diffs) > 10 * d.tolerance and d.at(d.diffs64) > 1e6 * d.tolerance64
    assert report.module["name"] == module
    assert report.module["input_diverges"] is input_diverges


@pytest.mark.parametrize("name", ["rope_restart", "state_in_module"])
def test_the_failure_message_names_the_minimal_schedule(name):
    build, options, minimal, position, module, _ = PLANTED[name]
    with pytest.raises(AssertionError) as info:
        assert_incremental(build(), max_examples=EXAMPLES, **options)
    message = str(info.value)
    assert f"at position {position} on {minimal.describe()} (minimal)" in message
    assert "in float32 (tolerance" in message and "in float64 (tolerance" in message
    assert f"first diverging module: {module}" in message


@pytest.mark.parametrize("name", CORRECT)
def test_the_correct_versions_pass(name):
    build, options = CORRECT[name]
    report = assert_incremental(build(), max_examples=EXAMPLES, **options)
    assert report.holds and report.divergence is None
    assert 0 < report.examples <= EXAMPLES and report.fixed >= 5
    assert max(o.max_diff for o in report.tried) <= report.tolerance


def test_an_unsliced_cache_read_is_caught_only_with_poisoning():
    """Zeros in the unwritten slots of a static cache hide an unmasked read of them (linear
    attention adds nothing for a zero key); the poison shows it, and a correct masked read of
    a poisoned cache still passes."""
    quiet = evidence(im.unsliced_read(), TOKENS, poison=None)
    assert quiet.holds and quiet.poisoned == 0
    loud = evidence(im.unsliced_read(), TOKENS)
    assert not loud.holds and loud.poisoned > 0
    correct = evidence(im.linear_lm(), TOKENS)
    assert correct.holds and correct.poisoned > 0


class Offset(nn.Module):
    """The full pass computes ``(h + offset) - offset`` (rounding in float32, of an ulp of the
    offset), the stepped path ``h`` itself, plus ``shift`` from position 6 on (a genuine, small
    divergence)."""

    def __init__(self, offset=0.0, shift=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1, 1, 3 * im.FEATURES).reshape(im.FEATURES, 3))
        self.offset, self.shift = offset, shift

    def forward(self, x):
        h = x @ self.weight
        return (h + self.offset) - self.offset

    def step(self, x, state):
        start = state or 0
        h = x @ self.weight
        late = (torch.arange(start, start + x.shape[1]) >= 6).to(h.dtype)[None, :, None]
        return h + self.shift * late, start + x.shape[1]


def test_rounding_is_not_a_divergence():
    """A float32 difference over the tolerance that vanishes in float64 (it shrinks with the
    machine epsilon) is rounding: counted, not reported."""
    report = evidence(Offset(offset=1e4), SEQUENCE)
    assert report.holds
    over = [o for o in report.tried if o.max_diff > o.tolerance]
    assert over and all(o.verdict == ROUNDING for o in over)
    assert report.rounding == len(over)
    assert all(o.max_diff64 < 1e-9 for o in over)


def test_a_small_genuine_divergence_survives_in_float64():
    report = evidence(Offset(shift=1e-3), SEQUENCE)
    d = report.divergence
    assert d is not None and d.position == 6
    assert d.at(d.diffs64) == pytest.approx(1e-3, rel=1e-6)  # the same size in float64


class FivesForget(nn.Module):
    """A GRU whose stepped path forgets its state on a chunk of exactly five positions after
    the first chunk: no fixed schedule has one; Hypothesis must find it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = im.Recurrent()

    def forward(self, x):
        return self.inner(x)

    def step(self, x, h):
        return self.inner.step(x, None if x.shape[1] == 5 else h)


def forgets(schedule: Schedule) -> bool:
    """Whether ``FivesForget`` diverges on ``schedule``: a chunk of five after the first."""
    return 5 in schedule.chunks[1:]


def test_hypothesis_finds_what_no_fixed_schedule_tries_and_shrinks_it():
    report = evidence(FivesForget(), SEQUENCE, max_examples=100)
    assert not any(o.diverges for o in report.tried[: report.fixed])
    d = report.divergence
    assert d is not None and report.examples > 0 and forgets(d.schedule)
    # minimal: no cut can be dropped or moved earlier (chunks [1, 5, 6] or [7, 5])
    assert not any(forgets(s) for s in _smaller(d.schedule))
    assert d.position == d.schedule.spans[d.schedule.chunks.index(5, 1)][0]


class RaisesOnPairs(im.Recurrent):
    def step(self, x, h):
        if x.shape[1] == 2:
            raise ValueError("no chunk of two")
        return super().step(x, h)


def test_a_step_that_raises_is_a_divergence_named_by_its_error():
    torch.manual_seed(0)
    report = evidence(RaisesOnPairs(), SEQUENCE, max_examples=50)
    d = report.divergence
    assert d is not None and d.error == "ValueError: no chunk of two"
    assert len(d.schedule.cuts) == 1 and 2 in d.schedule.chunks


def test_a_model_that_cannot_run_one_chunk_cannot_be_stepped():
    class Broken(im.Recurrent):
        def step(self, x, h):
            raise RuntimeError("not implemented")

    with pytest.raises(ModelError, match="raised RuntimeError: not implemented on one chunk of 12"):
        evidence(Broken(), SEQUENCE)


def test_a_time_budget_stops_the_check_and_says_so():
    report = evidence(im.tiny_lm(), TOKENS, deadline=0.0)
    assert report.budgeted and report.tried == [] and report.holds


def test_a_policy_sets_the_tolerance_in_ulps():
    """An offset of 100 rounds by an ulp of 100: within 256 ulps of the outputs' scale, over 1
    ulp (then float64 says rounding)."""
    loose = evidence(Offset(offset=1e2), SEQUENCE, max_examples=3)
    assert loose.ulps == 256 and loose.rounding == 0 and loose.holds
    tight = replace(DEFAULT_POLICY, incremental_ulps=1.0)
    report = assert_incremental(Offset(offset=1e2), max_examples=3, policy=tight, **SEQUENCE)
    assert report.ulps == 1.0 and report.rounding > 0 and report.holds


def test_the_check_leaves_the_model_as_it_was():
    model = im.state_in_module()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evidence(im.streaming_conv(), CONV)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_hook_that_returns_no_pair_is_one_line():
    def step(model, chunk, state):
        return model(chunk)

    with pytest.raises(AdapterError, match="returned a Tensor, not \\(predictions, state\\)"):
        evidence(im.recurrent(), {**SEQUENCE, "step": step})
