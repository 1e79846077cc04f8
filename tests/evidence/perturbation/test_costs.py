"""What the perturbation evidence costs and how it keeps to its budgets: forward passes per pool,
the memory budget (a pool that does not fit, stacked cuts capped by output bytes, a float64
confirmation that does not fit, per-copy comparisons), the time budget of the searches, the
progress bars' phases, and when a float32 change needs no float64 pass at all."""

import io

import pytest
import torch
from known_models import expected_sweep, shifted, taps_subject
from torch import nn

from properties import make_subject
from properties import progress as bars
from properties.auditing import time_budget as plan
from properties.evidence import perturbation as causality
from properties.evidence.perturbation import (
    PerturbationReport,
    Runner,
    _changes,
    _localize,
    chunk_copies,
    hypothesis_search,
    merge_reports,
    perturbation_evidence,
)
from properties.subject import memory
from properties.subject.calls import model_mode

N = 12


class Sizes(nn.Module):
    """``x_{t-1}``, recording the batch size of every forward pass, in order."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return shifted(x, -1)


def test_every_forward_pass_of_a_sweep_is_accounted_for():
    """The first pool is one pass (its measured cost sizes the rest, without running it again);
    then the floor's rerun, the batch-interaction pair, and one pass per cut."""
    model = Sizes().double()
    subject = make_subject(model, grid=(8,), layout="BTC", predicts="current")
    model.sizes.clear()
    Runner(subject, seed=0, pool_size=1).pool(0)
    assert model.sizes == [1]
    model.sizes.clear()
    perturbation_evidence(subject, cut_list=list(range(8)), max_examples=1, search=False)
    assert model.sizes == [1, 1, 2, 2] + [1] * 8


@pytest.mark.parametrize("pool_size", [1, 2])
def test_a_pool_over_the_memory_budget_says_what_does_not_fit(pool_size):
    subject = taps_subject("neither", N)
    with memory.limited(1e-9), pytest.raises(memory.MemoryBudgetError) as info:
        Runner(subject, seed=0, pool_size=pool_size).pool(0)
    assert info.value.problem.startswith(f"one forward pass of {pool_size} sample(s) needs about ")
    assert "over the memory budget of" in info.value.problem


def test_stacked_cuts_are_capped_by_output_bytes(monkeypatch):
    """A stacked pass holds at most ``OUTPUT_PER_PASS`` bytes of outputs (whole copies, at
    least one)."""
    runner = Runner(taps_subject("neither", N), seed=0, pool_size=1)
    runner.pool(0)
    output = runner.cost.output
    assert output == N * 2 * 8  # one sample, two float64 features per position
    for budget, expected in [(1, 1), (output, 1), (3 * output, 3), (3 * output + 1, 3)]:
        monkeypatch.setattr(causality, "OUTPUT_PER_PASS", budget)
        copies = chunk_copies(runner, 10_000)
        assert copies == expected and isinstance(copies, int)


# ---------------------------------------------------------------------------------------------
# The float64 confirmation: when it runs, and when it does not fit


class StepLeak(nn.Module):
    """float32: ``scale * x_{t-1}`` plus ``leak`` where ``x_{t+1}`` is non-zero (inputs are
    never exactly zero: the sweep's zeros change it by exactly ``leak``). Records the dtype of
    every pass in a class-wide list (a float64 copy is a deep copy of the model); its buffer
    gives the model its dtype."""

    dtypes: list = []

    def __init__(self, scale, leak):
        super().__init__()
        self.register_buffer("weights", torch.tensor([scale, leak]))

    def forward(self, x):
        StepLeak.dtypes.append(x.dtype)
        step = (shifted(x, 1) != 0).to(x.dtype)
        return self.weights[0] * shifted(x, -1) + self.weights[1] * step


