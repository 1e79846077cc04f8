"""The verdict's edges that no model of ordinary size reaches: maps of more than 1024 outputs
(the chunked facts), grids above the exhaustive sweep, the cap on listed gradient pairs, the NaN
comparison, training mode's samples per pass, the batch-independence threshold, shards, and the
loss check as the only check; and the values behind every perturbation verdict: what each kind
of perturbation puts in place of the future, and the loss check's rows."""

import pytest
import torch
import torch.nn.functional as F
from known_models import expected_sweep, shifted, taps_subject
from torch import nn

from properties import audit, make_subject, verdict
from properties.evidence import facts
from properties.evidence.gradients import DependencyMap, dependency_map
from properties.evidence.loss import LossEquivalence, LossRows, _compare, merge_losses
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
    FLOAT_KINDS,
    TOKEN_KINDS,
    ZEROS,
    Perturbation,
    apply,
    kinds_for,
    replace_one,
    replacement_mask,
)
from properties.evidence.sharding import MIN_CHUNKS
from properties.extra.architectures import Architecture, PlantedLeak
from properties.subject.calls import forward, model_mode
from properties.verdict import Violation

audit_module = __import__("properties.auditing.gather", fromlist=["audit"])


def hand_map(subject, pairs):
    """A dependency map with exactly ``pairs`` (output, input) seen, every output mapped."""
    n = subject.n_positions
    seen = torch.zeros(n, n, dtype=torch.bool)
    for t, s in pairs:
        seen[t, s] = True
    return DependencyMap(torch.arange(n), seen, seen.to(torch.bfloat16), passes=n, method="plain")


# ---------------------------------------------------------------------------------------------
# Above the thresholds: more than 1024 outputs, more than EXHAUSTIVE_POSITIONS positions


def test_audit_above_the_exhaustive_grid_samples_cuts_and_maps_every_output():
    """1100 positions: the sweep samples its cuts (and records exactly those), the colored map
    still covers every output, and the facts read rows past the first 1024."""
    n = 1100
    subject = taps_subject((-3, -1, 0), n, predicts="next")
    result = audit(subject, checks=("causality", "receptive_field"), max_examples=5)
    cuts = audit_module.stratified(n, audit_module.SAMPLED_CUTS, 0 + 1)
    assert result.coverage["exhaustive"] is False
    report = result.perturbations["eval"]
    assert report.cuts_swept == len(cuts) < n
    sweep = {t: (c, kind) for t, (c, _, kind) in report.sweep.items()}
    assert sweep == {c: (c, "present") for c in cuts}
    dmap = result.maps["eval"]
    assert len(dmap.outputs) == n
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n and {(v.output, v.input) for v in listed} == {(t, t) for t in range(n)}
    field = result.receptive_field
    assert (field.size, field.span, field.holes) == (3, 3, 1)
    assert (result.mode, result.causal) == ("inclusive", True)


def test_exhaustive_threshold_is_inclusive(monkeypatch):
    """A grid of exactly EXHAUSTIVE_POSITIONS is swept whole; one more position is sampled."""
    monkeypatch.setattr(audit_module, "EXHAUSTIVE_POSITIONS", 16)
    monkeypatch.setattr(audit_module, "SAMPLED_CUTS", 4)
    whole = audit(taps_subject("future", 16), checks=("causality",), max_examples=3)
    assert whole.coverage["exhaustive"] is True
    assert whole.perturbations["eval"].cuts_swept == 16
    sampled = audit(taps_subject("future", 17), checks=("causality",), max_examples=3)
    assert sampled.coverage["exhaustive"] is False
    cuts = audit_module.stratified(17, 4, 1)
    report = sampled.perturbations["eval"]
    assert report.cuts_swept == len(cuts) < 17
    expected = expected_sweep("future", 17, cuts)
    assert {t: (c, k) for t, (c, _, k) in report.sweep.items()} == expected
    exact = audit(taps_subject("future", 17), checks=("causality",), max_examples=3, exact=True)
    assert exact.coverage["exhaustive"] is True
    assert exact.perturbations["eval"].cuts_swept == 17


