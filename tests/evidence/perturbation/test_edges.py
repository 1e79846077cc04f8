"""The perturbation evidence (properties/evidence/perturbation.py) at its edges: the NaN
comparison, training mode's samples per pass, the batch-independence threshold, the noise floor
over stacked copies, records that shards bring to the merge, chunks of stacked cuts, rounding
dismissals and the counterexamples' words."""

import pytest
import torch
from known_models import shifted, taps_subject
from torch import nn

from properties import audit, make_subject
from properties.evidence.perturbation import (
    PerturbationReport,
    Runner,
    _changes,
    _record,
    hypothesis_search,
    measure_noise_floor,
    merge_reports,
    perturbation_evidence,
)
from properties.evidence.replacements import (
    Perturbation,
    apply,
)
from properties.evidence.sharding import MIN_CHUNKS
from properties.extra.architectures import Architecture, PlantedLeak
from properties.subject.calls import forward, model_mode


def test_changes_count_nan_on_one_side_as_infinite():
    y0 = torch.tensor([[[1.0], [2.0], [float("nan")], [float("nan")]]])  # (B=1, N=4, K=1)
    y1 = torch.tensor([[[1.5], [float("nan")], [float("nan")], [0.0]]])
    assert _changes(y0, y1).tolist() == [0.5, float("inf"), 0.0, float("inf")]
    assert _changes(y0[:, :2], y0[:, :2].clone()).tolist() == [0.0, 0.0]
    assert _changes(y0[:, :1], y1[:, :1]).dtype == torch.float64


class OthersFuture(nn.Module):
    """Causal alone; in training mode output (b, t) also reads the *other* samples' x_{t+1}
    (what batch statistics do): a batch of one never shows it."""

    def forward(self, x):
        y = shifted(x, -1)
        if self.training:
            nxt = shifted(x, 1)
            y = y + (nxt.sum(0, keepdim=True) - nxt)
        return y


