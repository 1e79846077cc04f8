"""The facts read from a dependency map, on hand-made maps whose answers are known exactly:
gradient violations (which pairs are listed, in which order, and their kinds), receptive
fields, blind spots and rank extremes, for raster and non-raster orders."""

import pytest
import torch
from known_models import taps_subject
from torch import nn

from properties import audit, make_subject, verdict
from properties.evidence import facts
from properties.evidence.gradients import DependencyMap
from properties.extra.architectures import Architecture


def hand_map(subject, pairs, rows=None):
    """A map with exactly ``pairs`` (output, input) seen; rows ``rows`` (default: every output,
    in flat order), strengths 1 + input / 8 so that each pair's effect names its input."""
    n = subject.n_positions
    outputs = torch.arange(n) if rows is None else torch.as_tensor(rows)
    seen = torch.zeros(len(outputs), n, dtype=torch.bool)
    row_of = {int(t): i for i, t in enumerate(outputs)}
    for t, s in pairs:
        seen[row_of[t], s] = True
    strength = (seen * (1 + torch.arange(n) / 8)).to(torch.bfloat16)
    return DependencyMap(outputs, seen, strength, passes=len(outputs), method="plain")


def reversed_line(n):
    """A length-``n`` sequence generated from its last position to its first."""
    return make_subject(nn.Identity(), grid=(n,), layout="BTC", order=list(range(n - 1, -1, -1)))


def test_listed_pairs_are_the_first_in_rank_order_for_a_reversed_order():
    """2100 outputs each seeing itself, generated last position first: the GRADIENT_PAIRS_KEPT
    pairs kept are those of the first-generated outputs (positions 2099, 2098, ...), not the
    first rows of the map's storage (positions 0, 1, ...)."""
    n = 2100
    subject = reversed_line(n)
    dmap = hand_map(subject, [(t, t) for t in range(n)])
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n
    assert [(v.output, v.input) for v in listed] == [
        (t, t) for t in range(n - 1, n - 1 - facts.GRADIENT_PAIRS_KEPT, -1)
    ]
    assert {v.kind for v in listed} == {"present"}


def test_listed_pairs_of_a_column_major_order_are_the_first_generated(monkeypatch):
    """A 3 x 4 image generated column by column, read in blocks of 2 rows and capped at 3
    pairs: the pairs kept are those of the first-generated outputs (column 0: positions 0, 4,
    8), in rank order, whatever the order of the map's rows; the count covers them all."""
    column_major = [r * 4 + c for c in range(4) for r in range(3)]
    subject = make_subject(nn.Identity(), grid=(3, 4), layout="BHWC", order=column_major)
    monkeypatch.setattr(facts, "ROWS_AT_ONCE", 2)
    monkeypatch.setattr(facts, "GRADIENT_PAIRS_KEPT", 3)
    pairs = [(t, t) for t in range(12)] + [(4, 1)]  # output (1, 0) sees (0, 1): rank 3 > 1
    for rows in (None, [11, 3, 7, 0, 8, 4, 1, 5, 9, 2, 6, 10]):
        listed, total = facts.gradient_violations(subject, hand_map(subject, pairs, rows))
        assert total == 13
        assert [(v.output, v.input, v.kind) for v in listed] == [
            (0, 0, "present"),
            (4, 4, "present"),
            (4, 1, "future"),
        ]
        assert [v.effect for v in listed] == [1.0, 1.5, 1.125]  # each pair's own strength


def test_gradient_cap_keeps_a_later_future_pair():
    """2100 outputs each seeing the present, and one future pair after the first
    GRADIENT_PAIRS_KEPT pairs: the list is capped, the count is not, and the future pair is kept
    (the mode needs it)."""
    n = 2100
    subject = taps_subject("neither", n)
    dmap = hand_map(subject, [(t, t) for t in range(n)] + [(2050, 2060)])
    listed, total = facts.gradient_violations(subject, dmap)
    assert total == n + 1
    assert len(listed) == facts.GRADIENT_PAIRS_KEPT + 1
    assert [(v.output, v.input) for v in listed[: facts.GRADIENT_PAIRS_KEPT]] == [
        (t, t) for t in range(facts.GRADIENT_PAIRS_KEPT)
    ]
    assert (listed[-1].output, listed[-1].input, listed[-1].kind) == (2050, 2060, "future")
    assert verdict.mode_of(listed) == "none"
    # without the late future pair: present only, capped
    dmap = hand_map(subject, [(t, t) for t in range(n)])
    listed, total = facts.gradient_violations(subject, dmap)
    kept = facts.GRADIENT_PAIRS_KEPT
    assert (len(listed), total, verdict.mode_of(listed)) == (kept, n, "inclusive")


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


def test_facts_of_an_empty_map_and_of_a_non_raster_order():
    subject = line_subject(6)
    field = facts.receptive_field(subject, hand_map(subject, []))
    assert (field.size, field.span, field.holes, field.max_span) == (0, 0, None, 0)
    listed, total = facts.gradient_violations(subject, hand_map(subject, [(2, 2)]))
    # the effect is the map's strength at the pair: 1 + input / 8 for input 2
    assert (listed[0].detail, listed[0].effect, total) == ("non-zero gradient", 1.25, 1)
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