def test_stratified_sample_has_the_edges_and_one_per_stratum():
    picks = audit_module.stratified(100, 10, 3)
    assert picks[0] == 0 and picks[-1] == 99 and picks == sorted(set(picks))
    for lo in range(0, 100, 10):
        assert any(lo <= p < lo + 10 for p in picks[1:-1]) or lo in (0, 90)
    assert audit_module.stratified(5, 10, 3) == [0, 1, 2, 3, 4]
    assert audit_module.stratified(10, 10, 3) == list(range(10))


def test_map_passes_threshold_picks_the_sampled_map(monkeypatch):
    """When the colored map would cost more than MAX_MAP_PASSES, the probe outputs and a
    stratified sample are mapped (plainly), and the facts read those rows."""
    monkeypatch.setattr(audit_module, "MAX_MAP_PASSES", 1)
    monkeypatch.setattr(audit_module, "SAMPLED_OUTPUTS", 6)
    n = 40
    result = audit(taps_subject("future", n), checks=("causality",), max_examples=3)
    dmap = result.maps["eval"]
    assert dmap.method == "sampled" and len(dmap.outputs) < n
    assert set(audit_module.stratified(n, 6, 0)) <= set(dmap.outputs.tolist())
    listed, total = facts.gradient_violations(result.subject, dmap)
    assert {(v.output, v.input) for v in listed} == {
        (t, t + 2) for t in dmap.outputs.tolist() if t + 2 < n
    }
    exact = audit(taps_subject("future", n), checks=("causality",), max_examples=3, exact=True)
    assert len(exact.maps["eval"].outputs) == n


def test_gradient_cap_keeps_a_later_future_pair():
    """2100 outputs each seeing the present, and one future pair after the first LISTED pairs:
    the list is capped, the count is not, and the future pair is kept (the mode needs it)."""
    n = 2100
    subject = taps_subject("neither", n)
    dmap = hand_map(subject, [(t, t) for t in range(n)] + [(2050, 2060)])
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n + 1
    assert len(listed) == facts.LISTED + 1
    assert [(v.output, v.input) for v in listed[: facts.LISTED]] == [
        (t, t) for t in range(facts.LISTED)
    ]
    assert (listed[-1].output, listed[-1].input, listed[-1].kind) == (2050, 2060, "future")
    assert verdict.mode_of(listed) == "none"
    # without the late future pair: present only, capped
    dmap = hand_map(subject, [(t, t) for t in range(n)])
    listed, total = facts.gradient_violations(subject, dmap)
    assert (len(listed), total, verdict.mode_of(listed)) == (facts.LISTED, n, "inclusive")


def test_gradient_facts_chunked_and_whole_agree(monkeypatch):
    """The same map read in blocks of 7 rows and at once: same pairs, fields, blind spot."""
    arch = Architecture(2, (3, 3), (1, 1), style="masked", seed=2)
    subject = make_subject(arch.build(), grid=(6, 7), layout=arch.layout)
    result = audit(subject, checks=("receptive_field", "blind_spot", "causality"), max_examples=3)
    dmap = result.maps["eval"]
    whole = (
        facts.receptive_field(subject, dmap),
        facts.blind_spot(subject, dmap),
        facts.rank_extremes(subject, dmap.seen),
    )
    monkeypatch.setattr(facts, "ROWS_AT_ONCE", 7)
    chunked = (
        facts.receptive_field(subject, dmap),
        facts.blind_spot(subject, dmap),
        facts.rank_extremes(subject, dmap.seen),
    )
    assert (whole[0].size, whole[0].span, whole[0].position) == (
        chunked[0].size,
        chunked[0].span,
        chunked[0].position,
    )
    assert torch.equal(whole[0].sizes, chunked[0].sizes)
    assert (whole[1].size, whole[1].position) == (chunked[1].size, chunked[1].position)
    assert torch.equal(whole[1].pixels, chunked[1].pixels)
    assert all(torch.equal(a, b) for a, b in zip(whole[2], chunked[2], strict=True))
    assert whole[1].size == arch.blind_spot() > 0