class PastOfOthers(nn.Module):
    """Causal in both modes, but samples interact: output (b, t) reads every sample's x_{t-1}.
    Stacking the cuts of a sweep in one pass would make one cut's zeros move another's past.
    A float64 weight makes it a float64 subject: no float64 confirmation (which reruns each
    perturbed copy alone) stands between the sweep and its stacked passes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        past = shifted(x, -1) * self.weight
        return past + past.mean(0, keepdim=True)


def test_training_mode_uses_two_samples_per_pass():
    subject = make_subject(OthersFuture().double(), grid=(10,), layout="BTC")
    result = audit(subject, train=True, checks=("causality",), max_examples=10)
    assert result.mode == "none"
    seen = {v.evidence for v in result.violations if v.kind == "future"}
    assert "perturbation/train" in seen and "perturbation" not in seen
    report = result.perturbations["train"]
    assert report.batch_independent is False
    assert any("(expected in training mode)" in note for note in result.notes)
    assert {t: (c, k) for t, (c, _, k) in report.sweep.items()} == {
        t: (t + 1, "future") for t in range(9)
    }


@pytest.mark.parametrize("train", [False, True])
def test_interacting_samples_are_swept_one_cut_per_pass(train):
    """The perturbation evidence of a causal model whose samples interact: no violation (one cut
    per forward pass), in both modes."""
    subject = make_subject(PastOfOthers().double(), grid=(10,), layout="BTC", predicts="current")
    with model_mode(subject, train=train):
        report = perturbation_evidence(
            subject, cut_list=list(range(10)), max_examples=10, train=train
        )
    assert report.batch_independent is False and report.cuts_swept == 10
    assert (report.sweep, report.found) == ({}, [])
    assert "depend on the other samples" in report.notes(train)[0]


class Scaled(nn.Module):
    """``scale * x_{t-1}`` plus ``mix`` times the batch mean: samples interact by ``mix``."""

    def __init__(self, scale, mix):
        super().__init__()
        self.scale, self.mix = scale, mix

    def forward(self, x):
        past = shifted(x, -1)
        return self.scale * past + self.mix * x.mean(0, keepdim=True)


@pytest.mark.parametrize(
    "scale, mix, independent",
    [
        (1e-6, 1e-7, False),  # tiny outputs, interaction 10% of them
        (1e6, 1e-3, True),  # huge outputs, interaction 1e-9 of them: rounding-sized
        (1.0, 0.0, True),
        (1.0, 1e-2, False),
    ],
)
def test_batch_independence_is_relative_to_the_outputs(scale, mix, independent):
    subject = make_subject(Scaled(scale, mix).double(), grid=(8,), layout="BTC")
    x = subject.draw_inputs(1, torch.Generator().manual_seed(0))
    with model_mode(subject, train=False):
        y0 = forward(subject, x, seed=0)
        _, found = measure_noise_floor(subject, x, y0, 4, seed=0)
    assert found is independent


def test_noise_floor_counts_stacked_copies():
    """A float32 model whose outputs differ from three stacked samples on: the floor includes
    that difference exactly when the sweep stacks three cuts or more in one pass. The sweep's
    chunks hold ``ceil(cuts / MIN_CHUNKS)`` cuts (here the memory budget and POSITIONS_PER_PASS are
    far away), so 16 cuts stack 2 per pass and 17 cuts 3; training mode sweeps one cut per
    pass, so the stacked differences are never its noise."""

    class BatchRounding(nn.Module):
        def forward(self, x):
            return shifted(x, -1) * (1 + 1e-6 * (x.shape[0] > 2))

    subject = make_subject(BatchRounding(), grid=(24,), layout="BTC")
    x = subject.draw_inputs(1, torch.Generator().manual_seed(0))
    y0 = forward(subject, x, seed=0)
    stacked, independent = measure_noise_floor(subject, x, y0, 4, seed=0)
    alone, _ = measure_noise_floor(subject, x, y0, 4, seed=0, stacked=False)
    assert independent and alone == 0.0
    assert stacked == pytest.approx(float((y0 * 1e-6).abs().max()), rel=0.1)

    def floor(cuts, train=False):
        report = perturbation_evidence(
            subject, cut_list=list(range(cuts)), max_examples=1, search=False, train=train
        )
        assert report.tolerance == 4.0 * report.noise_floor
        return report.noise_floor

    assert MIN_CHUNKS == 8
    assert (floor(1), floor(16)) == (0.0, 0.0)
    assert floor(17) == pytest.approx(stacked, rel=1e-6) and floor(24) == floor(17)
    assert floor(24, train=True) == 0.0


def test_record_keeps_a_future_over_a_present_and_the_furthest_cut():
    records: dict = {}
    steps = [  # (cut, kind) arriving for output 3, and the record kept after each
        ((3, "present"), (3, "present")),
        ((5, "future"), (5, "future")),  # a future over a present
        ((4, "future"), (5, "future")),  # not an earlier cut
        ((6, "present"), (5, "future")),  # never a present over a future
        ((7, "future"), (7, "future")),
    ]
    for effect, ((cut, kind), kept) in enumerate(steps):
        _record(records, 3, cut, float(effect), kind)
        assert records[3][0::2] == kept
    _record(records, 9, 9, 1.0, "present")
    _record(records, 9, 9, 2.0, "present")  # the first present stays
    assert records == {3: (7, 4.0, "future"), 9: (9, 1.0, "present")}


@pytest.mark.parametrize("count", [2, 3, 4])
def test_sharded_perturbation_evidence_merges_to_the_whole(count):
    """Training mode sweeps one cut per pass, so shards interleave cuts: the merge must rebuild
    the whole sweep, the searches (future leaks on shard 0, the present on shard 1), and every
    count."""
    subject = taps_subject("both", 12)

    def gather(shard):
        with model_mode(subject, train=True):
            return perturbation_evidence(
                subject, cut_list=list(range(12)), max_examples=10, train=True, shard=shard
            )

    whole = gather(None)
    parts = [gather((i, count)) for i in range(count)]
    assert [p.cuts_swept for p in parts] == [len(range(i, 12, count)) for i in range(count)]
    searched = [[v.kind for v in p.found] for p in parts]
    assert searched == [["future"], ["present"]] + [[]] * (count - 2)
    assert [sorted(p.counterexamples) for p in parts[:2]] == [["future"], ["present"]]
    assert all(p.examples > 0 for p in parts[:2]) and all(p.examples == 0 for p in parts[2:])
    merged = merge_reports(parts)
    assert merged.sweep == whole.sweep
    assert [(v.output, v.input, v.kind) for v in merged.found] == [
        (v.output, v.input, v.kind) for v in whole.found
    ]
    for name in PerturbationReport.scalars():
        assert getattr(merged, name) == getattr(whole, name), name
    assert merged.counterexamples == whole.counterexamples


def test_merge_takes_the_worst_of_the_shards():
    a = PerturbationReport(noise_floor=1.0, tolerance=4.0, cuts_swept=2, examples=5, rounding=1)
    b = PerturbationReport(
        noise_floor=2.0, tolerance=8.0, batch_independent=False, cuts_swept=3, rounding=2
    )
    merged = merge_reports([a, b])
    assert (merged.noise_floor, merged.tolerance, merged.batch_independent) == (2.0, 8.0, False)
    assert (merged.cuts_swept, merged.examples, merged.rounding) == (5, 5, 3)


def test_perturbation_notes_say_what_was_not_counted():
    report = PerturbationReport(batch_independent=False, rounding=3)
    inference, training = report.notes(False), report.notes(True)
    assert inference[0] == "predictions depend on the other samples of the batch"
    assert training[0] == inference[0] + " (expected in training mode)"
    assert inference[1] == training[1]
    assert inference[1] == (
        "3 changes of float32 predictions vanished in float64: rounding in arithmetic where the "
        "future cancels only on paper (x_t subtracted back out of a sum, a kernel that mixes "
        "neighbouring inputs), not a dependency; not counted"
    )
    assert PerturbationReport().notes(True) == []


PN = 8  # grid of the perturbation tests


class BatchSizes(nn.Module):
    """``x_{t-1}``, recording the batch size of every forward pass."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return shifted(x, -1)