@pytest.mark.parametrize(
    "scale, leak, confirmed",
    [
        (1.0, 1e-4, True),  # far below 1% of the outputs' scale: rounding until float64 says not
        (0.01, 0.01, False),  # outputs of scale ~0.03: a change of 0.01 is no rounding
    ],
)
def test_a_change_above_one_percent_of_the_outputs_needs_no_float64_pass(scale, leak, confirmed):
    subject = make_subject(StepLeak(scale, leak), grid=(N,), layout="BTC", predicts="current")
    StepLeak.dtypes.clear()
    report = perturbation_evidence(subject, cut_list=list(range(N)), max_examples=1, search=False)
    assert (torch.float64 in StepLeak.dtypes) is confirmed
    assert {t: (c, kind) for t, (c, _, kind) in report.sweep.items()} == {
        t: (t + 1, "future") for t in range(N - 1)
    }
    assert report.rounding == 0 and report.unconfirmed == ""


class ExclusiveSum(nn.Module):
    """``cumsum(h) - h`` in float32: independent of ``h_t`` on paper, not in its last bits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(1, 4)

    def forward(self, x):
        h = self.lin(x)
        return torch.cumsum(h, 1) - h


def test_a_float64_copy_over_the_memory_budget_counts_every_change_and_says_so():
    """Where float32 fits the budget and float64 (twice the bytes) does not, rounding cannot be
    told from a dependency: every change counts, none is dismissed, not even after the first,
    and the note says why."""
    subject = make_subject(ExclusiveSum(), grid=(24,), layout="BTC", predicts="current")
    cuts = list(range(24))
    roomy = perturbation_evidence(subject, cut_list=cuts, max_examples=1, search=False)
    assert roomy.rounding > 0 and roomy.sweep == {} and roomy.unconfirmed == ""
    runner = Runner(subject, seed=0, pool_size=1)
    runner.pool(0)
    between = 1.5 * runner.cost.per_copy / memory.GIB
    with memory.limited(between):
        tight = perturbation_evidence(subject, cut_list=cuts, max_examples=1, search=False)
    assert tight.rounding == 0 and len(tight.sweep) == roomy.rounding
    assert "over the memory budget" in tight.unconfirmed and "--memory" in tight.unconfirmed
    assert tight.notes(False) == [
        "small float32 changes counted without a float64 confirmation, so rounding may count: "
        f"on the float64 copy, {tight.unconfirmed}"
    ]


def test_merged_shards_keep_the_first_unconfirmed_reason():
    reports = [PerturbationReport(), PerturbationReport(unconfirmed="b"), PerturbationReport()]
    reports.append(PerturbationReport(unconfirmed="d"))
    assert merge_reports(reports).unconfirmed == "b"
    assert merge_reports(reports[:1] + reports[2:3]).unconfirmed == ""
    # one shard (--shard 0/1) merges to itself
    alone = PerturbationReport(train=True, unconfirmed="a", cuts_swept=3)
    assert merge_reports([alone]) == alone


@pytest.mark.parametrize("copies", [2, 5])
def test_stacked_outputs_are_compared_one_copy_at_a_time(copies):
    """The comparison of a stack never holds more than one copy's difference (a language
    model's logits are positions x vocabulary), and gives what comparing it whole gives."""
    generator = torch.Generator().manual_seed(0)
    y0 = torch.randn(1, 50, 20, generator=generator)
    y1 = torch.randn(copies, 1, 50, 20, generator=generator)
    changes, cost = memory.measure(lambda: _changes(y0, y1))
    assert cost.largest == y0.numel() * y0.element_size()
    whole = (y1 - y0).abs().amax(dim=(-3, -1)).double()
    assert torch.equal(changes, whole) and changes.shape == (copies, 50)


# ---------------------------------------------------------------------------------------------
# The time budget


class Clock:
    """A stand-in for :class:`properties.auditing.time_budget.Plan`: a forward pass of
    ``forward`` seconds, room for ``room`` examples, and a deadline passed after ``calls``
    checks (never: None). What a search affords is the real plan's arithmetic over these."""

    forward = 0.25

    def __init__(self, room, calls=None):
        self.room, self.calls, self.asked, self.checks = room, calls, [], 0

    def affordable(self, share, cost):
        self.asked.append((share, cost))
        return self.room

    search_examples = plan.Plan.search_examples

    def over(self):
        self.checks += 1
        return self.calls is not None and self.checks > self.calls