def test_blind_spot_of_an_output_past_the_first_1024_rows():
    """33 x 33 grid: the only blind pixel belongs to output (32, 24), row 1080 of the map."""
    subject = make_subject(nn.Identity(), grid=(33, 33), layout="BHWC", predicts="current")
    t = 32 * 33 + 24
    dmap = hand_map(subject, [(t, 30 * 33 + 24)])
    spot = facts.blind_spot(subject, dmap)
    assert (spot.size, spot.position) == (1, t)
    assert spot.pixels.nonzero().tolist() == [[31, 24]]
    low, high = facts.rank_extremes(subject, dmap.seen)
    assert (int(low[t]), int(high[t])) == (30 * 33 + 24,) * 2
    assert int(low[0]) == 33 * 33 and int(high[0]) == -1  # an empty row
    field = facts.receptive_field(subject, dmap)
    assert (field.size, field.span, field.position, field.holes) == (1, 66, t, None)


def test_receptive_field_prefers_the_most_inputs_then_the_furthest_reach():
    subject = taps_subject("neither", 20)
    dmap = hand_map(subject, [(5, 4), (5, 3), (9, 2), (9, 8), (12, 11)])
    field = facts.receptive_field(subject, dmap)
    assert (field.size, field.span, field.position, field.holes, field.max_span) == (
        2,
        7,
        9,
        5,
        7,
    )
    assert field.sizes.tolist()[9] == 2 and field.spans.tolist()[12] == 1


# ---------------------------------------------------------------------------------------------
# The NaN comparison


def test_changes_count_nan_on_one_side_as_infinite():
    y0 = torch.tensor([[[1.0], [2.0], [float("nan")], [float("nan")]]])  # (B=1, N=4, K=1)
    y1 = torch.tensor([[[1.5], [float("nan")], [float("nan")], [0.0]]])
    assert _changes(y0, y1).tolist() == [0.5, float("inf"), 0.0, float("inf")]
    assert _changes(y0[:, :2], y0[:, :2].clone()).tolist() == [0.0, 0.0]
    assert _changes(y0[:, :1], y1[:, :1]).dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# Training mode


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