@pytest.mark.parametrize(
    "train, n, sizes",
    [
        # MIN_CHUNKS = 8 chunks of ceil(n / 8) cuts, at most POSITIONS_PER_PASS // n: pool and floor
        # passes (1, 2), the floor's stack and full chunks (copies), a shorter last chunk
        (False, 8, {1, 2}),  # chunks of 1: the floor stacks nothing more either
        (False, 38, {1, 2, 5, 3}),  # chunks of 5: 7 x 5 + 3
        (False, 800, {1, 2, 65536 // 800, 800 - 9 * 81}),  # POSITIONS_PER_PASS: 9 x 81 + 71
        (True, 8, {2, 4}),  # two samples, one cut per pass; the floor's pair of batches
    ],
)
def test_samples_per_forward_pass(train, n, sizes):
    """One base sample per pool in inference, cuts stacked in chunks (the noise floor stacks as
    many copies as a chunk holds); two in training mode, one cut per pass."""
    model = BatchSizes().double()
    subject = make_subject(model, grid=(n,), layout="BTC", predicts="current")
    model.sizes.clear()
    with model_mode(subject, train=train):
        report = perturbation_evidence(
            subject, cut_list=list(range(n)), max_examples=1, train=train, search=False
        )
    assert set(model.sizes) == sizes and report.batch_independent
    assert report.cuts_swept == n


@pytest.mark.parametrize("n, per_pass", [(300, 38), (800, 81)])
def test_sharded_inference_sweeps_its_own_chunks_of_stacked_cuts(n, per_pass):
    """A stacked pass holds ceil(n / MIN_CHUNKS) cuts (300 positions: 38), at most
    POSITIONS_PER_PASS // n (800 positions: 81, not 100); shard i of 2 sweeps chunks i, i + 2, ...
    only, and says how many cuts it swept."""
    subject = taps_subject("present", n)
    whole = perturbation_evidence(subject, cut_list=list(range(n)), max_examples=1, search=False)
    parts = [
        perturbation_evidence(
            subject, cut_list=list(range(n)), max_examples=1, search=False, shard=(i, 2)
        )
        for i in range(2)
    ]
    starts = range(0, n, per_pass)
    assert len(starts) >= MIN_CHUNKS
    for i, part in enumerate(parts):
        chunk = {c for start in starts[i::2] for c in range(start, min(n, start + per_pass))}
        swept = {c for c, _, _ in part.sweep.values()}  # every cut records its own output
        assert swept == chunk and part.cuts_swept == len(chunk)
    assert merge_reports(parts).sweep == whole.sweep
    assert whole.cuts_swept == n and len(whole.sweep) == n


def test_perturbation_evidence_defaults_search_with_seed_zero():
    subject = make_subject(PlantedLeak(causal_net(), "large"), grid=(24,), layout="BCT")
    default = perturbation_evidence(subject, cut_list=[0], max_examples=20)
    seeded = perturbation_evidence(subject, cut_list=[0], max_examples=20, seed=0)
    assert default.examples > 0 and default.found
    assert (default.examples, default.counterexamples) == (seeded.examples, seeded.counterexamples)


def test_sweep_violations_in_generation_order():
    """Generation order reversed: the lagged model sees its future; violations come in rank
    order (the last position first)."""
    subject = taps_subject("neither", 8, order=list(range(7, -1, -1)))
    report = perturbation_evidence(subject, cut_list=list(range(8)), max_examples=1, search=False)
    violations = report.violations(subject)
    assert [v.output for v in violations] == [7, 6, 5, 4, 3, 2, 1]
    assert all(v.kind == "future" for v in violations)


def causal_net():
    return Architecture(1, (2, 2), (1, 2), seed=1).build()


def test_class_valued_pools_hold_class_values():
    """The loss check reads its targets from the pool: class-valued subjects get classes."""
    subject = make_subject(nn.Identity(), grid=(PN,), layout="BTC", classes=5)
    x = Runner(subject, seed=0, pool_size=2).pool(0)[0]
    assert torch.equal(x, x.round()) and x.min() >= 0 and x.max() <= 4
    levels = Perturbation(0, "levels", 1.0, seed=3)
    assert torch.equal(apply(subject, x, levels), apply(subject, x, levels))


def test_noise_floor_stacks_as_many_copies_as_a_pass():
    """Rounding that appears only from three stacked copies on is part of the floor when a
    pass holds three."""

    class ThreeOrMore(nn.Module):
        def forward(self, x):
            return shifted(x, -1) * (1 + 1e-6 * (x.shape[0] > 2))

    subject = make_subject(ThreeOrMore(), grid=(8,), layout="BTC")
    x = subject.draw_inputs(1, torch.Generator().manual_seed(0))
    y0 = forward(subject, x, seed=0)
    assert measure_noise_floor(subject, x, y0, 2, seed=0)[0] == 0.0
    assert measure_noise_floor(subject, x, y0, 3, seed=0)[0] > 0.0


class ExclusiveSum(nn.Module):
    """``cumsum(h) - h``: independent of ``h_t`` on paper, not in float32's last bits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(1, 4)

    def forward(self, x):
        h = self.lin(x)
        return torch.cumsum(h, 1) - h


def test_rounding_dismissals_are_counted_over_every_cut():
    subject = make_subject(ExclusiveSum(), grid=(24,), layout="BTC", predicts="current")

    def rounding(cuts):
        return perturbation_evidence(subject, cut_list=cuts, max_examples=1, search=False).rounding

    whole, first, second = (
        rounding(list(range(24))),
        rounding(list(range(12))),
        rounding(list(range(12, 24))),
    )
    assert first > 0 and second > 0 and whole == first + second


def test_token_counterexample_names_its_token():
    """A leak that shows only when the next three tokens are equal: the search shrinks to the
    constant kind, and the counterexample says which token (not a float constant)."""

    class EqualNext(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 2)

        def forward(self, tokens):
            a, b, c = (shifted(tokens[..., None], k)[..., 0] for k in (1, 2, 3))
            equal = ((a == b) & (b == c)).to(torch.float32)[..., None]
            return shifted(self.embed(tokens), -1) + equal

    subject = make_subject(EqualNext(), grid=(PN,), layout="BT->BTC", vocab=100)
    runner = Runner(subject, seed=0)
    with model_mode(subject, train=False):
        violation, p, _ = hypothesis_search(runner, "future", max_examples=50, seed=0)
    assert p.kind == "constant"
    assert (
        violation.described
        == f"hypothesis: positions of rank >= {p.cut} replaced by the token {p.seed % 100}"
    )