@pytest.mark.parametrize(
    "shard, max_examples, kinds", [(None, 50, 2), (None, 2, 2), ((0, 2), 50, 1), ((1, 2), 50, 1)]
)
def test_the_search_takes_the_examples_the_time_left_affords(shard, max_examples, kinds):
    """Each example costs ``SEARCH_FACTOR`` forward passes, for each kind this run searches:
    a causal model (no example ever shows a leak) tries exactly what the time affords, or
    ``max_examples`` if fewer."""
    clock = Clock(room=3)
    report = perturbation_evidence(
        taps_subject("neither", N),
        cut_list=[0],
        max_examples=max_examples,
        shard=shard,
        timing=clock,
    )
    assert clock.asked == [(1.0, plan.SEARCH_FACTOR * Clock.forward * kinds)]
    assert report.examples == kinds * min(3, max_examples)


def test_past_the_deadline_the_search_tries_nothing_but_the_sweep_still_runs():
    subject = taps_subject("both", N)
    report = perturbation_evidence(
        subject, cut_list=list(range(N)), max_examples=50, timing=Clock(room=50, calls=0)
    )
    assert (report.examples, report.found, report.counterexamples) == (0, [], {})
    assert {t: (c, kind) for t, (c, _, kind) in report.sweep.items()} == expected_sweep("both", N)


@pytest.mark.parametrize("max_examples, searched", [(0, 0), (1, 2)])
def test_no_search_without_examples_to_try(max_examples, searched):
    report = perturbation_evidence(
        taps_subject("neither", N), cut_list=[0], max_examples=max_examples
    )
    assert report.examples == searched and report.found == []


class Late(nn.Module):
    """A leak of ``x_{t+3}`` from output 5 on: cut 6 moves output 5 through input 8."""

    def forward(self, x):
        y = shifted(x, -1)
        return y + shifted(x, 3) * (torch.arange(x.shape[1]) >= 5)[:, None]


def test_localizing_past_the_deadline_blames_the_cut():
    """Localizing tries one position at a time; once the time is up it stops and blames the
    cut's own position (the search found the leak; which input is the best it can say)."""
    subject = make_subject(Late().double(), grid=(N,), layout="BTC")
    runner = Runner(subject, seed=0)
    with model_mode(subject, train=False):
        violation, p, _ = hypothesis_search(runner, "future", max_examples=25, seed=0)
        x1 = causality.apply(subject, runner.pool(p.pool)[0], p)
        assert (p.cut, violation.output, violation.input) == (6, 5, 8)
        assert _localize(runner, p, x1, 5) == 8
        assert _localize(runner, p, x1, 5, over=lambda: True) == 6
        assert _localize(runner, p, x1, 5, over=lambda: False) == 8
        # the deadline passes between the search and its localizing: the search's result,
        # the cut blamed (localizing checked the clock at positions 6, 7 and 8 before)
        clock = Clock(room=25)
        found = hypothesis_search(
            Runner(subject, seed=0), "future", max_examples=25, seed=0, over=clock.over
        )
        assert (found[1], found[0].input) == (p, 8)
        late = Clock(room=25, calls=clock.checks - 3)
        found = hypothesis_search(
            Runner(subject, seed=0), "future", max_examples=25, seed=0, over=late.over
        )
        assert (found[1], found[0].input) == (p, 6)


# ---------------------------------------------------------------------------------------------
# Progress


def test_progress_names_the_sweep_and_each_search():
    stream = io.StringIO()
    with bars.showing(True, stream, delay=0.0):
        report = perturbation_evidence(
            taps_subject("both", N), cut_list=list(range(N)), max_examples=5
        )
    text = stream.getvalue()
    assert report.found and report.cuts_swept == N
    for phase in ("sweep", "hypothesis: future", "hypothesis: present"):
        assert f"{phase}:" in text