class WidePastOfOthers(nn.Module):
    """Causal in both modes, samples interact: output (b, t) reads every sample's x_{<t}. Its
    receptive field is too wide to colour, so its map is the plain one: one row per output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        past = torch.cumsum(shifted(x, -1), 1) * self.weight
        return past + past.mean(0, keepdim=True)


class MixedPast(nn.Module):
    """``cumsum(x_{<t})`` plus ``mix`` times its batch mean, recording the batch size of every
    pass that builds a graph (the VJP passes)."""

    def __init__(self, mix):
        super().__init__()
        self.mix, self.sizes = mix, []

    def forward(self, x):
        if torch.is_grad_enabled():
            self.sizes.append(x.shape[0])
        past = torch.cumsum(shifted(x, -1), 1)
        return past + self.mix * past.mean(0, keepdim=True)


@pytest.mark.parametrize(
    "model, pairs",
    [
        pytest.param(PastOfOthers, lambda t, s: s == t - 1, id="colored"),  # one color
        pytest.param(WidePastOfOthers, lambda t, s: s < t, id="plain"),
    ],
)
@pytest.mark.parametrize("n", [10, 40])
def test_interacting_samples_give_no_false_gradient_pairs(model, pairs, n):
    """A map that stacked copies of the inputs for different outputs in one pass would hand
    one copy's gradient the dependencies of another copy's output through the batch mean: false
    future pairs. At 40 positions the probe's 9 rows and the plain map's 32 would stack
    (chunks of ceil(rows / MIN_CHUNKS)); the map measures the interaction and does not."""
    subject = make_subject(model().double(), grid=(n,), layout="BTC", predicts="current")
    result = audit(subject, checks=("causality",), max_examples=10)
    assert (result.mode, result.causal, result.violations) == ("strict", True, [])
    assert result.perturbations["eval"].batch_independent is False
    expected = torch.tensor([[bool(pairs(t, s)) for s in range(n)] for t in range(n)])
    assert torch.equal(result.maps["eval"].seen, expected)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    plain = dependency_map(subject, x, method="plain")
    assert torch.equal(plain.seen, expected)


def test_independent_samples_still_share_vjp_passes():
    """The interaction decides the stacking: 40 plain rows of 3 inputs go 5 copies to a pass
    (15 samples) when the samples are independent, one copy (3 samples) when they interact.
    Passes of 1 sample: the cost probe; of 3: the random directions' pass."""
    n = 40
    sizes = {}
    for mix in (0.0, 1.0):
        model = MixedPast(mix).double()
        subject = make_subject(model, grid=(n,), layout="BTC", predicts="current")
        x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
        dmap = dependency_map(subject, x, method="plain")
        assert torch.equal(dmap.seen, torch.ones(n, n, dtype=torch.bool).tril(-1))
        assert dmap.passes == n
        sizes[mix] = set(model.sizes)
    assert sizes == {0.0: {1, 3, 15}, 1.0: {1, 3}}


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
    chunks hold ``ceil(cuts / MIN_CHUNKS)`` cuts (here the memory budget and BATCH_BUDGET are
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


# ---------------------------------------------------------------------------------------------
# The loss check alone


@pytest.mark.parametrize(
    "bug, predicts, holds",
    [
        (None, "current", True),
        ("same_padding", "current", False),
        ("no_shift", "current", False),
        ("no_shift", "next", True),
        ("no_shift", "auto", False),  # no causality check: auto is checked as 'current'
    ],
)
def test_loss_only_verdict_is_the_loss_check(bug, predicts, holds):
    arch = Architecture(1, (2, 5), (1, 1), bug=bug)
    subject = make_subject(arch.build(), grid=(16,), layout="BCT", predicts=predicts)
    result = audit(subject, checks=("loss",))
    assert (result.mode, result.causal, result.violations) == (None, None, [])
    assert result.maps == {} and result.perturbations == {}
    assert result.loss.holds is holds and result.passed is holds
    assert result.coverage["loss_positions"] == {"checked": 16, "total": 16}
    convention = "current" if predicts == "auto" else predicts
    assert result.coverage["loss_convention"] == convention


# ---------------------------------------------------------------------------------------------
# Records out of order: what shards bring to the merge


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
    for name in ("cuts_swept", "examples", "noise_floor", "tolerance", "rounding", "evidence"):
        assert getattr(merged, name) == getattr(whole, name), name
    assert merged.counterexamples == whole.counterexamples
    assert merged.batch_independent is whole.batch_independent


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


# ---------------------------------------------------------------------------------------------
# Facts from hand-made maps: mode, verdict, clipping


def test_mode_and_verdict_table():
    def v(kind):
        return Violation(0, 0, kind, "gradient", 1.0)

    assert verdict.mode_of([]) == "strict"
    assert verdict.mode_of([v("present")]) == "inclusive"
    assert verdict.mode_of([v("present"), v("future")]) == "none"
    assert verdict.mode_of([v("future")]) == "none"
    verdicts = {
        (mode, predicts): verdict.passes(mode, predicts)
        for mode in verdict.MODES
        for predicts in ("current", "next", "auto")
    }
    assert {k for k, ok in verdicts.items() if ok} == {
        ("strict", "current"),
        ("strict", "next"),
        ("strict", "auto"),
        ("inclusive", "next"),
        ("inclusive", "auto"),
    }


def line_subject(n):
    return taps_subject("neither", n)


@pytest.mark.parametrize(
    "n, pairs, expected",
    [
        (20, [(t, s) for t in range(20) for s in range(max(0, t - 3), t + 1)], None),
        (5, [(t, s) for t in range(5) for s in range(t + 1)], (4, ["start"])),
        (4, [(t, s) for t in range(4) for s in range(t, 4)], (0, ["end"])),
        # every other input: the next one at the field's own spacing falls off the grid
        (8, [(t, s) for t in range(8) for s in (t - 6, t - 4, t - 2) if s >= 0], (6, ["start"])),
        (9, [(t, s) for t in range(9) for s in (t - 6, t - 4, t - 2) if s >= 0], None),
        (6, [], None),
        (6, [(3, 0)], (3, ["start"])),  # one input: the next one back would be at -1
        (6, [(3, 1)], None),
        (6, [(3, 1), (3, 3)], (3, ["start"])),  # two inputs: their spacing, 2
        (6, [(0, s) for s in range(5)], None),  # the next input would be 5, still inside
        (6, [(0, s) for s in range(6)], (0, ["end"])),
    ],
)
def test_clipped_sides_1d(n, pairs, expected):
    subject = line_subject(n)
    dmap = hand_map(subject, pairs)
    assert facts.clipped_sides(subject, dmap) == expected
    note = facts.clipping_note(subject, dmap)
    if expected is None:
        assert note is None
    else:
        assert note == (
            f"the receptive field may be clipped by the grid ({n},): the outputs that see the "
            f"most inputs (e.g. output {subject.position(expected[0])}) reach the "
            f"{' and '.join(expected[1])} of the grid; audit with a larger --length to "
            "measure it whole"
        )


def test_clipped_sides_2d():
    subject = make_subject(nn.Identity(), grid=(4, 4), layout="BHWC", predicts="current")
    everything_before = [(t, s) for t in range(16) for s in range(t)]
    dmap = hand_map(subject, everything_before)
    assert facts.clipped_sides(subject, dmap) == (15, ["start of axis 0", "start of axis 1"])
    assert facts.clipping_note(subject, dmap) == (
        "the receptive field may be clipped by the grid (4, 4): the outputs that see the most "
        "inputs (e.g. output [3, 3]) reach the start of axis 0 and start of axis 1 of the grid; "
        "audit with a larger --shape to measure it whole"
    )
    below_right = [(0, s) for s in (5, 10, 15)]  # output (0, 0) sees the diagonal ahead
    assert facts.clipped_sides(subject, hand_map(subject, below_right)) == (
        0,
        ["end of axis 0", "end of axis 1"],
    )
    empty = DependencyMap(
        torch.arange(0), torch.zeros(0, 16, dtype=torch.bool), torch.zeros(0, 16), 0, "plain"
    )
    assert facts.clipped_sides(subject, empty) is None


def test_blind_spot_only_on_raster_2d_grids():
    assert facts.blind_spot(line_subject(6), hand_map(line_subject(6), [(3, 1)])) is None
    subject = make_subject(nn.Identity(), grid=(3, 3), layout="BHWC", predicts="current")
    spot = facts.blind_spot(subject, hand_map(subject, [(4, 3)]))
    assert (spot.size, spot.position, int(spot.pixels.sum())) == (0, None, 0)
    spot = facts.blind_spot(subject, hand_map(subject, [(7, 1), (7, 6)]))  # (2,1) sees (0,1)
    assert (spot.size, spot.position) == (1, 7)
    assert spot.pixels.nonzero().tolist() == [[1, 1]]


def test_receptive_field_size_before_reach():
    """Most inputs first, however far another output reaches: a leaky output that sees 3 inputs
    (span 0) beats a causal one that sees 2 reaching 7 back."""
    subject = taps_subject("neither", 20)
    dmap = hand_map(subject, [(4, 4), (4, 5), (4, 6), (15, 8), (15, 15)])
    field = facts.receptive_field(subject, dmap)
    assert (field.size, field.span, field.position, field.holes, field.max_span) == (3, 0, 4, 0, 7)


# ---------------------------------------------------------------------------------------------
# What a perturbation puts in place of the future, kind by kind; the loss check's rows


PN = 8  # grid of the perturbation tests


def pool_of(subject, batch=2):
    return subject.draw_inputs(batch, torch.Generator().manual_seed(5))


def noise(p, size, dtype=torch.float64):
    return torch.randn(size, generator=torch.Generator().manual_seed(p.seed), dtype=dtype)


@pytest.mark.parametrize("cut", [0, 3, PN - 1])
@pytest.mark.parametrize("kind", FLOAT_KINDS[:4] + (ZEROS,))
def test_float_kinds_replace_exactly_the_future_with_their_values(kind, cut):
    subject = taps_subject("neither", PN)
    x = pool_of(subject)
    p = Perturbation(cut, kind, 10.0, seed=11)
    x1 = apply(subject, x, p)
    assert torch.equal(x1[:, :cut], x[:, :cut])  # the past untouched
    assert torch.equal(x, pool_of(subject))  # the pool itself untouched
    future, size = x1[:, cut:], (2, PN - cut, 1)
    expected = {
        "add": x[:, cut:] + 10.0 * noise(p, size),
        "normal": 10.0 * noise(p, size),
        "constant": torch.full(size, 10.0, dtype=torch.float64),
        ZEROS: torch.zeros(size, dtype=torch.float64),
    }
    if kind == "uniform":
        assert future.abs().max() <= 10.0 and future.abs().max() > 1.0
        assert not torch.equal(future, x[:, cut:])
    else:
        assert torch.equal(future, expected[kind])


def test_class_and_token_kinds():
    classes = make_subject(nn.Identity(), grid=(PN,), layout="BTC", classes=5)
    assert kinds_for(classes) == FLOAT_KINDS
    assert kinds_for(taps_subject("neither", PN)) == FLOAT_KINDS[:4]
    x = pool_of(classes)
    levels = apply(classes, x, Perturbation(2, "levels", 1.0, seed=3))[:, 2:]
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 4
    assert levels.unique().numel() > 1

    tokens = make_subject(nn.Embedding(7, 3), grid=(PN,), layout="BT->BTC", vocab=7)
    assert kinds_for(tokens) == TOKEN_KINDS
    t = pool_of(tokens)
    constant = apply(tokens, t, Perturbation(3, "constant", 1.0, seed=12))
    assert (constant[:, 3:] == 12 % 7).all() and torch.equal(constant[:, :3], t[:, :3])
    random = apply(tokens, t, Perturbation(0, "random", 1.0, seed=4))
    # a perturbation is a value: its own generator, never the global RNG
    assert torch.equal(random, apply(tokens, t, Perturbation(0, "random", 1.0, seed=4)))
    assert random.dtype == t.dtype and random.min() >= 0 and random.max() < 7
    assert not torch.equal(random, t)
    assert (apply(tokens, t, Perturbation(2, ZEROS, 0.0, seed=0))[:, 2:] == 0).all()


def test_nothing_to_replace_and_unknown_kinds():
    subject = taps_subject("neither", PN)
    x = pool_of(subject)
    assert torch.equal(apply(subject, x, Perturbation(PN, "normal", 1.0, seed=0)), x)
    with pytest.raises(ValueError, match="unknown perturbation kind 'wild'"):
        apply(subject, x, Perturbation(0, "wild", 1.0, seed=0))
    assert replacement_mask(subject, 5).tolist() == [False] * 5 + [True] * 3


def test_replace_one_takes_one_position():
    subject = taps_subject("neither", PN)
    x, x1 = pool_of(subject), torch.zeros(2, PN, 1, dtype=torch.float64)
    one = replace_one(subject, x, x1, 4)
    assert (one[:, 4] == 0).all() and torch.equal(one[:, :4], x[:, :4])
    assert torch.equal(one[:, 5:], x[:, 5:])


@pytest.mark.parametrize(
    "kind, magnitude, text",
    [
        (ZEROS, 0.0, "positions of rank >= 3 were replaced by zeros"),
        ("add", 0.01, "positions of rank >= 3 shifted by 0.01 x noise"),
        ("normal", 10.0, "positions of rank >= 3 replaced by normal values of scale 10"),
        ("uniform", 1.0, "positions of rank >= 3 replaced by uniform values in +-1"),
        ("constant", 100.0, "positions of rank >= 3 replaced by the constant 100"),
        ("levels", 1.0, "positions of rank >= 3 replaced by random class values"),
        ("random", 1.0, "positions of rank >= 3 replaced by random tokens"),
    ],
)
def test_describe(kind, magnitude, text):
    assert Perturbation(3, kind, magnitude, seed=1).describe() == text


def test_describe_token_constant():
    """'constant' is a kind of both floats and tokens: the vocabulary says which."""
    p = Perturbation(2, "constant", 100.0, seed=9)
    assert p.describe(vocab=4) == "positions of rank >= 2 replaced by the token 1"
    assert p.describe() == "positions of rank >= 2 replaced by the constant 100"


# ---------------------------------------------------------------------------------------------
# The loss check


class NextLogits(nn.Module):
    """Tokens in, logits over the same vocabulary out; output t sees tokens up to ``t + ahead``."""

    def __init__(self, vocab=6, ahead=0):
        super().__init__()
        self.ahead = ahead
        self.embed = nn.Embedding(vocab, vocab)

    def forward(self, tokens):
        return shifted(self.embed(tokens), self.ahead) + self.embed(tokens) * 0.5


@pytest.mark.parametrize(
    "ahead, predicts, holds",
    [(-1, "current", True), (0, "current", False), (0, "next", True), (1, "next", False)],
)
def test_loss_check_on_token_logits(ahead, predicts, holds):
    """Where the outputs are logits over the input's classes, the cross-entropies are compared
    too: the one-pass loss equals the masked one exactly when the check holds."""
    model = NextLogits(ahead=ahead) if ahead >= 0 else _Past()
    subject = make_subject(model, grid=(PN,), layout="BT->BTC", vocab=6, predicts=predicts)
    result = audit(subject, checks=("loss",))
    loss = result.loss
    assert loss.holds is holds and result.passed is holds
    assert [r["position"] for r in loss.positions] == list(range(PN))
    assert loss.one_pass_loss == pytest.approx(sum(r["one_pass_loss"] for r in loss.positions))
    assert loss.masked_loss == pytest.approx(sum(r["masked_loss"] for r in loss.positions))
    assert (loss.max_loss_diff == 0) is holds
    assert (loss.one_pass_loss == pytest.approx(loss.masked_loss, abs=1e-9)) is holds


class _Past(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 6)

    def forward(self, tokens):
        return shifted(self.embed(tokens), -1)


def test_loss_rows_for_both_conventions():
    """At cut c the masked input is the current model's input for position c and the next
    model's for position c - 1; the next model's last position masks nothing."""
    subject = make_subject(NextLogits(ahead=0), grid=(4,), layout="BT->BTC", vocab=6)
    x = pool_of(subject)
    y_full = subject(x).detach()
    rows = LossRows(subject, x, y_full, tolerance=0.0)
    for c in range(4):
        masked = x.clone()
        masked[:, c:] = 0
        rows(c, subject(masked).detach())
    results = rows.results()
    assert [r["position"] for r in results["current"].positions] == [0, 1, 2, 3]
    assert [r["position"] for r in results["next"].positions] == [0, 1, 2, 3]
    assert results["next"].holds and not results["current"].holds  # it sees the present
    assert results["next"].positions[-1]["max_abs_diff"] == 0.0
    targets = subject.targets(x, "current")
    one = F.cross_entropy(y_full[:, 0].double(), targets[:, 0], reduction="sum") / 2
    assert results["current"].positions[0]["one_pass_loss"] == pytest.approx(float(one))


def test_loss_without_class_targets_and_merged():
    subject = taps_subject("present", PN, predicts="current")
    result = audit(subject, checks=("loss",))
    loss = result.loss
    assert (loss.max_loss_diff, loss.one_pass_loss, loss.masked_loss) == (None, None, None)
    assert not loss.holds and loss.max_abs_diff == max(r["max_abs_diff"] for r in loss.positions)
    halves = [
        LossEquivalence.from_rows(loss.positions[4:], 1.0),
        LossEquivalence.from_rows(loss.positions[:4], 2.0),
    ]
    merged = merge_losses(halves)
    assert merged.positions == loss.positions and merged.tolerance == 2.0
    assert merged.max_abs_diff == loss.max_abs_diff
    empty = LossEquivalence.from_rows([], 0.5)
    assert (empty.max_abs_diff, empty.holds) == (0.0, True)


def test_facts_of_an_empty_map_and_of_a_non_raster_order():
    subject = line_subject(6)
    field = facts.receptive_field(subject, hand_map(subject, []))
    assert (field.size, field.span, field.holes, field.max_span) == (0, 0, None, 0)
    listed, total = facts.gradient_violations(subject, hand_map(subject, [(2, 2)]))
    assert (listed[0].detail, listed[0].effect, total) == ("non-zero gradient", 1.0, 1)
    order = list(range(8, -1, -1))  # generation order: the last pixel first
    made = make_subject(nn.Identity(), grid=(3, 3), layout="BHWC", order=order)
    dmap = hand_map(made, [(1, 7), (1, 4)])  # output (0, 1) sees (2, 1), (1, 1): its past
    assert facts.blind_spot(made, dmap) is None
    assert facts.clipped_sides(made, dmap) is None
    listed, _ = facts.gradient_violations(made, hand_map(made, [(7, 1)]))  # (2,1) sees (0,1)
    assert [(v.output, v.input, v.kind) for v in listed] == [(7, 1, "future")]
    # listed in generation order: position 5 (rank 3) before position 2 (rank 6)
    pairs = [(2, 2), (2, 0), (5, 5), (5, 1)]
    listed, _ = facts.gradient_violations(made, hand_map(made, pairs))
    assert [(v.output, v.input) for v in listed] == [(5, 5), (5, 1), (2, 2), (2, 0)]


# ---------------------------------------------------------------------------------------------
# Samples per pass, chunks of stacked cuts, defaults


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
        # MIN_CHUNKS = 8 chunks of ceil(n / 8) cuts, at most BATCH_BUDGET // n: pool and floor
        # passes (1, 2), the floor's stack and full chunks (copies), a shorter last chunk
        (False, 8, {1, 2}),  # chunks of 1: the floor stacks nothing more either
        (False, 38, {1, 2, 5, 3}),  # chunks of 5: 7 x 5 + 3
        (False, 800, {1, 2, 65536 // 800, 800 - 9 * 81}),  # BATCH_BUDGET: 9 x 81 + 71
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
    BATCH_BUDGET // n (800 positions: 81, not 100); shard i of 2 sweeps chunks i, i + 2, ...
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


def test_compare_sums_cross_entropies_over_valid_targets_per_sample():
    full = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    masked = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, -1])  # class 0 is a class; -1 is none
    row = _compare(full, masked, target)
    one = F.cross_entropy(full[:2].double(), target[:2], reduction="sum") / 3
    two = F.cross_entropy(masked[:2].double(), target[:2], reduction="sum") / 3
    assert row["max_abs_diff"] == 3.0
    assert row["one_pass_loss"] == pytest.approx(float(one), rel=1e-12)
    assert row["masked_loss"] == pytest.approx(float(two), rel=1e-12)
    assert row["loss_diff"] == pytest.approx(abs(float(one - two)), rel=1e-12)
    none = _compare(full, masked, torch.tensor([-1, -1, -1]))
    assert (none["one_pass_loss"], none["masked_loss"], none["loss_diff"]) == (0.0, 0.0, 0.0)
    assert "loss_diff" not in _compare(full, masked, None)


def test_loss_summary_of_rows_with_class_targets():
    rows = [
        {
            "position": 1,
            "max_abs_diff": 0.5,
            "one_pass_loss": 1.0,
            "masked_loss": 2.0,
            "loss_diff": 1.0,
        },
    ]
    one = LossEquivalence.from_rows(rows, 0.25)
    assert (one.max_abs_diff, one.max_loss_diff, one.tolerance, one.holds) == (
        0.5,
        1.0,
        0.25,
        False,
    )
    assert (one.one_pass_loss, one.masked_loss) == (1.0, 2.0)


def test_loss_targets_per_convention_and_outputs_that_are_not_logits():
    subject = make_subject(NextLogits(ahead=0), grid=(4,), layout="BT->BTC", vocab=6)
    x = pool_of(subject)
    y_full = subject(x).detach()
    rows = LossRows(subject, x, y_full, tolerance=0.0)
    rows(1, y_full)
    nxt = rows.results()["next"].positions[0]  # position 0 predicts token x_1
    expected = F.cross_entropy(y_full[:, 0].double(), x[:, 1], reduction="sum") / 2
    assert nxt["one_pass_loss"] == pytest.approx(float(expected), rel=1e-12)
    features = make_subject(nn.Embedding(6, 3), grid=(PN,), layout="BT->BTC", vocab=6)
    result = audit(features, checks=("loss",))  # 3 features are no logits over 6 tokens
    assert result.loss.max_loss_diff is None and result.loss.one_pass_loss is None


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
        violation.detail
        == f"hypothesis: positions of rank >= {p.cut} replaced by the token {p.seed % 100}"
    )
